"""The notification sweep's claim: planned on a snapshot, taken in one short transaction.

Rendering a notification email costs far more than deciding who is owed one, and on SQLite a
transaction that writes holds the one write lock inbound mail waits for too. So the sweep
(gateway/notify.py) goes in three steps, for every agent with something due at once:

1. `plan`, reading only: the due rows of each agent, divided within the agent's hourly limit
   (tickets/notifications.py `divide`) into rows with an email of their own and rows folded into
   one; an agent whose hour is full gets a `Postponed` instead.
2. The caller renders and composes the emails with no transaction open.
3. `claim`, in one transaction: the plans whose rows are all still as they were read (none sent
   meanwhile, no event added since, the agent's hour not filled by someone else) are kept; any
   other plan is left whole for the next sweep, which renders it again with what it now holds.
   The postponed rows are pushed back to when the hour has room. The caller then adds the
   emails to the outbox and `mark_sent` records them, still in that transaction.

So a row is emailed once, with every event it holds, whatever runs beside the sweep.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import bindparam, distinct, func, select, update
from sqlalchemy.orm import Session

from tickets.models import Agent, AgentNotification
from tickets.notifications import (
    CLAIM_BATCH,
    HOUR,
    MAX_FOLDED,
    ROWS,
    divide,
    due_agent_ids,
    emails_for,
)

MAX_ROWS = 5000  # due rows one sweep reads at most; the rest wait for the next


@dataclass
class Plan:
    """An agent's emails of this sweep: `single` each in its own, `folded` together in one."""

    agent_id: int
    single: list[AgentNotification]
    folded: list[AgentNotification]
    sent_in_hour: int  # the agent's emails of the last hour, as read
    room_at: dt.datetime | None  # set when these take the hour's last email

    @property
    def rows(self) -> list[AgentNotification]:
        return [*self.single, *self.folded]


@dataclass(frozen=True)
class Postponed:
    agent_id: int
    room_at: dt.datetime  # when the oldest email of the hour ages out


@dataclass(frozen=True)
class Snapshot:
    """What `claim` checks a plan against: plain values, read before rendering."""

    agent_id: int
    sent_in_hour: int
    event_counts: dict[int, int]  # row id -> events it held when read

    @classmethod
    def of(cls, plan: Plan) -> Snapshot:
        return cls(plan.agent_id, plan.sent_in_hour, {r.id: r.event_count for r in plan.rows})


def _hours(
    session: Session, agent_ids: list[int], now: dt.datetime
) -> dict[int, tuple[int, dt.datetime | None]]:
    """Per agent: the notification emails of the last hour (a folded one counts once), and when
    the oldest of them went."""
    n = AgentNotification
    return {
        agent_id: (int(count), oldest)
        for agent_id, count, oldest in session.execute(
            select(n.agent_id, func.count(distinct(n.outbox_id)), func.min(n.sent_at))
            .where(n.agent_id.in_(agent_ids), n.sent_at > now - HOUR, n.outbox_id.is_not(None))
            .group_by(n.agent_id)
        )
    }


def plan(
    session: Session,
    now: dt.datetime,
    per_hour: int,
    agents: int = 1000,
    batch: int = CLAIM_BATCH,
) -> tuple[list[Plan], list[Postponed]]:
    """Who gets which emails now; reads only. At most `batch` emails of their own per agent and
    sweep (the rest stay due); the hour's last email folds in up to MAX_FOLDED rows."""
    agent_ids = due_agent_ids(session, now, agents)
    if not agent_ids:
        return [], []
    hours = _hours(session, agent_ids, now)
    n = AgentNotification
    due: defaultdict[int, list[AgentNotification]] = defaultdict(list)
    for row in session.scalars(
        select(n)
        .where(n.agent_id.in_(agent_ids), n.sent_at.is_(None), n.due_at <= now)
        .order_by(n.agent_id, n.id)
        .limit(MAX_ROWS)
    ):
        due[row.agent_id].append(row)
    plans, postponed = [], []
    for agent_id, rows in due.items():
        sent, oldest = hours.get(agent_id, (0, None))
        room = per_hour - sent
        room_at = (oldest or now) + HOUR
        if room <= 0:
            postponed.append(Postponed(agent_id, room_at))
            continue
        rows = rows[:MAX_FOLDED]
        single, folded = divide(rows, room)
        if emails_for(rows) <= room:
            single = single[:batch]
        last = len(single) + bool(folded) >= room
        plans.append(Plan(agent_id, single, folded, sent, room_at if last else None))
    return plans, postponed


def claim(
    session: Session,
    snapshots: list[Snapshot],
    postponed: list[Postponed],
    now: dt.datetime,
) -> set[int]:
    """The agents whose plan still holds (their rows are then taken by `mark_sent` in this
    transaction); the postponed rows are pushed back to when their agent's hour has room."""
    n = AgentNotification
    agent_ids = sorted({s.agent_id for s in snapshots})
    kept: set[int] = set()
    if agent_ids:
        # In id order, as every claimer of an agent locks it: the hour's last email is one.
        session.execute(
            select(Agent.id).where(Agent.id.in_(agent_ids)).order_by(Agent.id).with_for_update()
        )
        hours = _hours(session, agent_ids, now)
        row_ids = [i for s in snapshots for i in s.event_counts]
        current = dict(
            session.execute(
                select(n.id, n.event_count)
                .where(n.id.in_(row_ids), n.sent_at.is_(None))
                .order_by(n.id)
                .with_for_update()
            ).all()
        )
        for s in snapshots:
            unchanged = all(current.get(i) == count for i, count in s.event_counts.items())
            if unchanged and hours.get(s.agent_id, (0, None))[0] == s.sent_in_hour:
                kept.add(s.agent_id)
    for p in postponed:
        session.execute(
            update(n)
            .where(n.agent_id == p.agent_id, n.sent_at.is_(None), n.due_at <= now)
            .values(due_at=p.room_at)
            .execution_options(synchronize_session=False)
        )
    return kept


def mark_sent(session: Session, sent: list[tuple[list[int], int | None]], now: dt.datetime) -> None:
    """Record the claimed rows sent, each with its outbox row (None: nothing could be sent)."""
    values = [
        {"row_id": row_id, "outbox": outbox_id} for row_ids, outbox_id in sent for row_id in row_ids
    ]
    if values:
        session.execute(
            update(ROWS)
            .where(ROWS.c.id == bindparam("row_id"))
            .values(sent_at=now, outbox_id=bindparam("outbox")),
            values,
        )
