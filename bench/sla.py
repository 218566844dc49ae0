"""SLA sweep benchmark: the scheduler's sweep over 100,000 open tickets with running timers.

    python bench/sla.py [--tickets 100000] [--due 1000] [--repeat 5] [--db sqlite|URL]

Figures, each the median of --repeat runs:

1. sweep, 0 due: `Scheduler.sweep_once()` (every step: inbound, snoozes, SLA timers, email
   checks, summaries, deliveries, outbox, notifications) when no timer is due;
2. sweep, N due: the same with --due timers past their due time (enqueued on the stub broker:
   the ids are handed to actors, which do not run here);
3. the limit it is measured against, in the same run: one full scan of the timers table for
   the same condition (`NOT INDEXED` on SQLite, sequential scan on PostgreSQL) - what a sweep
   would cost if it read every running timer instead of walking the due-time index.

The sweep's cost should follow the due rows: (1) near zero and far below (3); (2) grows with
--due, not with --tickets. With `--db URL` give an empty scratch database.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import delete, insert, select, text, update

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.broker import setup_broker
from gateway.config import embedded_default
from gateway.runtime import Runtime
from tickets.models import (
    App,
    Base,
    Conversation,
    Customer,
    SlaTimer,
    Ticket,
)

CHUNK = 5000


def populate(rt: Runtime, tickets: int, now: dt.datetime) -> None:
    with rt.unit_of_work() as s:
        app_id = s.scalar(select(App.id).where(App.name == "demo"))
        assert app_id is not None
    for start in range(0, tickets, CHUNK):
        ids = range(start + 1, min(start + CHUNK, tickets) + 1)
        with rt.unit_of_work() as s:
            s.execute(
                insert(Customer), [{"id": i, "app_id": app_id, "created_at": now} for i in ids]
            )
            s.execute(
                insert(Conversation),
                [
                    {
                        "id": i,
                        "app_id": app_id,
                        "customer_id": i,
                        "started_via": "chat",
                        "subject": f"question {i}",
                        "state": "open",
                        "created_at": now,
                        "updated_at": now,
                    }
                    for i in ids
                ],
            )
            s.execute(
                insert(Ticket),
                [
                    {
                        "id": i,
                        "app_id": app_id,
                        "number": i,
                        "conversation_id": i,
                        "type": "customer",
                        "status": "open",
                        "priority": "normal",
                        "created_at": now,
                        "updated_at": now,
                    }
                    for i in ids
                ],
            )
            # Two running timers per ticket, due from an hour to three days ahead.
            s.execute(
                insert(SlaTimer),
                [
                    {
                        "ticket_id": i,
                        "kind": kind,
                        "policy": "default",
                        "state": "running",
                        "started_at": now,
                        "due_at": now + dt.timedelta(hours=1 + (i * 7 + k) % 71),
                        "warn_due_at": now + dt.timedelta(minutes=48 + (i * 13 + k) % 4000),
                        "warned": False,
                        "used_seconds": 0,
                        "target_seconds": 3600,
                    }
                    for i in ids
                    for k, kind in enumerate(("first_response", "resolution"))
                ],
            )


def make_due(rt: Runtime, due: int, now: dt.datetime) -> None:
    with rt.unit_of_work() as s:
        ids = s.scalars(
            select(SlaTimer.id).where(SlaTimer.kind == "first_response").limit(due)
        ).all()
        s.execute(
            update(SlaTimer)
            .where(SlaTimer.id.in_(ids))
            .values(due_at=now - dt.timedelta(seconds=30), warn_due_at=None)
        )


def timed_sweeps(rt: Runtime, repeat: int, broker) -> list[float]:
    from gateway.scheduler import Scheduler

    scheduler = Scheduler(rt)
    times = []
    for _ in range(repeat):
        broker.flush_all()
        started = time.perf_counter()
        counts = scheduler.sweep_once()
        times.append(time.perf_counter() - started)
        assert counts is not None
    return times


def step_times(rt: Runtime, repeat: int, now: dt.datetime) -> dict[str, list[float]]:
    """The find part of each sweep step on its own (no enqueue), to show where the time goes."""
    from gateway.scheduler import SWEEP_STEPS

    times: dict[str, list[float]] = {step.name: [] for step in SWEEP_STEPS}
    for _ in range(repeat):
        for step in SWEEP_STEPS:
            started = time.perf_counter()
            with rt.unit_of_work() as s:
                step.find(s, now)
            times[step.name].append(time.perf_counter() - started)
    return times


def full_scan(rt: Runtime, now: dt.datetime, repeat: int) -> list[float]:
    sqlite = rt.engine.dialect.name == "sqlite"
    table = "sla_timers NOT INDEXED" if sqlite else "sla_timers"
    sql = text(
        f"SELECT id FROM {table} WHERE state = 'running' "  # noqa: S608 - constant table name
        "AND (due_at <= :now OR warn_due_at <= :now)"
    )
    times = []
    with rt.engine.connect() as conn:
        if not sqlite:
            conn.execute(text("SET enable_indexscan = off; SET enable_bitmapscan = off"))
        for _ in range(repeat):
            started = time.perf_counter()
            conn.execute(sql, {"now": now if not sqlite else now.isoformat(" ")}).all()
            times.append(time.perf_counter() - started)
    return times


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:8.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--due", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--db", default="sqlite")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db" if args.db == "sqlite" else args.db
        config = embedded_default().model_copy(update={"database_url": url, "data_dir": tmp})
        broker = setup_broker("stub://")
        rt = Runtime.create(config)
        from gateway import actors

        actors.bind(rt)
        now = rt.clock()
        started = time.perf_counter()
        populate(rt, args.tickets, now)
        if rt.engine.dialect.name == "postgresql":
            with rt.engine.begin() as conn:
                conn.execute(text("ANALYZE"))
        print(
            f"{args.tickets:,} open tickets, {2 * args.tickets:,} running timers "
            f"({rt.engine.dialect.name}), created in {time.perf_counter() - started:.1f} s"
        )
        zero = timed_sweeps(rt, args.repeat, broker)
        zero_steps = step_times(rt, args.repeat, now)
        make_due(rt, args.due, now)
        some = timed_sweeps(rt, args.repeat, broker)
        some_steps = step_times(rt, args.repeat, now)
        scan = full_scan(rt, now, args.repeat)
        print(f"sweep, 0 due:        {ms(zero)}")
        print(f"sweep, {args.due:,} due:    {ms(some)}   (finding and enqueueing {args.due:,})")
        print(f"limit: one full scan of the timers for the same condition: {ms(scan)}")
        print("per step (find only)   0 due     " + f"{args.due:,} due")
        for name in zero_steps:
            print(f"  {name:18} {ms(zero_steps[name])}  {ms(some_steps[name])}")
        if rt.engine.dialect.name == "postgresql":  # leave the scratch database empty
            with rt.engine.begin() as conn:
                for table in reversed(Base.metadata.sorted_tables):
                    conn.execute(delete(table))
        rt.close()


if __name__ == "__main__":
    main()
