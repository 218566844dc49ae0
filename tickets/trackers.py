"""Trackers: one problem, many customers. "Tell every linked customer" from the tracker.

A tracker ticket collects the customer tickets of one problem (`services.link_to_tracker`).
When there is news, an agent writes it once on the tracker; it becomes a public message of the
agent in each linked customer's own conversation (in their language when the agent wrote a
version for it), and goes on from there as every reply does: the widget shows it, and a
customer who is not there gets it by email after the grace period (tickets/delivery.py).

Who was told is recorded twice: a `tracker.told` event in each conversation that got the
message, and on the tracker a note for the team plus a `tracker.broadcast` event with the lists.
A customer who cannot be reached (their only addresses bounced and they have no chat to come
back to, or no email channel is connected) gets nothing posted and is reported as not told, so
the team can follow up by hand.

A tracker can have ten thousand linked customers, so everything here is a fixed number of bulk
statements, never a query per customer. Sending is an action: asked twice, it posts twice;
but the same request sent again (a double click: the same `key`) posts once.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import Table, func, insert, select, update
from sqlalchemy.orm import Session, selectinload

from tickets import delivery, services, sla
from tickets.errors import InvalidValue
from tickets.locale import choose_locale
from tickets.models import (
    Agent,
    AuthorType,
    Channel,
    ChannelAddress,
    Conversation,
    Customer,
    CustomerAddress,
    Event,
    Message,
    SlaTimer,
    Ticket,
    TicketType,
    Via,
)

Route = Literal["email", "widget"]
LANGUAGES = ("en", "de", "fr", "es")
MAX_TEXT = 100_000
NOTE_NAMES = 50  # customers named in the tracker's note; the event lists every one
REPLAY_WINDOW = dt.timedelta(days=1)  # how long a request key is remembered
_CHUNK = 5000  # ids per IN (...): well under SQLite's and PostgreSQL's parameter limits
_RESPONSE_KINDS = tuple(sla.RESPONSE_KINDS)


@dataclass(frozen=True)
class Linked:
    """A customer conversation linked to the tracker, and how news would reach it."""

    conversation_id: int
    customer: str  # name and address, as the team knows them
    subject: str
    state: str
    locale: str | None
    route: Route | None  # None: cannot be reached
    why_not: str | None = None


@dataclass(frozen=True)
class Preview:
    email: int
    widget: int
    unreachable: int

    @property
    def total(self) -> int:
        return self.email + self.widget + self.unreachable


@dataclass
class Told:
    """What telling did: who got the message (and by which route), who did not and why."""

    told: list[Linked] = field(default_factory=list)
    not_told: list[Linked] = field(default_factory=list)
    repeated: bool = False  # the same request again: nothing new was posted

    def to_json(self) -> dict[str, Any]:
        return {
            "told": [
                {"conversation": x.conversation_id, "customer": x.customer, "route": x.route}
                for x in self.told
            ],
            "not_told": [
                {"conversation": x.conversation_id, "customer": x.customer, "reason": x.why_not}
                for x in self.not_told
            ],
            "repeated": self.repeated,
        }


def require_tracker(ticket: Ticket | None, conversation_id: int) -> Ticket:
    if ticket is None or ticket.type != TicketType.TRACKER:
        raise InvalidValue(f"conversation {conversation_id} is not a tracker")
    return ticket


def _email_ready(session: Session, app_id: int) -> bool:
    """The app has a channel that can send (tickets/delivery's `email_channel`, for the app)."""
    return (
        session.scalar(
            select(Channel.id)
            .join(ChannelAddress, ChannelAddress.channel_id == Channel.id)
            .where(Channel.app_id == app_id, Channel.enabled.is_(True))
            .limit(1)
        )
        is not None
    )


def linked(session: Session, tracker: Ticket) -> list[Linked]:
    """Every customer conversation linked to the tracker, in the order they were linked: three
    statements however many there are."""
    rows = session.execute(
        select(
            Conversation.id,
            Conversation.customer_id,
            Conversation.subject,
            Conversation.state,
            Customer.name,
            Customer.locale,
            Customer.visitor_token_hash.is_not(None),
        )
        .join(Ticket, Ticket.conversation_id == Conversation.id)
        .join(Customer, Customer.id == Conversation.customer_id)
        .where(Ticket.tracker_id == tracker.id)
        .order_by(Ticket.id)
    ).all()
    addresses: dict[int, list[tuple[str, bool]]] = defaultdict(list)
    for customer_id, address, bounced_at in session.execute(
        select(CustomerAddress.customer_id, CustomerAddress.address, CustomerAddress.bounced_at)
        .where(
            CustomerAddress.customer_id.in_(
                select(Conversation.customer_id)
                .join(Ticket, Ticket.conversation_id == Conversation.id)
                .where(Ticket.tracker_id == tracker.id)
            )
        )
        .order_by(CustomerAddress.id)
    ):
        addresses[customer_id].append((address, bounced_at is None))
    email_ready = _email_ready(session, tracker.app_id)
    out = []
    for conversation_id, customer_id, subject, state, name, locale, has_widget in rows:
        known = addresses.get(customer_id, [])
        good = [a for a, ok in known if ok]
        shown = good[0] if good else (known[0][0] if known else None)
        label = " ".join(x for x in (name, f"<{shown}>" if shown else None) if x)
        route: Route | None = None
        why_not = None
        if good and email_ready:
            route = "email"  # unless they read it in the widget first, as every reply
        elif has_widget:
            route = "widget"
        elif good:
            why_not = "no email channel is connected"
        elif known:
            why_not = "their email address bounced"
        else:
            why_not = "no email address and no chat to come back to"
        out.append(
            Linked(
                conversation_id,
                label or f"customer {customer_id}",
                subject,
                state.value,
                locale,
                route,
                why_not,
            )
        )
    return out


def preview(items: Iterable[Linked]) -> Preview:
    routes = [x.route for x in items]
    return Preview(routes.count("email"), routes.count("widget"), routes.count(None))


def _languages(
    session: Session, items: Sequence[Linked], app_default: str, versions: Iterable[str]
) -> dict[int, str]:
    """Each conversation's language: the customer's own if known, else guessed from what they
    wrote (one statement for all of them), else the app's default."""
    unknown = [x.conversation_id for x in items if not x.locale]
    texts: dict[int, list[str]] = defaultdict(list)
    for chunk in _chunks(unknown):
        for conversation_id, text in session.execute(
            select(Message.conversation_id, func.substr(Message.text, 1, 500)).where(
                Message.conversation_id.in_(chunk), Message.author_type == AuthorType.CUSTOMER
            )
        ):
            texts[conversation_id].append(text)
    supported = sorted(set(LANGUAGES) | set(versions))
    return {
        x.conversation_id: choose_locale(
            x.locale, texts.get(x.conversation_id, []), app_default, supported
        )
        for x in items
    }


def _chunks(ids: Sequence[int]) -> Iterable[Sequence[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


def _clean(text: str) -> str:
    if not text.strip():
        raise InvalidValue("the message needs text")
    if len(text) > MAX_TEXT:
        raise InvalidValue(f"the message is at most {MAX_TEXT} characters")
    return text.strip()


def _replayed(session: Session, tracker: Ticket, key: str, now: dt.datetime) -> Event | None:
    events = session.scalars(
        select(Event).where(
            Event.ticket_id == tracker.id,
            Event.kind == "tracker.broadcast",
            Event.created_at >= now - REPLAY_WINDOW,
        )
    )
    return next((e for e in events if e.data.get("key") == key), None)


def tell_linked(
    session: Session,
    tracker: Ticket,
    agent: Agent,
    text: str,
    now: dt.datetime,
    *,
    versions: Mapping[str, str] | None = None,
    key: str | None = None,
    app_default_locale: str = "en",
) -> Told:
    """Post `text` (or the customer's language's version of it) as `agent`'s message in every
    linked customer's conversation that can be reached, and record who was told.

    `key` names the request: the same key again within a day returns the first result and
    posts nothing. The caller owns the transaction and commits once.
    """
    tracker = require_tracker(tracker, tracker.conversation_id)
    if agent.app_id != tracker.app_id:
        raise InvalidValue(f"conversation {tracker.conversation_id} is not a tracker")
    text = _clean(text)
    versions = {lang: _clean(v) for lang, v in (versions or {}).items() if v and v.strip()}
    # One request at a time per tracker (SQLite serializes writers anyway): a double click's
    # second request waits here, then finds the first one's key.
    session.execute(select(Ticket.id).where(Ticket.id == tracker.id).with_for_update())
    items = linked(session, tracker)
    if key:
        earlier = _replayed(session, tracker, key, now)
        if earlier is not None:
            return _from_event(earlier, items)
    reachable = [x for x in items if x.route is not None]
    languages = _languages(session, reachable, app_default_locale, versions) if versions else {}
    message_ids = _insert_messages(
        session,
        [
            {
                "conversation_id": x.conversation_id,
                "author_type": AuthorType.AGENT,
                "agent_id": agent.id,
                "via": Via.CHAT,
                "text": versions.get(languages.get(x.conversation_id, ""), text),
                "is_auto_reply": False,
                "flags": {"tracker": tracker.conversation_id},
                "delivery_state": delivery.WAITING,
                "created_at": now,
            }
            for x in reachable
        ],
    )
    ids = [x.conversation_id for x in reachable]
    for chunk in _chunks(ids):
        # What `delivery.await_customer` does for one message, for all of them.
        session.execute(
            update(Conversation)
            .where(Conversation.id.in_(chunk))
            .values(
                updated_at=now,
                email_pending_since=func.coalesce(Conversation.email_pending_since, now),
            )
            .execution_options(synchronize_session=False)
        )
    _responses_met(session, tracker, ids, now)
    if reachable:
        session.execute(
            insert(Event),
            [
                {
                    "app_id": tracker.app_id,
                    "conversation_id": x.conversation_id,
                    "ticket_id": None,
                    "actor_type": "agent",
                    "actor_id": agent.id,
                    "kind": "tracker.told",
                    "data": {
                        "tracker": tracker.conversation_id,
                        "message_id": message_ids[x.conversation_id],
                        "route": x.route,
                        "language": languages.get(x.conversation_id),
                    },
                    "created_at": now,
                }
                for x in reachable
            ],
        )
    told = Told(told=reachable, not_told=[x for x in items if x.route is None])
    services.add_note(session, tracker.conversation, agent, summary_note(told), now)
    services.record_ticket_event(
        session,
        tracker,
        "tracker.broadcast",
        services.Actor.agent(agent),
        now,
        key=key,
        told={
            route: [x.conversation_id for x in told.told if x.route == route]
            for route in ("email", "widget")
        },
        not_told=[{"conversation": x.conversation_id, "reason": x.why_not} for x in told.not_told],
        versions=sorted(versions),
    )
    return told


def _insert_messages(session: Session, rows: list[dict[str, Any]]) -> dict[int, int]:
    """The new message's id per conversation (one each). Batched INSERT .. RETURNING: without
    an order to keep, SQLite and PostgreSQL take many rows per statement."""
    if not rows:
        return {}
    table = Message.__table__
    assert isinstance(table, Table)
    statement = table.insert().returning(table.c.conversation_id, table.c.id)
    return {int(c): int(m) for c, m in session.execute(statement, rows)}


def _responses_met(
    session: Session, tracker: Ticket, conversation_ids: Sequence[int], now: dt.datetime
) -> None:
    """The message is the team's answer in each conversation, as any reply: response timers
    that run there are met. Only tickets with such a timer are loaded (two statements)."""
    if not conversation_ids:
        return
    wanted = set(conversation_ids)
    tickets = session.scalars(
        select(Ticket)
        .where(
            Ticket.tracker_id == tracker.id,
            Ticket.id.in_(
                select(SlaTimer.ticket_id).where(
                    SlaTimer.kind.in_(_RESPONSE_KINDS), SlaTimer.ended_at.is_(None)
                )
            ),
        )
        .options(selectinload(Ticket.timers))
    ).all()
    for ticket in tickets:
        if ticket.conversation_id in wanted:
            sla.on_agent_reply(session, ticket, now)


def _from_event(event: Event, items: list[Linked]) -> Told:
    by_id = {x.conversation_id: x for x in items}
    told: list[Linked] = []
    for route in ("email", "widget"):
        for conversation_id in event.data.get("told", {}).get(route, []):
            x = by_id.get(conversation_id)
            if x is not None:
                told.append(_with_route(x, route, None))
    not_told = [
        _with_route(by_id[n["conversation"]], None, n["reason"])
        for n in event.data.get("not_told", [])
        if n["conversation"] in by_id
    ]
    return Told(told, not_told, repeated=True)


def _with_route(x: Linked, route: Any, why_not: str | None) -> Linked:
    return Linked(x.conversation_id, x.customer, x.subject, x.state, x.locale, route, why_not)


def summary_note(told: Told) -> str:
    """The tracker's note: who was told, by which route, and who was not and why."""

    def names(items: list[Linked], what: Any) -> str:
        shown = [f"{x.customer} ({what(x)})" for x in items[:NOTE_NAMES]]
        more = len(items) - len(shown)
        return "; ".join(shown) + (f"; and {more} more" if more > 0 else "")

    count = len(told.told)
    lines = [f"Told {count} linked customer{'s' if count != 1 else ''}."]
    if told.told:
        lines.append("Told: " + names(told.told, lambda x: f"#{x.conversation_id}, {x.route}"))
    if told.not_told:
        lines.append(
            "Not told: " + names(told.not_told, lambda x: f"#{x.conversation_id}, {x.why_not}")
        )
    return "\n".join(lines)
