"""`/conversations/{id}`: one conversation as the team sees it.

The transcript (chat and email messages with where each came from, and for the team's own
messages how their delivery stands, from the message and the outbox rows that carry it), the
internal notes between them, what stripping cut from an email and why it was threaded here, the
reply/note box, and beside it the convert form or the ticket panel. The forms post to the routes
of `conversation_actions.py`, which call the same services as the agent API.

A conversation of another app is answered like a missing one (404).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select
from sqlalchemy.orm import load_only

from channels.email.envelopes import states as recipient_states
from channels.email.explain import stored_lines
from gateway.http.auth import Work, work
from gateway.http.console.pages import render
from gateway.http.console.session import Viewer, ViewerDep
from gateway.http.console.trackers import tracker_panel
from gateway.http.deps import RuntimeDep
from gateway.inbound import app_timezone
from gateway.runtime import Runtime
from tickets import convert_hints, delivery, email_check, reads, services
from tickets.errors import NotFound
from tickets.models import (
    AuthorType,
    Conversation,
    InboundMail,
    Message,
    Note,
    Outbox,
    Priority,
    Ticket,
    TicketStatus,
    TicketType,
)

router = APIRouter(include_in_schema=False)

ConversationId = Annotated[int, Path(ge=1, le=2**31 - 1)]

# What the team's message did after it was written (Message.delivery_state), in words, and
# whether that is good news (ok), not yet settled (wait) or a problem (bad).
_DELIVERY = {
    None: ("Shown in the chat", "ok"),
    delivery.WAITING: ("Waiting: in the chat, emailed if unread", "wait"),
    delivery.READ: ("Read in the chat", "ok"),
    delivery.QUEUED: ("Waiting to be sent by email", "wait"),
    "sent": ("Delivered by email", "ok"),
    "failed": ("Not delivered", "bad"),
    "held": ("Held: delivery unknown, check before retrying", "bad"),
    "bounced": ("Bounced", "bad"),
}
# Where each recipient of an outbox row stands (channels/email/outbox.py).
_RECIPIENT = {
    "pending": ("waiting", "wait"),
    "sending": ("sending", "wait"),
    "accepted": ("delivered", "ok"),
    "refused": ("refused", "bad"),
    "unknown": ("in doubt", "bad"),
}
# Fixed confirmations a redirect may name (`?done=`): never text from the request.
DONE = {
    "reply": "Reply sent. The customer sees it in the chat, or by email once they have left.",
    "note": "Note added. Only the team can see it.",
    "converted": "Converted. The conversation stays in the Inbox and is listed under Tickets.",
}
STATUS_LABELS = {
    "open": "Open",
    "in_progress": "In progress",
    "waiting_on_customer": "Waiting on customer",
    "resolved": "Resolved",
}
TYPE_LABELS = {"customer": "Customer", "back_office": "Back office", "tracker": "Tracker"}
TIMER_LABELS = {
    "first_response": "First response",
    "next_response": "Next response",
    "resolution": "Resolution",
}


@dataclass(frozen=True)
class Delivery:
    label: str
    tone: str
    error: str | None = None
    recipients: list[tuple[str, str, str]] = field(default_factory=list)  # address, label, tone


@dataclass(frozen=True)
class Entry:
    """One line of the transcript: a message or a note, in the order they were written."""

    kind: str  # message, note
    at: dt.datetime
    item: Message | Note
    author: str
    origin: str  # "chat", "email from x@y", "team-only note"
    delivery: Delivery | None = None
    why: list[str] = field(default_factory=list)
    received: str | None = None


def get_conversation(w: Work, conversation_id: int) -> Conversation:
    """The viewer's app's conversation; any other is a 404 page, like a missing one."""
    try:
        return services.get_conversation(w.session, w.app, conversation_id)
    except NotFound:
        raise HTTPException(404, f"There is no conversation {conversation_id}.") from None


def _deliveries(w: Work, conversation: Conversation) -> dict[int, Delivery]:
    """How each of the team's messages stands, with the outbox rows that carry it."""
    rows = w.session.scalars(
        select(Outbox)
        .options(
            load_only(
                Outbox.recipients,
                Outbox.message_ids,
                Outbox.recipient_states,
                Outbox.state,
                Outbox.last_error,
            )
        )
        .where(Outbox.conversation_id == conversation.id, Outbox.kind == "customer")
        .order_by(Outbox.id)
    ).all()
    carrying: dict[int, Outbox] = {}
    for row in rows:
        for message_id in row.message_ids:
            carrying[int(message_id)] = row  # the latest row wins (a retry of the same words)
    result = {}
    for m in conversation.messages:
        if m.author_type == AuthorType.CUSTOMER:
            continue
        label, tone = _DELIVERY.get(m.delivery_state, (m.delivery_state or "", "wait"))
        carrier = carrying.get(m.id)
        recipients = []
        if carrier is not None:
            for address, state in zip(
                carrier.recipients, recipient_states(carrier, in_flight=True), strict=False
            ):
                word, word_tone = _RECIPIENT.get(state, (state, "wait"))
                recipients.append((str(address), word, word_tone))
        last_error = carrier.last_error if carrier is not None and tone == "bad" else None
        error = m.delivery_error or last_error
        result[m.id] = Delivery(label, tone, error, recipients)
    return result


def _received(w: Work, conversation: Conversation) -> dict[int, str]:
    """How each inbound email reached us (the inbound record), without loading its bytes."""
    ids = [m.inbound_mail_id for m in conversation.messages if m.inbound_mail_id is not None]
    if not ids:
        return {}
    rows = w.session.execute(
        select(
            InboundMail.id,
            InboundMail.source,
            InboundMail.peer,
            InboundMail.envelope_from,
            InboundMail.envelope_to,
            InboundMail.received_at,
        ).where(InboundMail.id.in_(ids))
    ).all()
    told = {}
    for row in rows:
        via = {"smtp": "SMTP", "imap": "IMAP", "import": "an import"}.get(row.source, row.source)
        peer = f" from {row.peer}" if row.peer and row.source == "smtp" else ""
        to = ", ".join(str(a) for a in row.envelope_to or [])
        envelope = f"; envelope from <{row.envelope_from or ''}> to {to}" if to else ""
        told[row.id] = f"Received by {via}{peer} on {_when(row.received_at)}{envelope}."
    return told


def _when(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _author(conversation: Conversation, m: Message, brand: str) -> str:
    if m.author_type == AuthorType.AGENT:
        return m.agent.name if m.agent else "An agent"
    if m.author_type == AuthorType.SYSTEM:
        return brand
    customer = conversation.customer
    if m.from_address and m.flags.get("participant"):
        return m.from_address  # someone the customer copied
    addresses = customer.addresses
    return customer.name or m.from_address or (addresses[0].address if addresses else "Customer")


def transcript(w: Work, conversation: Conversation) -> list[Entry]:
    deliveries = _deliveries(w, conversation)
    received = _received(w, conversation)
    entries = []
    for m in conversation.messages:
        origin = f"email from {m.from_address}" if m.via == "email" and m.from_address else m.via
        is_email_in = m.via == "email" and m.inbound_mail_id is not None
        entries.append(
            Entry(
                "message",
                m.created_at,
                m,
                _author(conversation, m, w.app.brand),
                str(origin),
                deliveries.get(m.id),
                stored_lines(m.flags or {}) if is_email_in else [],
                received.get(m.inbound_mail_id) if m.inbound_mail_id is not None else None,
            )
        )
    for n in conversation.notes:
        author = n.agent.name if n.agent else "System"
        entries.append(Entry("note", n.created_at, n, author, "team-only note"))
    entries.sort(key=lambda e: (e.at, e.kind == "note", e.item.id))
    return entries


def _trackers(w: Work, ticket: Ticket | None) -> list[Ticket]:
    if ticket is None or ticket.type != TicketType.CUSTOMER:
        return []
    return list(
        w.session.scalars(
            select(Ticket)
            .where(Ticket.app_id == w.app.id, Ticket.type == TicketType.TRACKER)
            .order_by(Ticket.number.desc())
            .limit(200)
        )
    )


def page(
    request: Request,
    runtime: Runtime,
    viewer: Viewer,
    w: Work,
    conversation: Conversation,
    *,
    problem: str | None = None,
    status: int = 200,
    done: str | None = None,
    draft: dict[str, str] | None = None,
) -> HTMLResponse:
    """The page, rendered inside the caller's unit of work (so relations load as it renders)."""
    ticket = conversation.ticket
    customer = conversation.customer
    cfg = runtime.config.delivery
    online = delivery.is_online(customer, w.now, dt.timedelta(seconds=cfg.widget_online_seconds))
    return render(
        request,
        "conversation.html",
        viewer,
        status=status,
        c=conversation,
        ticket=ticket,
        customer=customer,
        entries=transcript(w, conversation),
        agents=[a for a in services.list_agents(w.session, w.app) if a.active],
        trackers=_trackers(w, ticket),
        online=online,
        grace_minutes=max(1, round(cfg.email_grace_seconds / 60)),
        channel_warning=None if ticket else email_check.channel_warning(w.session, w.app.id),
        setup_path=email_check.SETUP_PATH,
        timezone=app_timezone(runtime, w.app.name),
        problem=problem,
        done=DONE.get(done or ""),
        draft=draft,
        note_mode=done == "note",  # the next one is likely a note too
        priorities=[p.value for p in Priority],
        statuses=STATUS_LABELS,
        types=TYPE_LABELS,
        timer_labels=TIMER_LABELS,
        resolved=ticket is not None and ticket.status == TicketStatus.RESOLVED,
        convert_hints=convert_hints.for_conversation(conversation),
        tracker_panel=tracker_panel(w.session, conversation, request),
    )


@router.get("/conversations/{conversation_id}", response_class=HTMLResponse)
def show(
    request: Request,
    runtime: RuntimeDep,
    viewer: ViewerDep,
    conversation_id: ConversationId,
    done: Annotated[str | None, Query(max_length=20)] = None,
) -> HTMLResponse:
    with work(runtime, viewer.caller) as w:
        conversation = get_conversation(w, conversation_id)
        # Seen by this agent now (the Inbox's unread marks); a live refresh counts as seen too.
        reads.mark_read(w.session, w.agent.id, conversation.id, w.now)
        return page(request, runtime, viewer, w, conversation, done=done)
