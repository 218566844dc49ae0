"""The scheduler: one leader per deployment runs a sweep that enqueues whatever is due or stuck.

Leadership is a lease row in the database, renewed on every sweep and taken over when it runs
out, so a dead leader is replaced within one lease period. The sweep is a tuple of named steps;
each step selects only due rows (by an indexed due time) and hands their ids to actors, which are
safe to run twice: a row enqueued twice, or by two leaders during a handover, does no harm.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway import actors
from gateway.runtime import Runtime
from tickets import delivery, email_check, inbound, notifications, sla, summary
from tickets.models import Conversation, ConversationState, Lease

log = logging.getLogger(__name__)

LEASE_NAME = "scheduler"
BATCH = 1000


def holder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def try_acquire_lease(
    session: Session, name: str, holder: str, now: dt.datetime, ttl: dt.timedelta
) -> bool:
    """Take or renew the lease; True if `holder` holds it until now + ttl."""
    result = session.execute(
        update(Lease)
        .where(Lease.name == name, (Lease.holder == holder) | (Lease.expires_at < now))
        .values(holder=holder, expires_at=now + ttl)
    )
    if result.rowcount:  # type: ignore[attr-defined]
        return True
    if session.get(Lease, name) is not None:
        return False
    try:
        with session.begin_nested():
            session.execute(insert(Lease).values(name=name, holder=holder, expires_at=now + ttl))
    except IntegrityError:
        return False
    return True


def due_snoozes(session: Session, now: dt.datetime) -> list[Callable[[], object]]:
    ids = session.scalars(
        select(Conversation.id)
        .where(Conversation.state == ConversationState.SNOOZED, Conversation.snoozed_until <= now)
        .order_by(Conversation.snoozed_until)
        .limit(BATCH)
        .with_for_update(skip_locked=True)
    ).all()
    return [partial(actors.wake_snoozed.send, i) for i in ids]


def pending_inbound(session: Session, now: dt.datetime) -> list[Callable[[], object]]:
    # Rows younger than a few seconds are still on their way through the broker.
    ids = list(inbound.pending_ids(session, now - dt.timedelta(seconds=10), BATCH))
    # In batches, as the SMTP path sends them: after a crash, a backlog of thousands is
    # processed twenty to a transaction, and a row still queued elsewhere costs one query.
    size = actors.INBOUND_BATCH_SIZE
    return [
        partial(actors.process_inbound_batch.send, ids[start : start + size])
        for start in range(0, len(ids), size)
    ]


def due_sla_timers(session: Session, now: dt.datetime) -> list[Callable[[], object]]:
    return [partial(actors.fire_sla_timer.send, i) for i in sla.due_timer_ids(session, now, BATCH)]


def due_email_checks(session: Session, now: dt.datetime) -> list[Callable[[], object]]:
    # Conversion enqueues the check itself; the sweep catches what that enqueue lost.
    ids = email_check.due_ticket_ids(session, now - dt.timedelta(seconds=10), BATCH)
    return [partial(actors.check_email.send, i) for i in ids]


def due_summaries(session: Session, now: dt.datetime) -> list[Callable[[], object]]:
    # Debounced: only conversations that have been quiet for debounce_seconds.
    quiet_since = now - dt.timedelta(
        seconds=actors.current_runtime().config.summarizer.debounce_seconds
    )
    ids = summary.due_ticket_ids(session, quiet_since, BATCH)
    return [partial(actors.summarize_ticket.send, i) for i in ids]


def due_outbox(session: Session, now: dt.datetime) -> list[Callable[[], object]]:
    from channels.email import outbox
    from gateway.outbound import outbound_for

    # Fresh rows are enqueued by whoever queued them; the sweep catches what that missed,
    # retries whose time has come, and attempts that died mid-send (stale claims).
    stale = outbound_for(actors.current_runtime()).stale_after
    ids = outbox.due_ids(session, now - dt.timedelta(seconds=10), BATCH)
    ids += outbox.stale_ids(session, now - stale, BATCH)
    return _batches(actors.send_outbound_batch.send, ids)


def due_deliveries(session: Session, now: dt.datetime) -> list[Callable[[], object]]:
    # Rendered, stored and sent in batches: a tracker's news to ten thousand customers falls
    # due at once, and one transaction (and one SMTP connection) each would not keep up.
    grace = dt.timedelta(seconds=actors.current_runtime().config.delivery.email_grace_seconds)
    ids = delivery.due_conversations(session, now - grace, BATCH)
    return _batches(actors.deliver_emails.send, ids)


def _batches(send: Callable[..., object], ids: Sequence[int]) -> list[Callable[[], object]]:
    """One send per outbound batch of ids; the ids as a tuple, so a held back step can tell
    which of them it sent a moment ago (see `Scheduler.sweep_once`)."""
    size = actors.current_runtime().config.outbound.batch_size
    return [partial(send, tuple(ids[start : start + size])) for start in range(0, len(ids), size)]


def agent_notifications(session: Session, now: dt.datetime) -> list[Callable[[], object]]:
    # Deciding who is told is quick database work, done here in bulk; rendering is the actor's,
    # one run for every agent due, which holds no transaction while it renders.
    window = actors.current_runtime().config.notifications.coalesce_seconds
    notifications.fan_out(session, now, BATCH, dt.timedelta(seconds=window))
    due = notifications.due_agent_ids(session, now, 1)
    return [actors.notify_agents.send] if due else []


@dataclass(frozen=True)
class SweepStep:
    name: str
    find: Callable[[Session, dt.datetime], list[Callable[[], object]]]
    # Hold back an id this leader enqueued less than `Scheduler.resend_after` ago. Right for
    # rows that are due once (a timer, a check); not for ids that fall due again and again
    # (an agent with new notifications), which keep the default.
    hold_back: bool = False


SWEEP_STEPS: tuple[SweepStep, ...] = (
    SweepStep("process_inbound", pending_inbound),
    SweepStep("wake_snoozed", due_snoozes),
    SweepStep("sla_timers", due_sla_timers, hold_back=True),
    SweepStep("email_checks", due_email_checks, hold_back=True),
    SweepStep("summaries", due_summaries),
    SweepStep("deliver_email", due_deliveries),
    SweepStep("send_outbound", due_outbox, hold_back=True),
    SweepStep("agent_notifications", agent_notifications),
)


_LONG_AGO = dt.datetime.min.replace(tzinfo=dt.UTC)


def _batch_of_ids(send: partial[object]) -> bool:
    return len(send.args) == 1 and isinstance(send.args[0], tuple)


class Scheduler:
    def __init__(self, runtime: Runtime, steps: tuple[SweepStep, ...] = SWEEP_STEPS) -> None:
        self.runtime = runtime
        self.steps = steps
        self.holder = holder_id()
        self.interval = runtime.config.sweep_seconds
        # A row still due at the next sweep is usually just still in the queue: enqueueing it
        # again every few seconds would bury a backlog (after an outage) under copies. So an id
        # is enqueued again only after `resend_after`, in case the broker lost it.
        self.resend_after = max(15.0, 3 * self.interval)
        self._sent: dict[tuple[str, tuple[object, ...]], dt.datetime] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sweep_once(self) -> dict[str, int] | None:
        """One sweep if this process leads; the number of due ids found per step, else None."""
        now = self.runtime.clock()
        ttl = dt.timedelta(seconds=max(3 * self.interval, 15))
        with self.runtime.unit_of_work() as session:
            if not try_acquire_lease(session, LEASE_NAME, self.holder, now, ttl):
                return None
        counts: dict[str, int] = {}
        resend_after = dt.timedelta(seconds=self.resend_after)
        for step in self.steps:
            # Find in one short transaction, enqueue after it: the broker never waits on a lock.
            with self.runtime.unit_of_work() as session:
                sends = step.find(session, now)
            for send in sends:
                if step.hold_back and isinstance(send, partial) and _batch_of_ids(send):
                    # A batch: held back id by id, the rest of it still sent.
                    fresh = tuple(
                        i
                        for i in send.args[0]
                        if now - self._sent.get((step.name, (i,)), _LONG_AGO) >= resend_after
                    )
                    if fresh:
                        send.func(fresh)
                    self._sent.update({(step.name, (i,)): now for i in fresh})
                    continue
                key = (
                    (step.name, send.args) if step.hold_back and isinstance(send, partial) else None
                )
                last = self._sent.get(key) if key is not None else None
                if last is not None and now - last < resend_after:
                    continue
                send()
                if key is not None:
                    self._sent[key] = now
            counts[step.name] = len(sends)
        self._sent = {k: t for k, t in self._sent.items() if now - t < resend_after}
        return counts

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sweep_once()
            except Exception:
                # The sweep must survive a database blip; the next one catches up.
                log.exception("scheduler sweep failed")
            self._stop.wait(self.interval)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="gateway-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.release()

    def release(self) -> None:
        """Give the lease up on a clean stop, so another node leads at its next sweep instead of
        after the lease runs out (a leader that dies holds it for one ttl at most)."""
        try:
            with self.runtime.unit_of_work() as session:
                session.execute(
                    update(Lease)
                    .where(Lease.name == LEASE_NAME, Lease.holder == self.holder)
                    .values(expires_at=self.runtime.clock() - dt.timedelta(seconds=1))
                )
        except Exception:
            log.exception("releasing the scheduler lease failed; it runs out by itself")
