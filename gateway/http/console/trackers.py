"""Trackers in the console: link a customer ticket to a tracker, and, from the tracker's
conversation page, "Tell every linked customer".

The conversation page includes `_tracker_panel.html` with `tracker_panel(...)` in its context.
The forms post here and come back to the conversation (POST-redirect-GET); the result or a
refusal is a fixed sentence chosen by a code in the query string, so a crafted link cannot put
words on the page. The tell form carries a key made when the page was drawn: a double click
sends the same key twice and posts once (tickets/trackers.py).
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.http.auth import work
from gateway.http.console.session import FormDep, ViewerDep
from gateway.http.deps import RuntimeDep
from gateway.http.trackers_api import tell
from gateway.runtime import Runtime
from tickets import services, trackers
from tickets.errors import DomainError, InvalidValue, NotFound
from tickets.models import Conversation, Ticket, TicketStatus, TicketType

router = APIRouter(include_in_schema=False)

ConversationId = Annotated[int, Path(ge=1, le=2**31 - 1)]
LISTED = 100  # linked conversations listed on the page; the preview counts them all
TRACKER_CHOICES = 200
VERSIONS = {"de": "German", "fr": "French", "es": "Spanish"}

_PROBLEMS = {
    "empty": "Write the message first: it needs some text.",
    "long": "The message is too long (at most 100,000 characters).",
    "not-tracker": "Only a tracker can tell its linked customers.",
    "link": "This conversation cannot be linked to that tracker: only customer tickets can.",
    "failed": "That did not work. Reload the page and try again.",
}


def _trackers(session: Session, app_id: int, exclude: int) -> list[dict[str, Any]]:
    rows = session.execute(
        select(Conversation.id, Conversation.subject, Ticket.title)
        .join(Ticket, Ticket.conversation_id == Conversation.id)
        .where(
            Ticket.app_id == app_id,
            Ticket.type == TicketType.TRACKER,
            Ticket.status != TicketStatus.RESOLVED,
            Conversation.id != exclude,
        )
        .order_by(Ticket.id.desc())
        .limit(TRACKER_CHOICES)
    ).all()
    return [{"id": cid, "title": title or subject} for cid, subject, title in rows]


def tracker_panel(
    session: Session, conversation: Conversation, request: Request
) -> dict[str, Any] | None:
    """The context of `_tracker_panel.html` for a conversation: for a tracker, its linked
    customers, the preview and the tell form; for a customer ticket, the tracker it belongs to
    and the trackers it could be linked to; None for anything else."""
    ticket = conversation.ticket
    if ticket is None or ticket.type == TicketType.BACK_OFFICE:
        return None
    query = request.query_params
    panel: dict[str, Any] = {
        "conversation_id": conversation.id,
        "problem": _PROBLEMS.get(query.get("tracker_problem") or ""),
    }
    if ticket.type == TicketType.TRACKER:
        items = trackers.linked(session, ticket)
        panel.update(
            kind="tracker",
            linked=items[:LISTED],
            more=max(len(items) - LISTED, 0),
            preview=trackers.preview(items),
            key=secrets.token_urlsafe(16),
            versions=VERSIONS,
            told=_counts(query.get("told")),
        )
        return panel
    current = ticket.tracker
    panel.update(
        kind="customer",
        tracker=(
            {"id": current.conversation_id, "title": current.title or current.conversation.subject}
            if current is not None
            else None
        ),
        choices=_trackers(session, ticket.app_id, conversation.id),
        linked_now=query.get("linked"),
    )
    return panel


def _counts(value: str | None) -> dict[str, int] | None:
    """`told=3.1.0`: told, not told, and whether it was the same request again."""
    parts = (value or "").split(".")
    if len(parts) != 3 or not all(p.isdigit() and len(p) < 8 for p in parts):
        return None
    return {"told": int(parts[0]), "not_told": int(parts[1]), "repeated": int(parts[2])}


def _back(conversation_id: int, **query: str) -> RedirectResponse:
    tail = "&".join(f"{k}={v}" for k, v in query.items())
    return RedirectResponse(
        f"/conversations/{conversation_id}{'?' + tail if tail else ''}#tracker", status_code=303
    )


def _problem(exc: DomainError) -> str:
    text = str(exc)
    if "needs text" in text:
        return "empty"
    if "at most" in text:
        return "long"
    if "not a tracker" in text:
        return "not-tracker"
    return "failed"


@router.post("/conversations/{conversation_id}/tell-linked")
async def tell_linked(
    runtime: RuntimeDep, viewer: ViewerDep, form: FormDep, conversation_id: ConversationId
) -> RedirectResponse:
    text = str(form.get("text") or "")
    versions = {lang: str(form.get(f"version_{lang}") or "") for lang in VERSIONS}
    key = str(form.get("key") or "")[:100] or None

    def act() -> trackers.Told:
        with work(runtime, viewer.caller) as w:
            return tell(w, conversation_id, text, versions, key)

    try:
        told = await run_in_threadpool(act)
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except DomainError as exc:
        return _back(conversation_id, tracker_problem=_problem(exc))
    counts = f"{len(told.told)}.{len(told.not_told)}.{int(told.repeated)}"
    return _back(conversation_id, told=counts)


@router.post("/conversations/{conversation_id}/tracker")
async def link(
    runtime: RuntimeDep, viewer: ViewerDep, form: FormDep, conversation_id: ConversationId
) -> RedirectResponse:
    """Link this customer ticket to a tracker (`tracker` = its conversation id); empty unlinks."""
    chosen = str(form.get("tracker") or "").strip()

    def act(r: Runtime) -> None:
        with work(r, viewer.caller) as w:
            conversation = services.get_conversation(w.session, w.app, conversation_id)
            tracker = None
            if chosen:
                if not chosen.isdigit() or len(chosen) > 10:
                    raise InvalidValue("not a tracker")
                target = services.get_conversation(w.session, w.app, int(chosen))
                tracker = services.require_ticket(target)
            services.link_to_tracker(
                w.session,
                services.require_ticket(conversation),
                tracker,
                services.Actor.agent(w.agent),
                w.now,
            )

    try:
        await run_in_threadpool(act, runtime)
    except NotFound as exc:
        if not chosen:
            raise HTTPException(404, str(exc)) from None
        return _back(conversation_id, tracker_problem="link")
    except DomainError:
        return _back(conversation_id, tracker_problem="link")
    return _back(conversation_id, linked="1" if chosen else "0")
