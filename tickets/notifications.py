"""Which agent is owed which notification for which event, and when (at once, or in a digest).

The events table is the source: every event not yet looked at (`notified_at` is NULL) is
collected for zero or more agents, in the same transaction that marks it looked at; so an event
is notified once even if the sweep runs twice or dies midway. Who is told: the ticket's assignee,
or the whole team when nobody is assigned; never the agent who caused the event. Each agent
chooses which kinds they want and whether they come at once or in one daily digest; a notice
that their own mail was rejected always comes, and never waits for the digest.

Notifications are coalesced, so that a flood of customer messages is not a flood of email: an
agent has at most one pending `AgentNotification` per conversation (and stream), which collects
every event until its email goes out. The first one of a quiet conversation is due at once;
after an email, the next is due one window (`coalesce`) later and carries everything of that
window. Being assigned and an SLA breach do not wait for the window: the team or the clock
causes them, never an outsider, and they ask the agent to act now. Everything else (new
messages, a snooze ending, an SLA warning, a failed delivery) can come from outside in any
number, and waits. Each agent gets at most `per_hour` notification emails an hour; what is over
is folded into one email that lists it all, or waits for the hour to have room again.

No I/O here: rendering and sending are the email channel's job (channels/email/notify.py).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import (
    Table,
    and_,
    bindparam,
    distinct,
    false,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session, selectinload
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.sql.elements import ColumnElement

from tickets.errors import InvalidValue
from tickets.models import Agent, AgentNotification, Conversation, Event, Ticket

KINDS = (
    "new_message",
    "assigned",
    "snooze_woke",
    "sla_warning",
    "sla_breach",
    "delivery_failed",
    "reply_rejected",
)
# A rejected mail of theirs is a security notice: it cannot be turned off or postponed.
ALWAYS = frozenset({"reply_rejected"})
DEFAULT_DIGEST_HOUR = 8
CLAIM_BATCH = 50  # notifications rendered per transaction
DEFAULT_COALESCE = dt.timedelta(seconds=60)
DEFAULT_PER_HOUR = 30
HOUR = dt.timedelta(hours=1)
MAX_FOLDED = 500  # notification rows one email folds together at most
MAX_LISTED_EVENTS = 500  # event ids a pending row keeps; past that it only counts them
STREAM_CONVERSATION = "conversation"
STREAM_REJECTED = "rejected"  # no reply address: never shares an email with the conversation's
# An email that collects several events is named after the weightiest.
WEIGHT = {
    "new_message": 0,
    "snooze_woke": 1,
    "delivery_failed": 2,
    "sla_warning": 3,
    "assigned": 4,
    "sla_breach": 5,
    "reply_rejected": 6,
}
URGENT = frozenset({"assigned", "sla_breach"})  # due at once, whatever the window
ROWS = cast(Table, AgentNotification.__table__)  # for executemany UPDATEs in plain Core

_EVENT_KINDS = {
    "message.customer": "new_message",
    "ticket.assigned": "assigned",
    "ticket.converted": "assigned",  # converting with an assignee assigns
    "conversation.woke": "snooze_woke",
    "sla.warning": "sla_warning",
    "sla.breached": "sla_breach",
    "outbox.failed": "delivery_failed",
    "outbox.held": "delivery_failed",
    "delivery.blocked": "delivery_failed",
    "agent_mail.rejected": "reply_rejected",
}


@dataclass(frozen=True)
class Preferences:
    events: frozenset[str]
    digest: bool = False
    digest_hour: int = DEFAULT_DIGEST_HOUR  # UTC hour the daily digest goes out

    def to_json(self) -> dict[str, object]:
        return {
            "events": sorted(self.events),
            "digest": self.digest,
            "digest_hour": self.digest_hour,
        }


def preferences(agent: Agent) -> Preferences:
    prefs = agent.notify_prefs or {}
    events = prefs.get("events")
    return Preferences(
        events=frozenset(KINDS if events is None else events) | ALWAYS,
        digest=bool(prefs.get("digest", False)),
        digest_hour=int(prefs.get("digest_hour", DEFAULT_DIGEST_HOUR)),
    )


def set_preferences(
    agent: Agent,
    *,
    events: Iterable[str] | None = None,
    digest: bool | None = None,
    digest_hour: int | None = None,
) -> Preferences:
    current = preferences(agent)
    chosen = current.events if events is None else frozenset(events)
    unknown = sorted(chosen - set(KINDS))
    if unknown:
        raise InvalidValue(
            f"unknown notification {', '.join(unknown)} (one of: {', '.join(KINDS)})"
        )
    hour = current.digest_hour if digest_hour is None else digest_hour
    if not 0 <= hour <= 23:
        raise InvalidValue("the digest hour is 0 to 23 (UTC)")
    updated = Preferences(
        events=chosen | ALWAYS,
        digest=current.digest if digest is None else digest,
        digest_hour=hour,
    )
    agent.notify_prefs = updated.to_json()
    return updated


def notification_kind(event: Event) -> str | None:
    kind = _EVENT_KINDS.get(event.kind)
    data = event.data or {}
    if kind == "new_message" and data.get("auto_reply"):
        return None  # an autoresponder's mail is kept, but worth nobody's attention
    if kind == "assigned" and not data.get("assignee"):
        return None
    if kind == "snooze_woke" and data.get("reason") == "customer message":
        return None  # the new-message notification says it already
    if kind in ("new_message", "snooze_woke", "delivery_failed") and event.conversation_id is None:
        return None  # e.g. a failed notification email: never notify about notifications
    return kind


def _team(session: Session, app_id: int) -> list[Agent]:
    return list(
        session.scalars(
            select(Agent).where(Agent.app_id == app_id, Agent.active.is_(True)).order_by(Agent.id)
        )
    )


def recipients(
    session: Session,
    event: Event,
    kind: str,
    team: Callable[[Session, int], list[Agent]] = _team,
) -> list[Agent]:
    """The agents to tell: the assignee, else the team; never the one who did it."""
    data = event.data or {}
    if kind == "reply_rejected":
        agent = session.get(Agent, data["agent_id"]) if data.get("agent_id") else None
        return [agent] if agent is not None and agent.active else []
    if kind == "assigned":
        agents = [a for a in team(session, event.app_id) if a.email == str(data.get("assignee"))]
    else:
        conversation = (
            session.get(Conversation, event.conversation_id) if event.conversation_id else None
        )
        ticket = conversation.ticket if conversation is not None else None
        assignee = ticket.assignee if ticket is not None else None
        if assignee is not None and assignee.active:
            agents = [assignee]
        else:
            agents = team(session, event.app_id)
    if event.actor_type == "agent":
        agents = [a for a in agents if a.id != event.actor_id]
    return agents


def next_digest_time(now: dt.datetime, hour: int) -> dt.datetime:
    today = now.astimezone(dt.UTC).replace(hour=hour, minute=0, second=0, microsecond=0)
    return today if today > now else today + dt.timedelta(days=1)


def fan_out(
    session: Session,
    now: dt.datetime,
    limit: int = 500,
    coalesce: dt.timedelta = DEFAULT_COALESCE,
) -> int:
    """Collect the events not yet looked at into the agents' pending notifications; how many
    (event, agent) pairs were collected."""
    events = session.scalars(
        select(Event)
        .where(Event.notified_at.is_(None))
        .order_by(Event.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if not events:
        return 0
    # One statement marks them all (setting the attribute on each would flush one UPDATE per
    # event); the loaded objects are told without becoming dirty.
    session.execute(
        update(Event)
        .where(Event.id.in_([e.id for e in events]))
        .values(notified_at=now)
        .execution_options(synchronize_session=False)
    )
    for event in events:
        set_committed_value(event, "notified_at", now)
    # A busy inbox hands this hundreds of events a sweep: what they share is asked for once
    # (each app's team, the conversations with their tickets).
    kinds = {event.id: notification_kind(event) for event in events}
    conversation_ids = {
        e.conversation_id for e in events if kinds[e.id] is not None and e.conversation_id
    }
    # Held in this list: the identity map is weak, and recipients() finds them there.
    _loaded = (
        session.scalars(
            select(Conversation)
            .where(Conversation.id.in_(conversation_ids))
            .options(selectinload(Conversation.ticket).joinedload(Ticket.assignee))
        ).all()
        if conversation_ids
        else []
    )
    teams: dict[int, list[Agent]] = {}

    def team(session: Session, app_id: int) -> list[Agent]:
        if app_id not in teams:
            teams[app_id] = _team(session, app_id)
        return teams[app_id]

    prefs_of: dict[int, Preferences] = {}
    collected: dict[_Key, list[tuple[Event, str]]] = {}
    for event in events:
        kind = kinds[event.id]
        if kind is None:
            continue
        for agent in recipients(session, event, kind, team):
            prefs = prefs_of.get(agent.id) or prefs_of.setdefault(agent.id, preferences(agent))
            if kind not in prefs.events:
                continue
            stream = STREAM_REJECTED if kind == "reply_rejected" else STREAM_CONVERSATION
            key = (agent.id, event.conversation_id, stream, prefs.digest and kind not in ALWAYS)
            collected.setdefault(key, []).append((event, kind))
    if collected:
        digest_hours = {agent_id: p.digest_hour for agent_id, p in prefs_of.items()}
        _collect(session, collected, digest_hours, now, coalesce)
    return sum(len(items) for items in collected.values())


_Key = tuple[int, int | None, str, bool]  # agent, conversation, stream, digest


def _collect(
    session: Session,
    collected: dict[_Key, list[tuple[Event, str]]],
    digest_hours: dict[int, int],
    now: dt.datetime,
    coalesce: dt.timedelta,
) -> None:
    """Add each key's events to its pending row, or open one: due at once when the agent's last
    email about it is older than the window (or there was none), else when the window ends.

    In bulk: one query for the pending rows, one for the last emails, one INSERT of the new
    rows and one executemany UPDATE of the others, whatever the number of keys.
    """
    n = AgentNotification
    conversation_ids = {key[1] for key in collected if key[1] is not None}
    about: ColumnElement[bool] = (
        n.conversation_id.in_(conversation_ids) if conversation_ids else false()
    )
    if any(key[1] is None for key in collected):
        about = or_(about, n.conversation_id.is_(None))
    theirs = and_(n.agent_id.in_({key[0] for key in collected}), about)
    # Locked: a claim of one of these waits for this transaction, then finds what was added
    # here (and, checking event_count, leaves a row it rendered without it for the next sweep).
    pending = {
        (r.agent_id, r.conversation_id, r.stream, r.digest): r
        for r in session.execute(
            select(
                n.id,
                n.agent_id,
                n.conversation_id,
                n.stream,
                n.digest,
                n.kind,
                n.event_id,
                n.events,
                n.event_count,
                n.due_at,
            )
            .where(theirs, n.sent_at.is_(None))
            .order_by(n.id)
            .with_for_update()
        )
    }
    last_sent = {
        (agent_id, conversation_id, stream): at
        for agent_id, conversation_id, stream, at in session.execute(
            select(n.agent_id, n.conversation_id, n.stream, func.max(n.sent_at))
            .where(theirs, n.sent_at.is_not(None), n.digest.is_(False))
            .group_by(n.agent_id, n.conversation_id, n.stream)
        )
    }
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for key, items in collected.items():
        agent_id, conversation_id, stream, digest = key
        row = pending.get(key)
        if row is None:
            if digest:
                due = next_digest_time(now, digest_hours[agent_id])
            else:
                last = last_sent.get((agent_id, conversation_id, stream))
                due = now if last is None else max(now, last + coalesce)
            first, first_kind = items[0]
            values: dict[str, Any] = {
                "app_id": first.app_id,
                "agent_id": agent_id,
                "event_id": first.id,
                "conversation_id": conversation_id,
                "kind": first_kind,
                "stream": stream,
                "events": [],
                "event_count": 0,
                "digest": digest,
                "due_at": due,
                "created_at": now,
            }
            inserts.append(values)
        else:
            values = {
                "id": row.id,
                "kind": row.kind,
                "event_id": row.event_id,
                "events": list(row.events),
                "event_count": row.event_count,
                "due_at": row.due_at,
            }
            updates.append(values)
        ids = values["events"]
        for event, kind in items:
            if WEIGHT[kind] > WEIGHT[values["kind"]]:
                values["kind"], values["event_id"] = kind, event.id
            if kind in URGENT and not digest and values["due_at"] > now:
                values["due_at"] = now
            if len(ids) < MAX_LISTED_EVENTS:
                ids.append(event.id)
        values["event_count"] += len(items)
    if inserts:
        session.execute(insert(n), inserts)
    if updates:
        changed = {u["id"] for u in updates}
        # Plain Core executemany: the ORM's bulk UPDATE by primary key costs more to prepare
        # than the statement takes to run.
        session.execute(
            update(ROWS)
            .where(ROWS.c.id == bindparam("row_id"))
            .values(
                {c: bindparam(c) for c in ("kind", "event_id", "events", "event_count", "due_at")}
            ),
            # (Every key given is SET: the id goes in under another name.)
            [{"row_id": u.pop("id"), **u} for u in updates],
        )
        # Rows of these a caller already holds would show what they had before.
        for obj in list(session.identity_map.values()):
            if isinstance(obj, AgentNotification) and obj.id in changed:
                session.expire(obj)


def due_agent_ids(session: Session, now: dt.datetime, limit: int = 1000) -> list[int]:
    return list(
        session.scalars(
            select(AgentNotification.agent_id)
            .where(AgentNotification.sent_at.is_(None), AgentNotification.due_at <= now)
            .group_by(AgentNotification.agent_id)
            .order_by(AgentNotification.agent_id)
            .limit(limit)
        )
    )


def claim_due(
    session: Session, agent_id: int, now: dt.datetime, limit: int = CLAIM_BATCH
) -> Sequence[AgentNotification]:
    """Mark up to `limit` of the agent's due, unsent notifications sent, and return them; a
    backlog is worked off in several short transactions, not one long one.

    Rows the fan-out is adding to right now are skipped (they are still due next time), so a
    claim never waits on it; two workers given the same agent cannot both get a row (the
    second's UPDATE finds it sent). The caller composes and queues the emails in the same
    transaction.
    """
    n = AgentNotification
    due = session.scalars(
        select(n.id)
        .where(n.agent_id == agent_id, n.sent_at.is_(None), n.due_at <= now)
        .order_by(n.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if not due:
        return []
    ids = session.scalars(
        update(n)
        .where(n.id.in_(due), n.sent_at.is_(None))
        .values(sent_at=now)
        .returning(n.id)
        .execution_options(synchronize_session=False)
    ).all()
    if not ids:
        return []
    return session.scalars(
        select(n).where(n.id.in_(ids)).order_by(n.id).execution_options(populate_existing=True)
    ).all()


@dataclass(frozen=True)
class Claimed:
    """An agent's notifications to send now: `single` each in its own email, `folded` together
    in one (the digest rows, and whatever the hourly limit has no room for)."""

    single: list[AgentNotification]
    folded: list[AgentNotification]
    more: bool  # a full batch was claimed: more may be due
    # Set when these take the hour's last email: when the next one may go.
    room_at: dt.datetime | None = None


def mails_since(session: Session, agent_id: int, since: dt.datetime) -> int:
    """Notification emails queued for the agent after `since` (a folded one counts once)."""
    n = AgentNotification
    return int(
        session.scalar(
            select(func.count(distinct(n.outbox_id))).where(
                n.agent_id == agent_id, n.sent_at > since, n.outbox_id.is_not(None)
            )
        )
        or 0
    )


def take_due(
    session: Session,
    agent_id: int,
    now: dt.datetime,
    per_hour: int = DEFAULT_PER_HOUR,
    limit: int = CLAIM_BATCH,
) -> Claimed:
    """Claim the agent's due notifications within the hourly limit of emails.

    With room for all, each row is one email (digest rows share one). With less room, the
    weightiest rows keep their own email and the rest are folded into the last one the hour
    allows. With no room, nothing is claimed: the due rows wait until the oldest email of the
    hour ages out, and meanwhile go on collecting events, so what is over is never dropped.
    """
    # One claimer per agent at a time: two must not both see room for the hour's last email.
    session.execute(select(Agent.id).where(Agent.id == agent_id).with_for_update())
    since = now - HOUR
    room = per_hour - mails_since(session, agent_id, since)
    n = AgentNotification
    oldest = session.scalar(
        select(func.min(n.sent_at)).where(
            n.agent_id == agent_id, n.sent_at > since, n.outbox_id.is_not(None)
        )
    )
    room_at = (oldest or now) + HOUR
    if room <= 0:
        session.execute(
            update(n)
            .where(n.agent_id == agent_id, n.sent_at.is_(None), n.due_at <= now)
            .values(due_at=room_at)
            .execution_options(synchronize_session=False)
        )
        return Claimed([], [], more=False, room_at=room_at)
    rows = list(claim_due(session, agent_id, now, limit))
    more = len(rows) == limit
    wanted = emails_for(rows)
    single, folded = divide(rows, room)
    if wanted > room and more:
        # The hour's last email: whatever else is due goes in it too, not into the next hour.
        folded += claim_due(session, agent_id, now, MAX_FOLDED - len(folded))
        more = len(folded) >= MAX_FOLDED
    return Claimed(single, folded, more=more, room_at=room_at if wanted >= room else None)


def emails_for(rows: Sequence[AgentNotification]) -> int:
    """Emails these rows make with room for all: one each, and one for the digest rows."""
    return sum(not r.digest for r in rows) + any(r.digest for r in rows)


def divide(
    rows: Sequence[AgentNotification], room: int
) -> tuple[list[AgentNotification], list[AgentNotification]]:
    """Which of an agent's due rows get an email of their own and which are folded into one,
    given room for `room` (at least 1) more emails this hour: the digest rows always share one;
    with too little room the weightiest keep their own and the rest join the last."""
    folded = [r for r in rows if r.digest]
    single = sorted((r for r in rows if not r.digest), key=lambda r: (-WEIGHT[r.kind], r.id))
    if emails_for(rows) > room:
        folded = single[room - 1 :] + folded
        single = single[: room - 1]
    return single, folded
