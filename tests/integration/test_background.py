"""Background work end to end: the sweep finds what is due, real Dramatiq workers run the actors
(on the stub broker, and on Redis / RabbitMQ when GATEWAY_TEST_REDIS_URL / GATEWAY_TEST_AMQP_URL
are set), and the database shows each effect exactly once, also across a broker restart and a
scheduler leader that dies."""

from __future__ import annotations

import datetime as dt
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import func, select, update

from gateway.broker import setup_broker
from gateway.config import SlaPolicyConfig, embedded_default
from gateway.runtime import Runtime
from tests.integration.test_scheduler import Clock, runtime  # noqa: F401 - fixture
from tests.support.brokers import BROKERS, exclusive
from tickets import services
from tickets.models import Channel, Event, SlaTimer, Ticket, TimerState

REDIS_SERVER = shutil.which("redis-server")


def run_workers(
    broker: dramatiq.Broker, *queues: str, until: Callable[[], bool] = lambda: True
) -> None:
    """Run workers until the queues are drained and `until()` holds.

    RabbitMQ's `join` counts only messages not yet delivered: one a consumer has fetched but not
    finished counts as done. So the effect the test waits for is checked as well, and a short
    settle afterwards lets any copy still in flight act (and show, if it acts twice).
    """
    worker = dramatiq.Worker(broker, worker_threads=4, worker_timeout=100)
    worker.start()
    try:
        deadline = time.monotonic() + 60
        while True:
            for queue in queues:
                broker.join(queue, timeout=60_000)
            worker.join()
            if until():
                break
            assert time.monotonic() < deadline, "the workers did not finish in 60 s"
            time.sleep(0.1)
        time.sleep(0.5)
        for queue in queues:
            broker.join(queue, timeout=60_000)
        worker.join()
    finally:
        worker.stop()


def convert_chat(rt: Runtime, text: str, *, email: str = "chris@example.com") -> int:
    now = rt.clock()
    with rt.unit_of_work() as session:
        app = services.get_app(session, "demo")
        try:
            agent = services.find_agent(session, app, "ana@example.com")
        except services.NotFound:
            agent = services.add_agent(session, app, "ana@example.com", "Ana", now)
        customer = services.customer_by_address(session, app, email, now, name="Chris")
        conversation, _ = services.start_conversation(session, app, customer, "chat", text, now)
        ticket = services.convert(session, conversation, agent, now, assignee=agent)
        return ticket.id


def events(rt: Runtime, kind: str) -> list[Event]:
    with rt.unit_of_work() as session:
        return list(session.scalars(select(Event).where(Event.kind == kind).order_by(Event.id)))


def test_sweep_and_workers_run_check_summary_and_timers_once(runtime):  # noqa: F811
    rt, broker, clock = runtime
    with rt.unit_of_work() as session:  # a channel that passed its test
        session.execute(update(Channel).values(verified_at=clock.now))
    ticket_id = convert_chat(
        rt,
        "My parcel never arrived. The order number is 4411. "
        "The tracking page says it was delivered to a neighbour, but nobody has it.",
    )
    from gateway import actors
    from gateway.scheduler import Scheduler

    scheduler = Scheduler(rt)
    # Just converted: the conversion's own enqueue is in flight, the sweep leaves it alone.
    counts = scheduler.sweep_once()
    assert counts is not None
    assert (counts["email_checks"], counts["summaries"], counts["sla_timers"]) == (0, 0, 0)

    # Its enqueue was lost; 48 minutes later (80 % of the 1h first response) the sweep finds
    # the check, the summary and the warning. Swept twice before any worker runs: the second
    # sweep finds them due still, but they are in the queue, so it does not enqueue copies.
    clock.now += dt.timedelta(minutes=48)
    queued = []
    for _ in range(2):
        counts = scheduler.sweep_once()
        assert counts is not None
        assert (counts["email_checks"], counts["summaries"], counts["sla_timers"]) == (1, 1, 1)
        if isinstance(broker, StubBroker):
            queued.append(sum(broker.queues[q].qsize() for q in ("checks", "timers")))
    # Held back: the check and the warning (the summary step has its own debounce).
    assert queued in ([], [3, 4])
    # A copy anyway (a redelivery, two leaders at a handover): every actor must act once.
    with rt.unit_of_work() as session:
        timer_ids = session.scalars(select(SlaTimer.id)).all()
    for timer_id in timer_ids:
        actors.fire_sla_timer.send(timer_id)
    actors.check_email.send(ticket_id)
    actors.summarize_ticket.send(ticket_id)

    def checked_summarized_warned() -> bool:
        with rt.unit_of_work() as session:
            ticket = session.get(Ticket, ticket_id)
            return (
                ticket is not None
                and ticket.email_check is not None
                and ticket.summary is not None
                and any(t.warned for t in ticket.timers)
            )

    run_workers(broker, "checks", "timers", until=checked_summarized_warned)

    with rt.unit_of_work() as session:
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None
        assert ticket.email_check is not None and ticket.email_check["ok"] is True
        assert ticket.title == "My parcel never arrived."
        assert ticket.summary is not None and "4411" in ticket.summary
        first = next(t for t in ticket.timers if t.kind.value == "first_response")
        assert first.warned and first.state == TimerState.RUNNING
    assert len(events(rt, "ticket.email_check")) == 1
    assert [e.data["notify"] for e in events(rt, "sla.warning")] == ["assignee"]
    counts = scheduler.sweep_once()
    assert counts is not None
    assert (counts["email_checks"], counts["summaries"], counts["sla_timers"]) == (0, 0, 0)

    # A customer message makes the summary due again, debounced: not while they are typing.
    with rt.unit_of_work() as session:
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None
        services.add_customer_message(
            session,
            ticket.conversation,
            "Update: the neighbour is away until May 20.",
            "chat",
            clock.now,
        )
    clock.now += dt.timedelta(seconds=30)
    assert (scheduler.sweep_once() or {})["summaries"] == 0
    clock.now += dt.timedelta(seconds=31)
    assert (scheduler.sweep_once() or {})["summaries"] == 1
    # ...and at one hour the breach, once.
    clock.now += dt.timedelta(minutes=12)
    scheduler.sweep_once()

    def breached_and_summarized() -> bool:
        with rt.unit_of_work() as session:
            ticket = session.get(Ticket, ticket_id)
            refreshed = ticket is not None and ticket.summary_due_at is None
        return refreshed and bool(events(rt, "sla.breached"))

    run_workers(broker, "checks", "timers", until=breached_and_summarized)
    with rt.unit_of_work() as session:
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None and ticket.summary is not None
        assert "May 20" in ticket.summary or "away" in ticket.summary
        assert ticket.summary_due_at is None
    assert len(events(rt, "sla.breached")) == 1


def test_a_dead_leader_is_replaced_and_a_stopped_one_hands_over_at_once(runtime):  # noqa: F811
    from gateway.scheduler import Scheduler

    rt, _, clock = runtime
    ticket_id = convert_chat(rt, "Hello")
    a, b = Scheduler(rt), Scheduler(rt)
    b.holder = a.holder + "-b"  # two processes
    assert a.sweep_once() is not None
    assert b.sweep_once() is None
    # `a` dies (no more sweeps, no clean stop). Until its lease runs out, nobody leads...
    ttl = dt.timedelta(seconds=max(3 * rt.config.sweep_seconds, 15))
    clock.now += ttl - dt.timedelta(seconds=1)
    assert b.sweep_once() is None
    # ...then `b` takes over, and the due work is swept by it.
    clock.now += dt.timedelta(seconds=2)
    counts = b.sweep_once()
    assert counts is not None and counts["email_checks"] == 1
    assert a.sweep_once() is None  # the old leader, back from the dead, follows
    # A clean stop releases the lease: `a` leads at its very next sweep.
    b.release()
    assert a.sweep_once() is not None
    with rt.unit_of_work() as session:
        assert session.get(Ticket, ticket_id) is not None


# --- a broker restart while 1,000 timers fall due in the same minute --------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OwnRedis:
    """A private redis-server without persistence: a restart loses every queued message."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.tmp = tmp
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS_SERVER
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.tmp),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None


RESTART_MODES = (
    ["stub"]
    + (["own-redis"] if REDIS_SERVER else [])
    + [f"env-{u.split(':')[0]}" for u in BROKERS if not u.startswith("stub")]
)
# The full scale once, on the broker every run has; the restart itself is proven on the other
# brokers with fewer timers, falling due at the same rate.
TIMERS = {"stub": 1000}
FEWER_TIMERS = 200
SWEEP = 1.0
LEAD = dt.timedelta(seconds=5)
SPREAD_PER_TIMER = dt.timedelta(milliseconds=15)  # 1000 timers due within 15 s


@pytest.fixture(params=RESTART_MODES)
def restartable(request, tmp_path) -> Iterator[tuple[str, str, OwnRedis | None]]:
    mode = request.param
    own = None
    if mode == "own-redis":
        own = OwnRedis(tmp_path)
        own.start()
        url = own.url
    elif mode == "stub":
        url = "stub://"
    else:
        url = next(u for u in BROKERS if u.startswith(mode.removeprefix("env-")))
    with exclusive(url):  # a shared Redis or RabbitMQ: one test at a time
        yield mode, url, own
        if own is not None:
            own.kill()
        setup_broker("stub://")


@pytest.mark.slow
def test_broker_restart_while_timers_fall_due_each_fires_once_in_time(restartable, tmp_path):
    mode, url, own = restartable
    timers = TIMERS.get(mode, FEWER_TIMERS)
    spread = SPREAD_PER_TIMER * timers
    broker = setup_broker(url)
    from gateway import actors
    from gateway.scheduler import Scheduler

    default = embedded_default()
    fast = [SlaPolicyConfig(name="fast", first_response="60s")]
    config = default.model_copy(
        update={
            "database_url": f"sqlite:///{tmp_path / 'gw.db'}",
            "broker_url": url,
            "sweep_seconds": SWEEP,
            "apps": [default.apps[0].model_copy(update={"sla_policies": fast})],
        }
    )
    rt = Runtime.create(config)
    actors.bind(rt)
    broker.flush_all()

    # 1,000 (or FEWER_TIMERS) tickets with a 60 s first response...
    start = rt.clock()
    with rt.unit_of_work() as session:
        app = services.get_app(session, "demo")
        agent = services.add_agent(session, app, "ana@example.com", "Ana", start)
        for i in range(timers):
            at = start + dt.timedelta(milliseconds=i)
            customer = services.create_customer(session, app, at, email=f"c{i}@example.com")
            conversation, _ = services.start_conversation(
                session, app, customer, "chat", f"question {i}", at
            )
            services.convert(session, conversation, agent, at)
        # Only the breach is under test: no warnings, checks or summaries in the way.
        session.execute(update(Ticket).values(email_check_due_at=None, summary_due_at=None))
    # ...whose due times are then spread over `spread` from LEAD on, however long creating took
    # on a busy machine: the timers are as if converted a minute before.
    base = rt.clock() + LEAD
    with rt.unit_of_work() as session:
        ids = session.scalars(select(SlaTimer.id).order_by(SlaTimer.id)).all()
        session.execute(
            update(SlaTimer),
            [
                {
                    "id": timer_id,
                    "started_at": base + spread * n / timers - dt.timedelta(seconds=60),
                    "due_at": base + spread * n / timers,
                    "warn_due_at": None,
                }
                for n, timer_id in enumerate(ids)
            ],
        )
    with rt.unit_of_work() as session:
        first_due, last_due = session.execute(
            select(func.min(SlaTimer.due_at), func.max(SlaTimer.due_at))
        ).one()
    assert last_due - first_due < dt.timedelta(minutes=1)

    scheduler = Scheduler(rt)
    worker = dramatiq.Worker(broker, worker_threads=4, worker_timeout=100)
    worker.start()
    scheduler.start()
    try:
        # Let the first part fall due, fire and be enqueued, then restart the broker.
        before = 0
        while before < timers // 10 and rt.clock() < last_due:
            time.sleep(0.1)
            with rt.unit_of_work() as session:
                before = (
                    session.scalar(
                        select(func.count()).where(SlaTimer.state == TimerState.BREACHED)
                    )
                    or 0
                )
        assert 0 < before < timers, f"{before} fired before the restart"
        if own is not None:
            own.kill()  # queued and in-flight messages die with it
            time.sleep(2)
            own.start()
        else:
            # The in-memory broker of a restarted process is empty; on a shared Redis or
            # RabbitMQ, a purge stands in for a restart the test may not do to the machine.
            worker.stop()
            broker.flush_all()
            worker = dramatiq.Worker(broker, worker_threads=4, worker_timeout=100)
            worker.start()
        deadline = last_due + dt.timedelta(seconds=SWEEP + 60)
        while rt.clock() < deadline + dt.timedelta(seconds=5):
            with rt.unit_of_work() as session:
                fired = session.scalar(
                    select(func.count()).where(SlaTimer.state == TimerState.BREACHED)
                )
            if fired == timers:
                break
            time.sleep(0.5)
        time.sleep(2 * SWEEP)  # a few more sweeps: nothing may fire twice
    finally:
        scheduler.stop()
        worker.stop()

    with rt.unit_of_work() as session:
        rows = session.execute(
            select(Event.ticket_id, Event.created_at, Event.data).where(
                Event.kind == "sla.breached"
            )
        ).all()
        due = dict(session.execute(select(SlaTimer.ticket_id, SlaTimer.due_at)).all())
    per_ticket: dict[int, int] = {}
    for ticket_id, _, _ in rows:
        per_ticket[ticket_id] = per_ticket.get(ticket_id, 0) + 1
    assert len(per_ticket) == timers, f"{timers - len(per_ticket)} timers never fired ({mode})"
    assert set(per_ticket.values()) == {1}, "a timer fired twice"
    late = max(created - due[ticket_id] for ticket_id, created, _ in rows)
    print(
        f"\n{mode}: {timers} timers due within {spread.total_seconds():.0f} s, {before} fired "
        f"before the restart; latest effect {late.total_seconds():.1f} s after due"
    )
    assert late <= dt.timedelta(seconds=SWEEP + 60)
    rt.close()


def test_sweep_queries_walk_the_due_time_indexes(runtime):  # noqa: F811
    """Every query the sweep runs reads only due rows: the plans SQLite picks for the statements
    the sweep actually sends use an index on the due time, with no scan and no sort."""
    rt, _, _ = runtime
    if rt.engine.dialect.name != "sqlite":
        pytest.skip("plan check is for SQLite")
    from sqlalchemy import event

    from gateway.scheduler import Scheduler

    statements: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, parameters))

    event.listen(rt.engine, "before_cursor_execute", capture)
    try:
        Scheduler(rt).sweep_once()
    finally:
        event.remove(rt.engine, "before_cursor_execute", capture)
    mine = [
        (q, p)
        for q, p in statements
        if "sla_timers" in q or "_due_at" in q or "snoozed_until <=" in q
    ]
    assert len(mine) == 5  # snoozes, due and warning timers, email checks, summaries
    with rt.engine.connect() as conn:
        for statement, parameters in mine:
            plan = " ".join(
                str(row[-1])
                for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
            )
            assert "USING" in plan and "INDEX" in plan, (statement, plan)
            assert "TEMP B-TREE" not in plan and not plan.startswith("SCAN"), (statement, plan)
