"""SLA timers of tickets: which policy applies, when each timer is due, pausing and resuming.

Policies come from the app row (`App.sla_policies`, synced from the config), so every process
applies the same rules. A timer measures business time of its policy's calendar: `target_seconds`
is the promise, `used_seconds` what was spent before the last pause, `due_at` and `warn_due_at`
the instants the sweep looks for (NULL while paused or once passed). The first policy whose
priorities include the ticket's priority, and whose categories (if any) include its category,
applies.

Lifecycle (the service functions of `tickets.services` call the `on_*` hooks):
- conversion starts first response and resolution (resolution only for non-customer tickets);
- a public agent reply meets first response and next response;
- a customer message starts next response once first response is over;
- snoozed, or waiting on the customer: running timers pause; woken or back to open: they resume;
- resolving meets every open timer; reopening resumes resolution with the time it had used.
`fire_due` (run by an actor) records the warning and the breach, each at most once.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from tickets.business_time import ALWAYS, Calendar, add_business_time, business_time_between
from tickets.business_time import sla_duration as parse_target
from tickets.due import due_ids
from tickets.models import (
    App,
    ConversationState,
    SlaTimer,
    Ticket,
    TicketStatus,
    TicketType,
    TimerKind,
    TimerState,
)

RESPONSE_KINDS = (TimerKind.FIRST_RESPONSE, TimerKind.NEXT_RESPONSE)
ACTIVE = (TimerState.RUNNING, TimerState.PAUSED)


@dataclass(frozen=True)
class Policy:
    name: str
    priorities: frozenset[str]
    categories: frozenset[str]
    targets: tuple[tuple[TimerKind, dt.timedelta], ...]
    calendar: Calendar
    warn_at: float

    def target(self, kind: TimerKind) -> dt.timedelta | None:
        return dict(self.targets).get(kind)

    def applies_to(self, ticket: Ticket) -> bool:
        if ticket.priority.value not in self.priorities:
            return False
        return not self.categories or (ticket.category or "") in self.categories


def policy_json(
    name: str,
    *,
    priorities: list[str],
    categories: list[str],
    durations: dict[str, str | None],
    calendar: dict[str, Any] | None,
    warn_at: float,
) -> dict[str, Any]:
    """The stored form of one policy (what `App.sla_policies` holds); calendar None = always."""
    return {
        "name": name,
        "priorities": priorities,
        "categories": categories,
        "durations": {k: v for k, v in durations.items() if v},
        "calendar": calendar,
        "warn_at": warn_at,
    }


@lru_cache(maxsize=64)
def _parse(stored: str) -> tuple[Policy, ...]:
    policies = []
    for item in json.loads(stored):
        cal_data = item.get("calendar")
        calendar = (
            Calendar.from_config(
                cal_data["name"], cal_data["timezone"], cal_data["hours"], cal_data["holidays"]
            )
            if cal_data
            else ALWAYS
        )
        targets = tuple(
            (TimerKind(kind), parse_target(text, calendar))
            for kind, text in item["durations"].items()
        )
        policies.append(
            Policy(
                name=item["name"],
                priorities=frozenset(item["priorities"]),
                categories=frozenset(item["categories"]),
                targets=targets,
                calendar=calendar,
                warn_at=float(item["warn_at"]),
            )
        )
    return tuple(policies)


def policies_of(app: App) -> tuple[Policy, ...]:
    # Parsed once per distinct config, not once per event: calendars validate on construction.
    return _parse(json.dumps(app.sla_policies or [], sort_keys=True))


def policy_for(session: Session, ticket: Ticket) -> Policy | None:
    app = session.get(App, ticket.app_id)
    assert app is not None
    return next((p for p in policies_of(app) if p.applies_to(ticket)), None)


def _timer_policy(session: Session, timer: SlaTimer) -> Policy:
    app = session.get(App, timer.ticket.app_id)
    assert app is not None
    for policy in policies_of(app):
        if policy.name == timer.policy:
            return policy
    # The policy left the config: keep counting round the clock rather than stopping silently.
    fallback = policy_for(session, timer.ticket)
    return fallback or Policy(timer.policy, frozenset(), frozenset(), (), ALWAYS, 0.8)


def _is_paused_context(ticket: Ticket) -> bool:
    return (
        ticket.conversation.state == ConversationState.SNOOZED
        or ticket.status == TicketStatus.WAITING_ON_CUSTOMER
    )


def _schedule(timer: SlaTimer, policy: Policy, now: dt.datetime) -> None:
    """Set due and warning times from `now` for the business time still left."""
    target = dt.timedelta(seconds=timer.target_seconds)
    used = dt.timedelta(seconds=timer.used_seconds)
    timer.due_at = add_business_time(policy.calendar, now, max(target - used, dt.timedelta(0)))
    warn_after = target * policy.warn_at - used
    timer.warn_due_at = (
        None
        if timer.warned or timer.state == TimerState.BREACHED
        else add_business_time(policy.calendar, now, max(warn_after, dt.timedelta(0)))
    )


def _account(session: Session, timer: SlaTimer, now: dt.datetime) -> None:
    """Add the business time spent since the timer last (re)started to `used_seconds`."""
    if timer.state != TimerState.RUNNING or timer.due_at is None:
        return
    policy = _timer_policy(session, timer)
    left = business_time_between(policy.calendar, now, timer.due_at)
    timer.used_seconds = max(timer.target_seconds - int(left.total_seconds()), 0)


def _active(ticket: Ticket, *kinds: TimerKind) -> list[SlaTimer]:
    return [t for t in ticket.timers if t.kind in kinds and t.state in ACTIVE]


def start(session: Session, ticket: Ticket, kind: TimerKind, now: dt.datetime) -> SlaTimer | None:
    """Start a timer of `kind` if the ticket's policy has a target for it and none is open."""
    policy = policy_for(session, ticket)
    target = policy.target(kind) if policy else None
    if policy is None or target is None or _active(ticket, kind):
        return None
    timer = SlaTimer(
        kind=kind,
        policy=policy.name,
        state=TimerState.RUNNING,
        started_at=now,
        target_seconds=int(target.total_seconds()),
        used_seconds=0,
        warned=False,
    )
    ticket.timers.append(timer)
    if _is_paused_context(ticket):
        timer.state, timer.paused_at = TimerState.PAUSED, now
    else:
        _schedule(timer, policy, now)
    session.flush()
    return timer


def _end(session: Session, timers: list[SlaTimer], now: dt.datetime) -> None:
    for timer in timers:
        _account(session, timer, now)
        timer.state = TimerState.MET
        timer.ended_at = now
        timer.warn_due_at = None


def pause(session: Session, ticket: Ticket, now: dt.datetime) -> None:
    for timer in ticket.timers:
        if timer.state == TimerState.RUNNING:
            _account(session, timer, now)
            timer.state, timer.paused_at = TimerState.PAUSED, now
            timer.due_at = timer.warn_due_at = None


def resume(session: Session, ticket: Ticket, now: dt.datetime) -> None:
    if _is_paused_context(ticket):
        return
    for timer in ticket.timers:
        if timer.state == TimerState.PAUSED:
            timer.state, timer.paused_at = TimerState.RUNNING, None
            _schedule(timer, _timer_policy(session, timer), now)


# --- hooks called by tickets.services ----------------------------------------------------------


def on_converted(session: Session, ticket: Ticket, now: dt.datetime) -> None:
    if ticket.type == TicketType.CUSTOMER:
        start(session, ticket, TimerKind.FIRST_RESPONSE, now)
    start(session, ticket, TimerKind.RESOLUTION, now)


def on_agent_reply(session: Session, ticket: Ticket, now: dt.datetime) -> None:
    _end(session, _active(ticket, *RESPONSE_KINDS), now)
    for timer in ticket.timers:
        # A breached response timer is over once the reply is there.
        if timer.kind in RESPONSE_KINDS and timer.ended_at is None:
            timer.ended_at = now


def on_customer_message(session: Session, ticket: Ticket, now: dt.datetime) -> None:
    if ticket.type != TicketType.CUSTOMER or ticket.status == TicketStatus.RESOLVED:
        return
    if any(t.kind in RESPONSE_KINDS and t.ended_at is None for t in ticket.timers):
        return  # the team owes an answer already (even a late one); that older clock counts
    start(session, ticket, TimerKind.NEXT_RESPONSE, now)


def on_status(session: Session, ticket: Ticket, previous: TicketStatus, now: dt.datetime) -> None:
    if ticket.status == TicketStatus.RESOLVED:
        _end(session, _active(ticket, *TimerKind), now)
        return
    if previous == TicketStatus.RESOLVED:
        for timer in ticket.timers:
            if timer.kind == TimerKind.RESOLUTION and timer.state == TimerState.MET:
                # Reopened: resolution goes on with the time it had already used.
                timer.state, timer.ended_at, timer.paused_at = TimerState.PAUSED, None, now
        if not any(t.kind == TimerKind.RESOLUTION for t in ticket.timers):
            start(session, ticket, TimerKind.RESOLUTION, now)
    if ticket.status == TicketStatus.WAITING_ON_CUSTOMER:
        pause(session, ticket, now)
    else:
        resume(session, ticket, now)


def on_snoozed(session: Session, ticket: Ticket, now: dt.datetime) -> None:
    pause(session, ticket, now)


def on_woken(session: Session, ticket: Ticket, now: dt.datetime) -> None:
    resume(session, ticket, now)


def on_policy_inputs(session: Session, ticket: Ticket, now: dt.datetime) -> None:
    """Priority or category changed: open timers take the targets of the policy that now applies."""
    policy = policy_for(session, ticket)
    if policy is None:
        return
    for timer in _active(ticket, *TimerKind):
        target = policy.target(timer.kind)
        if target is None or timer.policy == policy.name:
            continue
        _account(session, timer, now)
        timer.policy, timer.target_seconds = policy.name, int(target.total_seconds())
        if timer.state == TimerState.RUNNING:
            _schedule(timer, policy, now)


# --- the sweep's side ------------------------------------------------------------------------


def due_timer_ids(session: Session, now: dt.datetime, limit: int) -> list[int]:
    """Running timers whose warning or breach time has come; each query walks an index."""
    ids = due_ids(
        session, SlaTimer.id, SlaTimer.due_at, now, limit, SlaTimer.state == TimerState.RUNNING
    )
    # warn_due_at is set only on running timers that have not warned (every other transition
    # clears it), so the warning query needs no state filter, which would lure SQLite onto the
    # (state, due_at) index and a scan of every running timer. fire_due checks the state anyway.
    ids += due_ids(session, SlaTimer.id, SlaTimer.warn_due_at, now, limit)
    return sorted(set(ids))[:limit]


def fire_due(session: Session, timer_id: int, now: dt.datetime) -> str | None:
    """Record the breach, or else the warning, of one timer if due; None if nothing was due.

    Each is a guarded UPDATE, so two workers running this for the same timer record it once.
    """
    from tickets.services import SYSTEM, record_ticket_event  # services imports this module

    breached = session.execute(
        update(SlaTimer)
        .where(
            SlaTimer.id == timer_id,
            SlaTimer.state == TimerState.RUNNING,
            SlaTimer.due_at <= now,
        )
        .values(state=TimerState.BREACHED, warn_due_at=None)
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    kind = "sla.breached"
    if not breached:
        warned = session.execute(
            update(SlaTimer)
            .where(
                SlaTimer.id == timer_id,
                SlaTimer.state == TimerState.RUNNING,
                SlaTimer.warned.is_(False),
                SlaTimer.warn_due_at <= now,
            )
            .values(warned=True, warn_due_at=None)
            .execution_options(synchronize_session=False)
        ).rowcount  # type: ignore[attr-defined]
        if not warned:
            return None
        kind = "sla.warning"
    timer = session.get(SlaTimer, timer_id, populate_existing=True)
    assert timer is not None
    ticket = timer.ticket
    due = timer.due_at
    record_ticket_event(
        session,
        ticket,
        kind,
        SYSTEM,
        now,
        # Enough for a notification without another query: who to tell and what about.
        timer_id=timer.id,
        timer=timer.kind.value,
        policy=timer.policy,
        due_at=due.isoformat() if due else None,
        number=ticket.number,
        priority=ticket.priority.value,
        assignee=ticket.assignee.email if ticket.assignee else None,
        notify="assignee" if ticket.assignee else "team",
    )
    return kind
