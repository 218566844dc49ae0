"""The scheduler's lease and sweep, and an actor run by a real Dramatiq worker on the stub
broker (and on Redis / RabbitMQ when their URLs are set)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import dramatiq
import pytest
from sqlalchemy import func, select

from gateway.broker import setup_broker
from gateway.config import embedded_default
from gateway.runtime import Runtime
from tests.support.brokers import BROKERS, exclusive
from tickets import services
from tickets.models import Conversation, ConversationState, Event


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture(params=BROKERS, ids=lambda u: u.split(":")[0])
def runtime(request, tmp_path) -> Iterator[tuple[Runtime, dramatiq.Broker, Clock]]:
    with exclusive(request.param):  # a shared Redis or RabbitMQ: one test at a time
        broker = setup_broker(request.param)
        from gateway import actors

        config = embedded_default().model_copy(
            update={"database_url": f"sqlite:///{tmp_path / 'gw.db'}", "broker_url": request.param}
        )
        rt = Runtime.create(config)
        clock = Clock(dt.datetime(2026, 11, 24, 9, 0, tzinfo=dt.UTC))
        rt.clock = clock  # type: ignore[method-assign]
        actors.bind(rt)
        broker.flush_all()
        yield rt, broker, clock
        broker.flush_all()
        rt.close()
        setup_broker("stub://")


def snoozed_conversation(rt: Runtime, until: dt.datetime) -> int:
    with rt.unit_of_work() as session:
        app = services.get_app(session, "demo")
        customer = services.customer_by_address(session, app, "c@example.com", rt.clock())
        conversation, _ = services.start_conversation(
            session, app, customer, "chat", "hello", rt.clock()
        )
        services.snooze(session, conversation, until, services.SYSTEM, rt.clock())
        return conversation.id


def test_only_one_leader_until_its_lease_runs_out(runtime):
    from gateway.scheduler import LEASE_NAME, try_acquire_lease

    rt, _, clock = runtime
    ttl = dt.timedelta(seconds=15)
    with rt.unit_of_work() as s:
        assert try_acquire_lease(s, LEASE_NAME, "a", clock.now, ttl)
    with rt.unit_of_work() as s:
        assert not try_acquire_lease(s, LEASE_NAME, "b", clock.now, ttl)
        assert try_acquire_lease(s, LEASE_NAME, "a", clock.now, ttl)  # renewal
    later = clock.now + dt.timedelta(seconds=16)
    with rt.unit_of_work() as s:
        assert try_acquire_lease(s, LEASE_NAME, "b", later, ttl)
    with rt.unit_of_work() as s:
        assert not try_acquire_lease(s, LEASE_NAME, "a", later, ttl)


def test_sweep_wakes_due_snoozes_exactly_once(runtime):
    from gateway.scheduler import Scheduler

    rt, broker, clock = runtime
    due = snoozed_conversation(rt, clock.now + dt.timedelta(minutes=30))
    scheduler = Scheduler(rt)
    assert scheduler.sweep_once()["wake_snoozed"] == 0

    clock.now += dt.timedelta(minutes=31)
    # Two sweeps before any worker runs (the second finds it in the queue still): it acts once.
    assert scheduler.sweep_once()["wake_snoozed"] == 1
    assert scheduler.sweep_once()["wake_snoozed"] == 1
    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        broker.join("timers", timeout=20_000)
        worker.join()
    finally:
        worker.stop()
    with rt.unit_of_work() as s:
        conversation = s.get(Conversation, due)
        assert conversation is not None
        assert conversation.state == ConversationState.OPEN
        woke = s.scalar(
            select(func.count()).where(
                Event.conversation_id == due, Event.kind == "conversation.woke"
            )
        )
    assert woke == 1
    assert scheduler.sweep_once()["wake_snoozed"] == 0
