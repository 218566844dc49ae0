"""SLA timers on tickets: policy choice, business-time due dates, pause and resume, warning and
breach recorded once. Runs on SQLite and PostgreSQL like the other domain tests."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy.orm import Session

from tickets import services, sla
from tickets.business_time import ALWAYS, Calendar, add_business_time, sla_duration
from tickets.models import Agent, App, Conversation, SlaTimer, TimerState

H = dt.timedelta(hours=1)
MIN = dt.timedelta(minutes=1)
OFFICE = {
    "name": "office",
    "timezone": "Europe/Berlin",
    "hours": {d: "09:00-17:00" for d in ("mon", "tue", "wed", "thu", "fri")},
    "holidays": ["2026-12-25"],
}
# Monday 23 November 2026, 10:00 in Berlin (CET, UTC+1).
MONDAY_10 = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)


def office() -> Calendar:
    return Calendar.from_config(**OFFICE)


def test_a_day_of_an_sla_is_a_working_day_of_its_calendar():
    assert sla_duration("3d", ALWAYS) == 72 * H
    assert sla_duration("3d", office()) == 24 * H
    assert sla_duration("1w", office()) == 40 * H
    assert sla_duration("1d4h", office()) == 12 * H
    assert sla_duration("90m", office()) == 1.5 * H
    # Three working days from Monday 10:00 is Thursday 10:00, not a week later.
    due = add_business_time(office(), MONDAY_10, sla_duration("3d", office()))
    assert due == MONDAY_10 + dt.timedelta(days=3)


@pytest.fixture
def policies(session: Session, app: App) -> App:
    app.sla_policies = [
        sla.policy_json(
            "urgent-billing",
            priorities=["urgent"],
            categories=["billing"],
            durations={"first_response": "15m", "resolution": "4h"},
            calendar=None,
            warn_at=0.5,
        ),
        sla.policy_json(
            "office",
            priorities=["low", "normal", "high", "urgent"],
            categories=[],
            durations={"first_response": "1h", "next_response": "4h", "resolution": "3d"},
            calendar=OFFICE,
            warn_at=0.8,
        ),
    ]
    session.flush()
    return app


@pytest.fixture
def agent(session: Session, app: App) -> Agent:
    return services.add_agent(session, app, "ana@acme.example", "Ana", MONDAY_10)


@pytest.fixture
def conversation(session: Session, app: App, policies: App) -> Conversation:
    customer = services.customer_by_address(session, app, "chris@example.com", MONDAY_10)
    conversation, _ = services.start_conversation(
        session, app, customer, "chat", "Where is my parcel?", MONDAY_10
    )
    return conversation


def timers(conversation: Conversation) -> dict[str, SlaTimer]:
    assert conversation.ticket is not None
    return {t.kind.value: t for t in conversation.ticket.timers if t.ended_at is None}


def test_conversion_starts_first_response_and_resolution_in_business_time(
    session, conversation, agent
):
    services.convert(session, conversation, agent, MONDAY_10)
    running = timers(conversation)
    assert set(running) == {"first_response", "resolution"}
    assert running["first_response"].policy == "office"
    assert running["first_response"].due_at == MONDAY_10 + H
    # Warned at 80 % of the hour.
    assert running["first_response"].warn_due_at == MONDAY_10 + dt.timedelta(minutes=48)
    assert running["resolution"].due_at == MONDAY_10 + dt.timedelta(days=3)


def test_friday_afternoon_first_response_is_due_monday_morning(session, app, policies, agent):
    friday_1630 = dt.datetime(2026, 11, 27, 15, 30, tzinfo=dt.UTC)
    customer = services.customer_by_address(session, app, "dee@example.com", friday_1630)
    conversation, _ = services.start_conversation(
        session, app, customer, "chat", "Help", friday_1630
    )
    services.convert(session, conversation, agent, friday_1630)
    # 30 minutes on Friday, the other 30 on Monday from 09:00 Berlin (08:00 UTC).
    monday_0930 = dt.datetime(2026, 11, 30, 8, 30, tzinfo=dt.UTC)
    assert timers(conversation)["first_response"].due_at == monday_0930


def test_policy_is_chosen_by_priority_and_category(session, conversation, agent):
    ticket = services.convert(
        session, conversation, agent, MONDAY_10, priority="urgent", category="billing"
    )
    assert timers(conversation)["first_response"].policy == "urgent-billing"
    assert timers(conversation)["first_response"].due_at == MONDAY_10 + dt.timedelta(minutes=15)
    # Another category: the office policy, and the open timers take its targets.
    services.set_category(session, ticket, "shipping", services.SYSTEM, MONDAY_10 + 5 * MIN)
    first = timers(conversation)["first_response"]
    assert first.policy == "office"
    assert first.due_at == MONDAY_10 + H  # the five minutes used still count


def test_reply_meets_first_response_and_the_next_message_starts_next_response(
    session, conversation, agent
):
    services.convert(session, conversation, agent, MONDAY_10)
    services.add_agent_message(session, conversation, agent, "On it", MONDAY_10 + 20 * MIN)
    ticket = conversation.ticket
    assert ticket is not None
    first = next(t for t in ticket.timers if t.kind.value == "first_response")
    assert first.state == TimerState.MET
    assert first.ended_at == MONDAY_10 + 20 * MIN

    services.add_customer_message(session, conversation, "Thanks, any news?", "chat", MONDAY_10 + H)
    assert timers(conversation)["next_response"].due_at == MONDAY_10 + 5 * H
    # A second customer message does not restart the clock the team already owes.
    services.add_customer_message(session, conversation, "Hello?", "chat", MONDAY_10 + 2 * H)
    assert timers(conversation)["next_response"].due_at == MONDAY_10 + 5 * H


def test_snooze_pauses_the_timers_and_waking_resumes_them(session, conversation, agent):
    services.convert(session, conversation, agent, MONDAY_10)
    services.snooze(session, conversation, MONDAY_10 + 2 * H, services.SYSTEM, MONDAY_10 + 10 * MIN)
    first = timers(conversation)["first_response"]
    assert first.state == TimerState.PAUSED
    assert first.due_at is None
    assert first.used_seconds == 600

    # Woken by the customer 90 minutes later: the 50 minutes left start again from then.
    woke_at = MONDAY_10 + 100 * MIN
    services.add_customer_message(session, conversation, "Any news?", "chat", woke_at)
    first = timers(conversation)["first_response"]
    assert first.state == TimerState.RUNNING
    assert first.due_at == woke_at + 50 * MIN
    assert "next_response" not in timers(conversation)  # first response is still owed
    woke = [e for e in services.take_events(session) if e.kind == "conversation.woke"]
    assert woke[-1].data == {"reason": "customer message", "assignee": None}


def test_waiting_on_the_customer_pauses_until_they_write(session, conversation, agent):
    ticket = services.convert(session, conversation, agent, MONDAY_10)
    services.set_status(session, ticket, "waiting_on_customer", services.SYSTEM, MONDAY_10 + H)
    resolution = timers(conversation)["resolution"]
    assert resolution.state == TimerState.PAUSED
    assert resolution.used_seconds == 3600
    tuesday_10 = MONDAY_10 + dt.timedelta(days=1)
    services.add_customer_message(session, conversation, "Here is the photo", "chat", tuesday_10)
    assert ticket.status.value == "open"
    resolution = timers(conversation)["resolution"]
    assert resolution.state == TimerState.RUNNING
    # 23 working hours left from Tuesday 10:00: Tuesday 7, Wednesday 8, Thursday until 17:00.
    assert resolution.due_at == dt.datetime(2026, 11, 26, 16, 0, tzinfo=dt.UTC)


def test_resolving_meets_every_timer_and_reopening_resumes_resolution(session, conversation, agent):
    services.convert(session, conversation, agent, MONDAY_10)
    services.resolve(session, conversation, services.SYSTEM, MONDAY_10 + 2 * H)
    ticket = conversation.ticket
    assert ticket is not None
    assert {t.state for t in ticket.timers} == {TimerState.MET}
    services.add_customer_message(
        session, conversation, "It broke again", "chat", MONDAY_10 + 4 * H
    )
    resolution = next(t for t in ticket.timers if t.kind.value == "resolution")
    assert resolution.state == TimerState.RUNNING
    assert resolution.used_seconds == 2 * 3600
    # 22 working hours left from Monday 14:00: Monday 3, Tuesday 8, Wednesday 8, Thursday 3.
    assert resolution.due_at == dt.datetime(2026, 11, 26, 11, 0, tzinfo=dt.UTC)
    assert "next_response" in timers(conversation)


def test_warning_then_breach_each_recorded_once_with_who_to_tell(session, conversation, agent):
    services.convert(session, conversation, agent, MONDAY_10, assignee=agent)
    first = timers(conversation)["first_response"]
    services.take_events(session)
    session.flush()

    assert sla.fire_due(session, first.id, MONDAY_10 + 47 * MIN) is None
    assert sla.fire_due(session, first.id, MONDAY_10 + 48 * MIN) == "sla.warning"
    assert sla.fire_due(session, first.id, MONDAY_10 + 50 * MIN) is None  # warned already
    assert sla.fire_due(session, first.id, MONDAY_10 + 61 * MIN) == "sla.breached"
    assert sla.fire_due(session, first.id, MONDAY_10 + 62 * MIN) is None

    events = services.take_events(session)
    assert [e.kind for e in events] == ["sla.warning", "sla.breached"]
    assert events[1].data["assignee"] == "ana@acme.example"
    assert events[1].data["notify"] == "assignee"
    assert events[1].data["timer"] == "first_response"
    assert events[1].data["due_at"] == (MONDAY_10 + H).isoformat()
    session.refresh(first)
    assert first.state == TimerState.BREACHED
    assert first.warned is True
    # The reply still arrives: the breached timer ends, and stays breached.
    services.add_agent_message(session, conversation, agent, "Sorry!", MONDAY_10 + 2 * H)
    assert first.state == TimerState.BREACHED
    assert first.ended_at == MONDAY_10 + 2 * H


def test_the_sweep_query_finds_only_due_timers(session, conversation, agent):
    services.convert(session, conversation, agent, MONDAY_10)
    session.flush()
    assert sla.due_timer_ids(session, MONDAY_10 + 47 * MIN, 100) == []
    first = timers(conversation)["first_response"]
    assert sla.due_timer_ids(session, MONDAY_10 + 48 * MIN, 100) == [first.id]
