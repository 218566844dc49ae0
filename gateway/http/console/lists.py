"""The Inbox (`/inbox`) and Tickets (`/tickets`) tabs: two lists over the same conversations.

The Inbox lists every conversation of the viewer's app, the Tickets tab the converted ones, so
a converted conversation is under both. The filters are a GET form (a filtered list is a URL
to bookmark or share); the querying is the API's (`services.conversation_page`). A value the
form does not offer (an old bookmark, a hand-edited URL) is dropped with a note, not a 422.

Each row carries an unread mark for the viewer (tickets/reads.py) and the nav shows the unread
counts of both tabs. The list and the counts are live regions: console.js swaps them from a
fresh copy of the page when /console/events reports a change, so new mail appears by itself.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from gateway.http.auth import Work, work
from gateway.http.console.pages import render
from gateway.http.console.session import Viewer, ViewerDep
from gateway.http.deps import RuntimeDep
from tickets import listing, reads, services
from tickets.models import (
    Conversation,
    ConversationState,
    Customer,
    Priority,
    Tag,
    Ticket,
    TicketStatus,
    Via,
)

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 50
MAX_PAGE_NUMBER = 10_000
MAX_TEXT = 200

View = Literal["inbox", "tickets"]

# What each filter offers: (value, label). The first, empty value means "any".
STATES = [("", "Any state")] + [(s.value, s.value.capitalize()) for s in ConversationState]
STATUSES = [("", "Any status")] + [
    (s.value, s.value.replace("_", " ").capitalize()) for s in TicketStatus
]
PRIORITIES = [("", "Any priority")] + [(p.value, p.value.capitalize()) for p in Priority]
ASSIGNEES = [("", "Anyone"), ("me", "Me"), ("nobody", "Nobody")]
CHANNELS = [("", "Any channel"), (Via.CHAT.value, "Chat"), (Via.EMAIL.value, "Email")]

FILTER_NAMES = ("state", "status", "priority", "assignee", "tag", "channel", "q")


@dataclass
class Filters:
    """The filters of a list request, each checked against what the form offers."""

    values: dict[str, str] = field(default_factory=dict)
    page: int = 1
    dropped: list[str] = field(default_factory=list)

    def get(self, name: str) -> str:
        return self.values.get(name, "")

    def url(self, path: str, page: int | None = None) -> str:
        query = {k: v for k, v in self.values.items() if v}
        if page and page > 1:
            query["page"] = str(page)
        return path + ("?" + urlencode(query) if query else "")

    @property
    def any(self) -> bool:
        return any(self.values.values())


def _choice(name: str, value: str, options: list[tuple[str, str]], f: Filters) -> None:
    if value in {v for v, _ in options}:
        f.values[name] = value
    else:
        f.dropped.append(f"{value[:40]!r} is not a {name} this list offers, so it was left out")


def _parse(request: Request) -> Filters:
    params = request.query_params
    f = Filters()
    for name, options in (
        ("state", STATES),
        ("status", STATUSES),
        ("priority", PRIORITIES),
        ("assignee", ASSIGNEES),
        ("channel", CHANNELS),
    ):
        value = params.get(name, "").strip().lower()
        if value:
            _choice(name, value, options, f)
    for name in ("tag", "q"):
        value = " ".join(params.get(name, "").split())
        if name == "tag":
            value = value.lower()  # tags are kept in lower case
        if len(value) > MAX_TEXT:
            f.dropped.append(f"the {name} was cut to {MAX_TEXT} characters")
            value = value[:MAX_TEXT]
        if value:
            f.values[name] = value
    page = params.get("page", "1")
    f.page = int(page) if page.isdigit() and 1 <= int(page) <= MAX_PAGE_NUMBER else 1
    return f


def _list_filter(view: View, f: Filters, viewer: Viewer) -> services.ListFilter:
    q = f.get("q")
    # A bare address searches by customer; anything else searches subjects and messages.
    by_address = "@" in q and " " not in q
    assignee = f.get("assignee")
    return services.ListFilter(
        view=view,
        state=f.get("state") or None,
        via=f.get("channel") or None,
        status=f.get("status") or None,
        priority=f.get("priority") or None,
        assignee_id=viewer.caller.agent_id if assignee == "me" else None,
        unassigned=assignee == "nobody",
        tag=f.get("tag") or None,
        customer_email=q if by_address else None,
        text=q if q and not by_address else None,
        limit=PAGE_SIZE,
        offset=(f.page - 1) * PAGE_SIZE,
    )


def ago(value: dt.datetime, now: dt.datetime) -> str:
    """A time as a list shows it: how long ago, to the unit that matters."""
    seconds = max(0, int((now - value).total_seconds()))
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 86400:
        return f"{seconds // 3600} h ago"
    if seconds < 7 * 86400:
        return f"{seconds // 86400} d ago"
    return value.astimezone(dt.UTC).strftime("%d %b %Y")


def due_in(value: dt.datetime, now: dt.datetime) -> str:
    seconds = int((value - now).total_seconds())
    span = abs(seconds)
    text = (
        f"{span // 60} min"
        if span < 3600
        else f"{span // 3600} h"
        if span < 86400
        else f"{span // 86400} d"
    )
    return f"in {text}" if seconds >= 0 else f"{text} late"


def _row(c: Conversation, w: Work, unread: set[int], previews: dict[int, str]) -> dict[str, Any]:
    addresses = [a.address for a in c.customer.addresses]
    ticket = c.ticket
    sla = listing.next_due(ticket)
    preview = previews.get(c.id, "")
    row: dict[str, Any] = {
        "id": c.id,
        "customer": c.customer.name or (addresses[0] if addresses else f"Visitor {c.customer_id}"),
        "address": addresses[0] if addresses and c.customer.name else "",
        "subject": c.subject or "(no subject)",
        # A chat's subject is its first message: the preview would only repeat it.
        "preview": "" if preview == c.subject else preview,
        "channel": c.started_via.value,
        "state": c.state.value,
        "tags": [t.name for t in c.tags],
        "updated_at": c.updated_at,
        "updated_ago": ago(c.updated_at, w.now),
        "unread": c.id in unread,
        "ticket": None,
    }
    if ticket is not None:
        assignee = ticket.assignee
        row["ticket"] = {
            "number": ticket.number,
            "status": ticket.status.value,
            "status_label": ticket.status.value.replace("_", " ").capitalize(),
            "priority": ticket.priority.value,
            "assignee": ""
            if assignee is None
            else "Me"
            if assignee.id == w.agent.id
            else assignee.name,
            "sla": None
            if sla is None
            else {
                "kind": sla.kind.replace("_", " "),
                "state": sla.state,
                "due_at": sla.due_at,
                "due_in": due_in(sla.due_at, w.now) if sla.due_at else "paused",
            },
        }
    return row


def _load_rows(w: Work, ids: list[int]) -> None:
    """Load what the rows show for the whole page at once (a handful of queries, not a few
    per row); the objects are the same ones the page query returned."""
    if ids:
        w.session.scalars(
            select(Conversation)
            .where(Conversation.id.in_(ids))
            .options(
                selectinload(Conversation.customer).selectinload(Customer.addresses),
                selectinload(Conversation.tags),
                selectinload(Conversation.ticket).selectinload(Ticket.assignee),
                selectinload(Conversation.ticket).selectinload(Ticket.timers),
            )
        ).all()


def _page(runtime: Any, viewer: Viewer, view: View, f: Filters) -> dict[str, Any]:
    with work(runtime, viewer.caller) as w:
        conversations, more = services.conversation_page(
            w.session, w.app, _list_filter(view, f, viewer)
        )
        ids = [c.id for c in conversations]
        _load_rows(w, ids)
        unread = reads.unread_ids(w.session, w.agent.id, ids)
        previews = listing.previews(w.session, ids)
        rows = [_row(c, w, unread, previews) for c in conversations]
        counts = reads.unread_counts(w.session, w.app.id, w.agent.id)
        tags = list(
            w.session.scalars(select(Tag.name).where(Tag.app_id == w.app.id).order_by(Tag.name))
        )
    return {"rows": rows, "more": more, "counts": counts, "tags": tags}


def _list(request: Request, runtime: RuntimeDep, viewer: Viewer, view: View) -> HTMLResponse:
    f = _parse(request)
    tag = f.get("tag")
    data = _page(runtime, viewer, view, f)
    tags = data["tags"] if not tag or tag.lower() in data["tags"] else [*data["tags"], tag]
    path = "/" + view
    return render(
        request,
        "lists.html",
        viewer,
        view=view,
        filters=f,
        rows=data["rows"],
        counts=data["counts"],
        tag_options=tags,
        options={
            "state": STATES,
            "status": STATUSES,
            "priority": PRIORITIES,
            "assignee": ASSIGNEES,
            "channel": CHANNELS,
        },
        newer=f.url(path, f.page - 1) if f.page > 1 else None,
        older=f.url(path, f.page + 1) if data["more"] else None,
        first=(f.page - 1) * PAGE_SIZE + 1,
        clear=path,
    )


@router.get("/inbox", response_class=HTMLResponse)
def inbox(request: Request, runtime: RuntimeDep, viewer: ViewerDep) -> HTMLResponse:
    return _list(request, runtime, viewer, "inbox")


@router.get("/tickets", response_class=HTMLResponse)
def tickets(request: Request, runtime: RuntimeDep, viewer: ViewerDep) -> HTMLResponse:
    return _list(request, runtime, viewer, "tickets")
