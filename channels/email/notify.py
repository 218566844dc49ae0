"""Notification emails to agents: rendered in the team's voice, answerable by reply.

Templates are `templates/email/<locale>/agent/<kind>/{subject.txt, body.txt, body.html}`, with
shared pieces beside them (`_conversation.*` shows the conversation with every new message of
the window, the ticket layer and the last notes; `_also.*` lists the window's other events).
One email carries everything a notification row collected (tickets/notifications.py); it is
named after the weightiest event. Unlike customer mail these may say "ticket": they only ever go
to an agent's registered address. Each one that concerns a conversation carries
`Reply-To: support+<agent-token>@domain` (purpose `reply`) and a note address (purpose `note`),
so the agent can answer from their mail client (channels/email/agent_reply.py reads it back).
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import markupsafe
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from channels.email.agent_commands import REPLY_MARKER
from channels.email.render import default_root, nl2br
from channels.email.tokens import Keyring, agent_token, reply_address
from tickets.models import (
    Agent,
    AgentNotification,
    App,
    AuthorType,
    Conversation,
    Customer,
    Event,
    Message,
    Note,
    Ticket,
)
from tickets.notifications import notification_kind

RECENT_MESSAGES = 5
RECENT_NOTES = 3
EXCERPT_CHARS = 200
MESSAGE_CHARS = 4000
FULL_MESSAGES = 20  # new messages shown whole in one email; past that, each is an excerpt


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


class AgentTemplates:
    """The agent notification templates; one Jinja2 environment, HTML autoescaped."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or default_root()
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(self.root)),
            autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
        )
        self.env.filters["nl2br"] = nl2br

    def locale_for(self, wanted: str | None) -> str:
        if wanted and (self.root / wanted / "agent").is_dir():
            return wanted
        return "en"

    def _one(self, kind: str, locale: str, name: str, context: dict[str, Any]) -> str:
        return self.env.get_template(f"{locale}/agent/{kind}/{name}").render(context)

    def subject(self, kind: str, locale: str, context: dict[str, Any]) -> str:
        return " ".join(self._one(kind, locale, "subject.txt", context).split())

    def render(self, kind: str, locale: str, context: dict[str, Any]) -> Rendered:
        def one(name: str) -> str:
            return self._one(kind, locale, name, context)

        return Rendered(
            subject=self.subject(kind, locale, context),
            text=one("body.txt").strip() + "\n",
            html=one("body.html"),
        )


def _when(at: dt.datetime | None) -> str:
    return at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC") if at else ""


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _author(message: Message, customer_name: str) -> str:
    if message.author_type == AuthorType.AGENT:
        return message.agent.name if message.agent else "Agent"
    if message.author_type == AuthorType.SYSTEM:
        return "System"
    if message.flags.get("participant") and message.from_address:
        return f"{message.from_address} (Cc)"  # someone the customer copied wrote it
    return customer_name


def conversation_context(
    session: Session,
    conversation: Conversation,
    new_message_ids: Collection[int] = (),
    *,
    loaded: Mapping[int, Message] | None = None,
    brief: bool = False,
) -> dict[str, Any]:
    """The team's view of a conversation for a notification: plain values only.

    `messages` are every new message of the window (marked `new`; taken from `loaded` when the
    caller fetched them in bulk), after a few earlier ones for context; with no new ones, the
    latest few. `brief` (a digest entry) leaves out the earlier messages and the notes.
    """
    customer = conversation.customer
    address = customer.addresses[0].address if customer.addresses else None
    customer_name = customer.name or address or "The customer"
    if loaded is None:
        loaded = _messages(session, new_message_ids)
    new = sorted((loaded[i] for i in new_message_ids if i in loaded), key=lambda m: m.id)
    context: Sequence[Message] = []
    notes: Sequence[Note] = []
    if not brief:
        earlier = select(Message).where(Message.conversation_id == conversation.id)
        if new:
            earlier = earlier.where(Message.id < new[0].id)
        context = session.scalars(
            earlier.order_by(Message.id.desc()).limit(RECENT_MESSAGES - min(len(new), 3))
        ).all()
        notes = session.scalars(
            select(Note)
            .where(Note.conversation_id == conversation.id)
            .order_by(Note.id.desc())
            .limit(RECENT_NOTES)
        ).all()
    # A flood of new messages is listed whole, each one shorter.
    chars = MESSAGE_CHARS if len(new) <= FULL_MESSAGES else EXCERPT_CHARS
    ticket = conversation.ticket
    return {
        "conversation": {
            "id": conversation.id,
            "subject": conversation.subject or "(no subject)",
            "customer_name": customer_name,
            "customer": f"{customer_name} <{address}>" if address else customer_name,
            "state": conversation.state.value,
        },
        "ticket": None
        if ticket is None
        else {
            "number": ticket.number,
            "type": ticket.type.value,
            "status": ticket.status.value,
            "priority": ticket.priority.value,
            "category": ticket.category,
            "assignee": ticket.assignee.name if ticket.assignee else None,
            "title": ticket.title,
            "sla": [
                {"kind": t.kind.value, "state": t.state.value, "due": _when(t.due_at)}
                for t in ticket.timers
            ],
        },
        "unassigned": ticket is None or ticket.assignee_id is None,
        "messages": [
            {
                "author": _author(m, customer_name),
                "via": m.via.value,
                "when": _when(m.created_at),
                "text": _clip(m.text, chars if is_new else MESSAGE_CHARS),
                "new": is_new,
            }
            for m, is_new in [*((m, False) for m in reversed(context)), *((m, True) for m in new)]
        ],
        "new_count": len(new),
        "notes": [
            {
                "author": n.agent.name if n.agent else "System",
                "when": _when(n.created_at),
                "text": _clip(n.text, MESSAGE_CHARS),
            }
            for n in reversed(notes)
        ],
    }


@dataclass
class Draft:
    """One notification email, ready for the outbox."""

    agent: Agent
    to: str
    rendered: Rendered
    reply_to: str | None
    conversation_id: int | None
    rows: list[AgentNotification] = field(default_factory=list)


@dataclass(frozen=True)
class Sender:
    """Where notifications come from and how their reply addresses are signed."""

    keyring: Keyring
    channel_address: str  # e.g. support@example.com: the From, and the base of token addresses
    token_ttl: dt.timedelta = dt.timedelta(days=30)


def _event_context(session: Session, event: Event) -> dict[str, Any]:
    data = dict(event.data or {})
    due = data.get("due_at")
    data["due"] = _when(dt.datetime.fromisoformat(due)) if isinstance(due, str) else ""
    data["timer"] = str(data.get("timer", "")).replace("_", " ")
    data.setdefault("reason", "")
    data.setdefault("detail", "")
    data.setdefault("subject", "")
    data.setdefault("mail_from", "")
    data.setdefault("inbound_id", "")
    by = session.get(Agent, event.actor_id) if event.actor_type == "agent" else None
    data["by"] = by.name if by else "The gateway"
    return data


def _addresses(
    sender: Sender, app_id: int, conversation_id: int, agent: Agent, now: dt.datetime
) -> tuple[str, str]:
    def address(purpose: str) -> str:
        token = agent_token(app_id, conversation_id, agent.id, purpose, now, sender.token_ttl)  # type: ignore[arg-type]
        return reply_address(sender.channel_address, sender.keyring.sign(token))

    return address("reply"), address("note")


@dataclass(frozen=True)
class Window:
    """What one notification row collected: its headline event, the new messages, the other
    events (each a line of its own) and how many were counted past the stored bound."""

    headline: Event
    new_message_ids: list[int]
    others: list[Event]
    unlisted: int


def collected(
    session: Session, row: AgentNotification, loaded: Mapping[int, Event] | None = None
) -> Window:
    ids = list(row.events) or [row.event_id]
    if loaded is None:
        loaded = _events(session, [*ids, row.event_id])
    events = sorted((loaded[i] for i in ids if i in loaded), key=lambda e: e.id)
    headline = loaded[row.event_id]
    new_ids = []
    others = []
    for event in events:
        message_id = (event.data or {}).get("message_id")
        if notification_kind(event) == "new_message" and isinstance(message_id, int):
            new_ids.append(message_id)
        elif event.id != headline.id:
            others.append(event)
    return Window(headline, new_ids, others, max(row.event_count - len(ids), 0))


def _events(session: Session, ids: Collection[int]) -> dict[int, Event]:
    return {e.id: e for e in session.scalars(select(Event).where(Event.id.in_(set(ids))))}


def _messages(session: Session, ids: Collection[int]) -> dict[int, Message]:
    if not ids:
        return {}
    query = select(Message).where(Message.id.in_(set(ids))).options(selectinload(Message.agent))
    return {m.id: m for m in session.scalars(query)}


@dataclass
class Bulk:
    """What the emails of one claim read, fetched in one query each rather than per row."""

    events: dict[int, Event]
    messages: dict[int, Message]
    conversations: dict[int, Conversation]

    @classmethod
    def load(cls, session: Session, rows: Sequence[AgentNotification]) -> Bulk:
        events = _events(session, [i for r in rows for i in [*r.events, r.event_id]])
        message_ids = [
            m
            for e in events.values()
            if e.kind == "message.customer"
            and isinstance(m := (e.data or {}).get("message_id"), int)
        ]
        conversation_ids = {r.conversation_id for r in rows if r.conversation_id is not None}
        conversations = session.scalars(
            select(Conversation)
            .where(Conversation.id.in_(conversation_ids))
            .options(
                selectinload(Conversation.customer).selectinload(Customer.addresses),
                selectinload(Conversation.ticket).selectinload(Ticket.assignee),
                selectinload(Conversation.ticket).selectinload(Ticket.timers),
            )
        ).all()
        return cls(events, _messages(session, message_ids), {c.id: c for c in conversations})


def _context(
    session: Session,
    app: App,
    agent: Agent,
    row: AgentNotification,
    sender: Sender,
    now: dt.datetime,
    bulk: Bulk | None = None,
    *,
    brief: bool = False,
) -> dict[str, Any]:
    bulk = bulk or Bulk.load(session, [row])
    window = collected(session, row, bulk.events)
    conversation = bulk.conversations.get(row.conversation_id) if row.conversation_id else None
    context: dict[str, Any] = {
        "brand": app.brand,
        "recipient_name": agent.name,
        "kind": row.kind,
        "event": _event_context(session, window.headline),
        "also": [
            {"kind": notification_kind(e), "event": _event_context(session, e)}
            for e in window.others
        ],
        "unlisted": window.unlisted,
        "limit": None,
        "reply_marker": REPLY_MARKER,
        "reply_address": None,
        "note_address": None,
        "conversation": None,
        "ticket": None,
        "unassigned": False,
        "messages": [],
        "new_count": 0,
        "notes": [],
    }
    if conversation is not None:
        context.update(
            conversation_context(
                session,
                conversation,
                window.new_message_ids,
                loaded=bulk.messages,
                brief=brief,
            )
        )
        if row.kind != "reply_rejected":
            reply, note = _addresses(sender, app.id, conversation.id, agent, now)
            context["reply_address"], context["note_address"] = reply, note
    return context


# Where an agent's own values go in an email rendered once for every agent it reaches alike:
# letters and digits only, so neither escaping nor a template changes them.
_MARK = secrets.token_hex(6)
_NAME, _REPLY, _NOTE = (f"x{_MARK}{what}" for what in ("name", "reply", "note"))


@dataclass
class Shapes:
    """The emails rendered so far in one sweep, by what they show: agents told alike of one
    conversation (the whole team, when nobody is assigned) differ only in name and addresses."""

    done: dict[tuple[object, ...], tuple[Rendered, bool]] = field(default_factory=dict)


def _fill(rendered: Rendered, values: Mapping[str, str]) -> Rendered:
    subject, text, html = rendered.subject, rendered.text, rendered.html
    for mark, value in values.items():
        subject = subject.replace(mark, value)
        text = text.replace(mark, value)
        html = html.replace(mark, str(markupsafe.escape(value)))
    return Rendered(subject, text, html)


def compose_notifications(
    session: Session,
    agent: Agent,
    rows: Sequence[AgentNotification],
    sender: Sender,
    templates: AgentTemplates,
    now: dt.datetime,
    *,
    folded: Sequence[AgentNotification] = (),
    limit: tuple[int, dt.datetime] | None = None,
    bulk: Bulk | None = None,
    shapes: Shapes | None = None,
) -> list[Draft]:
    """The emails for an agent's due notifications: one per row, and one more for the digest
    rows together with `folded` (what the hourly limit had no room for).

    `limit` (emails an hour, and when the next may go) is given when these are the hour's last:
    the last email says so, and that what comes next is collected until then.

    The recipient is always the agent's registered address, whatever address a mail that caused
    the notification came from. A sweep passes what it loaded for all its agents (`bulk`), and
    `shapes`, so that an email several agents get alike is rendered once.
    """
    app = session.get(App, agent.app_id)
    assert app is not None
    locale = templates.locale_for(app.default_locale)
    drafts: list[Draft] = []
    together = [r for r in rows if r.digest] + list(folded)
    note = None if limit is None else {"per_hour": limit[0], "room_at": _when(limit[1])}
    single = [r for r in rows if not r.digest]
    bulk = bulk or Bulk.load(session, [*single, *together])
    shapes = shapes or Shapes()
    for row in single:
        last = note if row is single[-1] and not together else None
        key = (row.kind, row.conversation_id, tuple(row.events), row.event_id, row.event_count)
        shape = shapes.done.get((*key, repr(last)))
        if shape is None:
            context = _context(session, app, agent, row, sender, now, bulk)
            context["limit"] = last
            # Rendered with marks where the agent's own values go, filled in per agent below.
            context["recipient_name"] = _NAME
            addressed = context["reply_address"] is not None
            if addressed:
                context["reply_address"], context["note_address"] = _REPLY, _NOTE
            shape = (templates.render(row.kind, locale, context), addressed)
            shapes.done[(*key, repr(last))] = shape
        rendered, addressed = shape
        values = {_NAME: agent.name}
        reply = None
        if addressed and row.conversation_id is not None:
            reply, values[_NOTE] = _addresses(sender, app.id, row.conversation_id, agent, now)
            values[_REPLY] = reply
        drafts.append(
            Draft(agent, agent.email, _fill(rendered, values), reply, row.conversation_id, [row])
        )
    if together:
        entries = []
        for row in together:
            context = _context(session, app, agent, row, sender, now, bulk, brief=True)
            headline = templates.subject(row.kind, locale, context)
            entries.append(
                {
                    "headline": headline.removeprefix(f"[{app.brand}] "),
                    "kind": row.kind,
                    "event": context["event"],
                    "also": context["also"],
                    "unlisted": context["unlisted"],
                    "conversation": context["conversation"],
                    "ticket": context["ticket"],
                    "reply_address": context["reply_address"],
                    "messages": [
                        {**m, "text": _clip(m["text"], EXCERPT_CHARS)}
                        for m in context["messages"]
                        if m["new"]
                    ],
                }
            )
        rendered = templates.render(
            "digest",
            locale,
            {
                "brand": app.brand,
                "recipient_name": agent.name,
                "entries": entries,
                "limit": note,
                # Rows folded that would have had their own email, were there room.
                "over_limit": note is not None and bool(folded),
            },
        )
        drafts.append(
            Draft(agent, agent.email, rendered, reply_to=None, conversation_id=None, rows=together)
        )
    return drafts
