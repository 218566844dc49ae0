"""Which agent is owed which notification for which event, and when (at once, or in a digest).

The events table is the source: every event not yet looked at (`notified_at` is NULL) is turned
into zero or more `AgentNotification` rows, one per agent, in the same transaction that marks
it looked at; so an event is notified once even if the sweep runs twice or dies midway. Who
gets one: the ticket's assignee, or the whole team when nobody is assigned; never the agent
who caused the event. Each agent chooses which kinds they want and whether they come at once
or in one daily digest; a notice that their own mail was rejected always comes, at once.

No I/O here: rendering and sending are the email channel's job (channels/email/notify.py).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session, selectinload

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


def fan_out(session: Session, now: dt.datetime, limit: int = 500) -> int:
    """Turn the events not yet looked at into notification rows; how many rows were added."""
    events = session.scalars(
        select(Event)
        .where(Event.notified_at.is_(None))
        .order_by(Event.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    # A busy inbox hands this hundreds of events a sweep: what they share is asked for once
    # (who was told already, each app's team, the conversations with their tickets).
    kinds = {event.id: notification_kind(event) for event in events}
    wanted = [event for event in events if kinds[event.id] is not None]
    have: set[tuple[int, int]] = set()
    if wanted:
        have = {
            (event_id, agent_id)
            for event_id, agent_id in session.execute(
                select(AgentNotification.event_id, AgentNotification.agent_id).where(
                    AgentNotification.event_id.in_([event.id for event in wanted])
                )
            )
        }
    conversation_ids = {e.conversation_id for e in wanted if e.conversation_id is not None}
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

    added = 0
    for event in events:
        event.notified_at = now
        kind = kinds[event.id]
        if kind is None:
            continue
        for agent in recipients(session, event, kind, team):
            prefs = preferences(agent)
            if (event.id, agent.id) in have or kind not in prefs.events:
                continue
            digest = prefs.digest and kind not in ALWAYS
            session.add(
                AgentNotification(
                    app_id=event.app_id,
                    agent_id=agent.id,
                    event_id=event.id,
                    conversation_id=event.conversation_id,
                    kind=kind,
                    digest=digest,
                    due_at=next_digest_time(now, prefs.digest_hour) if digest else now,
                    created_at=now,
                )
            )
            added += 1
    session.flush()
    return added


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
    """Mark up to `limit` of the agent's due, unsent notifications sent, and return them, in
    one UPDATE; a backlog is worked off in several short transactions, not one long one.

    Two workers given the same agent cannot both get a row: the second one's UPDATE finds them
    sent (PostgreSQL re-checks the condition after the first commits; SQLite serializes
    writers). The caller composes and queues the emails in the same transaction.
    """
    due = (
        select(AgentNotification.id)
        .where(
            AgentNotification.agent_id == agent_id,
            AgentNotification.sent_at.is_(None),
            AgentNotification.due_at <= now,
        )
        .order_by(AgentNotification.id)
        .limit(limit)
    )
    ids = session.scalars(
        update(AgentNotification)
        .where(AgentNotification.id.in_(due.scalar_subquery()), AgentNotification.sent_at.is_(None))
        .values(sent_at=now)
        .returning(AgentNotification.id)
        .execution_options(synchronize_session=False)
    ).all()
    if not ids:
        return []
    return session.scalars(
        select(AgentNotification)
        .where(AgentNotification.id.in_(ids))
        .order_by(AgentNotification.id)
        .execution_options(populate_existing=True)
    ).all()
