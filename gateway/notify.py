"""Wiring of agent notifications: the scheduler's step, and the sweep that emails what is due.

The scheduler's step collects new events into the agents' pending notifications
(tickets/notifications.py, coalesced per `[notifications] coalesce_seconds`) and, when any is
due, enqueues `notify_agents`, which runs `notify_due`: the due rows of every agent are planned
and rendered from a snapshot, with no transaction open (on SQLite, no write lock held while
templates render and messages are composed), then claimed and queued in the outbox in one
transaction, the emails in one INSERT (tickets/notification_sweep.py). An email that several
agents get alike is rendered once. The emails leave through `send_outbound` like any other.

`notify_agent` is the older unit of one agent (claim, render and queue in one transaction); it
stays for messages still queued for it.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from channels.email.notify import (
    AgentTemplates,
    Bulk,
    Draft,
    Rendered,
    Sender,
    Shapes,
    compose_notifications,
)
from channels.email.outbox import queue_email
from gateway.runtime import Runtime
from tickets import notification_sweep, notifications
from tickets.models import Agent, AgentNotification, App, Channel, ChannelAddress, Outbox

log = logging.getLogger(__name__)

_templates: AgentTemplates | None = None


def templates() -> AgentTemplates:
    global _templates
    if _templates is None:
        _templates = AgentTemplates()
    return _templates


def channel_address(session: Session, app_id: int) -> tuple[int, str] | None:
    """The app's first channel address: notifications come from it, answers go to its plus
    forms."""
    row = session.execute(
        select(Channel.id, ChannelAddress.address)
        .join(ChannelAddress, ChannelAddress.channel_id == Channel.id)
        .where(Channel.app_id == app_id, Channel.enabled.is_(True))
        .order_by(Channel.id, ChannelAddress.id)
        .limit(1)
    ).first()
    return (row[0], row[1]) if row else None


@dataclass(frozen=True)
class Notified:
    outbox_ids: list[int]
    more: bool  # a full batch was claimed: more may be due


def notify_agent(runtime: Runtime, agent_id: int) -> Notified:
    """Queue a batch of the agent's due notifications; the outbox ids to send. Safe to run
    twice: a row is claimed by one run only."""
    now = runtime.clock()
    per_hour = runtime.config.notifications.max_per_hour
    with runtime.unit_of_work() as session:
        claimed = notifications.take_due(session, agent_id, now, per_hour)
        more = claimed.more
        count = len(claimed.single) + len(claimed.folded)
        agent = session.get(Agent, agent_id)
        if not count or agent is None:
            return Notified([], more)
        app = session.get(App, agent.app_id)
        channel = channel_address(session, agent.app_id)
        if app is None or channel is None or not agent.active:
            log.warning("agent %s: %d notifications not sent (no channel)", agent_id, count)
            return Notified([], more)
        drafts = _drafts(
            runtime, session, agent, claimed.single, claimed.folded, claimed.room_at, channel, now
        )
        ids = []
        for draft in drafts:
            outbox = _queue(
                runtime,
                session,
                agent.app_id,
                app.brand,
                channel,
                draft.to,
                draft.rendered,
                draft.reply_to,
                now,
            )
            for row in draft.rows:
                row.outbox_id = outbox.id
            ids.append(outbox.id)
        return Notified(ids, more)


def _drafts(
    runtime: Runtime,
    session: Session,
    agent: Agent,
    single: list[AgentNotification],
    folded: list[AgentNotification],
    room_at: dt.datetime | None,
    channel: tuple[int, str],
    now: dt.datetime,
    bulk: Bulk | None = None,
    shapes: Shapes | None = None,
) -> list[Draft]:
    per_hour = runtime.config.notifications.max_per_hour
    return compose_notifications(
        session,
        agent,
        single,
        Sender(runtime.keyring, channel[1], runtime.config.agent_token_lifetime),
        templates(),
        now,
        folded=folded,
        limit=None if room_at is None else (per_hour, room_at),
        bulk=bulk,
        shapes=shapes,
    )


def _queue(
    runtime: Runtime,
    session: Session | _Composed,
    app_id: int,
    brand: str,
    channel: tuple[int, str],
    to: str,
    rendered: Rendered,
    reply_to: str | None,
    now: dt.datetime,
) -> Outbox:
    channel_id, address = channel
    return queue_email(
        session,  # type: ignore[arg-type]  # (a _Composed takes the row for a later INSERT)
        app_id=app_id,
        from_address=address,
        from_name=f"{brand} Support",
        to=[to],
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        now=now,
        kind="agent_notification",
        channel_id=channel_id,
        reply_to=reply_to,
        auto_submitted=True,
        # Outlook and Exchange answer notifications with out-of-office mail unless told not
        # to; and a notification that comes back to a channel address is a loop.
        extra_headers=[("X-Auto-Response-Suppress", "All")],
        loop_keyring=runtime.keyring,
    )


@dataclass(frozen=True)
class _Rendered:
    """An email of the sweep in plain values, apart from the session that read it."""

    agent_id: int
    row_ids: list[int]
    to: str
    rendered: Rendered | None  # None: the app has no channel to send from (nothing is sent)
    reply_to: str | None = None
    app_id: int = 0
    brand: str = ""
    channel: tuple[int, str] | None = None


@dataclass(frozen=True)
class _Email:
    agent_id: int
    row_ids: list[int]
    outbox: Outbox | None


class _Composed:
    """Takes the outbox row `queue_email` adds, in place of a session: the sweep composes with
    no transaction open and adds the rows afterwards, all in one INSERT."""

    def __init__(self) -> None:
        self.rows: list[Outbox] = []

    def add(self, row: object) -> None:
        # Only customer mail adds more (its thread references); anything else here would be
        # lost, so it stops the sweep instead.
        if not isinstance(row, Outbox):
            raise TypeError(f"a notification email added {type(row).__name__}, not kept")
        self.rows.append(row)

    def flush(self) -> None:
        pass


_sweeping = threading.Lock()


def notify_due(runtime: Runtime, agents: int = 1000) -> Notified:
    """Email every agent what is due now: render from a snapshot, then claim and queue in one
    transaction; the outbox ids to send. Safe to run twice or beside another: a row is claimed
    once, and a plan that changed after it was read is left whole for the next run."""
    if not _sweeping.acquire(blocking=False):
        return Notified([], more=False)  # the run in progress in this process does it
    try:
        return _notify_due(runtime, agents)
    finally:
        _sweeping.release()


def _notify_due(runtime: Runtime, agents: int) -> Notified:
    now = runtime.clock()
    per_hour = runtime.config.notifications.max_per_hour
    with runtime.reading() as session:
        plans, postponed = notification_sweep.plan(session, now, per_hour, agents)
        snapshots = [notification_sweep.Snapshot.of(p) for p in plans]
        rendered = _render(runtime, session, plans, now)
        due = sum(len(p.rows) for p in plans)
        cut = any(len(p.single) >= notifications.CLAIM_BATCH for p in plans)
    if not snapshots and not postponed:
        return Notified([], more=False)
    emails = [_compose(runtime, r, now) for r in rendered]
    with runtime.unit_of_work() as session:
        kept = notification_sweep.claim(session, snapshots, postponed, now)
        emails = [e for e in emails if e.agent_id in kept]
        session.add_all([e.outbox for e in emails if e.outbox is not None])
        session.flush()
        notification_sweep.mark_sent(
            session, [(e.row_ids, e.outbox.id if e.outbox else None) for e in emails], now
        )
        ids = [e.outbox.id for e in emails if e.outbox is not None]
    # More may be due: a plan that changed meanwhile, or an agent's batch cut short.
    return Notified(ids, more=cut or sum(len(e.row_ids) for e in emails) < due)


def _render(
    runtime: Runtime, session: Session, plans: list[notification_sweep.Plan], now: dt.datetime
) -> list[_Rendered]:
    bulk = Bulk.load(session, [r for p in plans for r in p.rows])
    shapes = Shapes()
    out = []
    for p in plans:
        agent = session.get(Agent, p.agent_id)
        app = session.get(App, agent.app_id) if agent is not None else None
        channel = channel_address(session, agent.app_id) if agent is not None else None
        if agent is None or app is None or channel is None or not agent.active:
            # Taken all the same, as notify_agent does: left due, they would come back forever.
            log.warning("agent %s: %d notifications not sent (no channel)", p.agent_id, len(p.rows))
            out.append(_Rendered(p.agent_id, [r.id for r in p.rows], "", None))
            continue
        drafts = _drafts(
            runtime, session, agent, p.single, p.folded, p.room_at, channel, now, bulk, shapes
        )
        out += [
            _Rendered(
                agent.id,
                [r.id for r in d.rows],
                d.to,
                d.rendered,
                d.reply_to,
                app.id,
                app.brand,
                channel,
            )
            for d in drafts
        ]
    return out


def _compose(runtime: Runtime, r: _Rendered, now: dt.datetime) -> _Email:
    if r.rendered is None or r.channel is None:
        return _Email(r.agent_id, r.row_ids, None)
    composed = _Composed()
    _queue(runtime, composed, r.app_id, r.brand, r.channel, r.to, r.rendered, r.reply_to, now)
    [outbox] = composed.rows
    return _Email(r.agent_id, r.row_ids, outbox)
