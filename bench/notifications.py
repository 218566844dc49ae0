"""Agent notification benchmark: what a burst of inbound mail turns into for the team, and what
telling them costs the inbound path, in one run.

    python bench/notifications.py [--messages 1000] [--senders 100] [--agents 3] [--db URL]

Inbound: `messages` mails from `senders` customers (each customer's mails thread into one
conversation), stored and processed in batches of 20 as the SMTP path does (`store_batch`,
`process_batch`), on a fresh SQLite database (or an empty scratch database given with --db).
Nobody is assigned, so each of the `agents` is told of every customer message.

Twice, on a fresh database each (after an unmeasured warm-up with 200 of the mails):

1. notifications off: the limit, the inbound path alone;
2. notifications on: the same, with the scheduler's notification step run in between every
   `--sweep` seconds (collect the events, render and queue the due emails to the outbox), as
   `gateway serve` does in its own threads.

It prints the inbound rate of both and their ratio (wall clock, and CPU per mail, which a
machine shared with other work disturbs less), then, for the on run: the notification rows,
the emails queued while the mail came in, and (the clock moved on through every window and hour,
until nothing is pending) all the emails it took to tell everyone everything, per 1,000 inbound,
beside the (event, agent) pairs, which before coalescing were one row and one email each. The
emails are queued, not sent: sending is `bench/outbound.py`'s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import func, select

from gateway.config import AppConfig, ChannelConfig, GatewayConfig, embedded_default
from gateway.db import utcnow
from gateway.inbound import process_batch, store_batch
from gateway.notify import notify_due
from gateway.runtime import Runtime
from tests.support.bursts import thread_mail
from tickets import notifications, services
from tickets.inbound import IncomingMail
from tickets.models import Agent, AgentNotification, Channel, InboundMail, InboundState, Outbox

SUPPORT = "support@acme.test"
BATCH = 20
WORDS = "order parcel delivery invoice refund still waiting please help tracking".split()  # noqa: SIM905


class Clock:
    """Real time, which the drain can move on (through windows and hours) without waiting."""

    def __init__(self) -> None:
        self.offset = dt.timedelta()

    def __call__(self) -> dt.datetime:
        return utcnow() + self.offset


def corpus(messages: int, senders: int) -> list[bytes]:
    mails = []
    for n in range(messages):
        s, k = n % senders, n // senders
        body = " ".join(WORDS[(n + i) % len(WORDS)] for i in range(150))
        msg = thread_mail(s, k, SUPPORT, f"Message {k} of customer {s}.\n\n{body}\n")
        mails.append(msg.as_bytes())
    return mails


def fresh_runtime(args: argparse.Namespace, tmp: Path, name: str) -> Runtime:
    base = embedded_default()
    url = args.db or f"sqlite:///{tmp / f'{name}.db'}"
    if args.db:
        from tests.conftest import reset_postgres

        reset_postgres(args.db).dispose()
    config: GatewayConfig = base.model_copy(
        update={
            "database_url": url,
            "data_dir": str(tmp),
            "apps": [
                AppConfig(
                    name="acme",
                    brand="Acme",
                    channels=[ChannelConfig(name="support", addresses=[SUPPORT])],
                )
            ],
        }
    )
    rt = Runtime.create(config)
    rt.clock = Clock()  # type: ignore[method-assign]
    with rt.unit_of_work() as s:
        app = services.get_app(s, "acme")
        for i in range(args.agents):
            services.add_agent(s, app, f"agent{i}@agents.test", f"Agent {i}", rt.clock())
    return rt


def sweep(rt: Runtime) -> int:
    """The scheduler's notification step and the actor it enqueues: emails queued."""
    now = rt.clock()
    window = dt.timedelta(seconds=rt.config.notifications.coalesce_seconds)
    with rt.unit_of_work() as s:
        notifications.fan_out(s, now, 1000, window)
    queued = 0
    more = True
    while more:
        notified = notify_due(rt)
        queued += len(notified.outbox_ids)
        more = notified.more
    return queued


def inbound(rt: Runtime, mails: list[bytes], sweep_every: float | None) -> tuple[float, float, int]:
    """Store and process every mail in batches; the seconds it took (wall clock and this
    process's CPU) and the emails queued."""
    with rt.unit_of_work() as s:
        [(app_id, channel_id)] = s.execute(select(Channel.app_id, Channel.id)).all()
    queued = 0
    cpu = time.process_time()
    start = last_sweep = time.perf_counter()
    for i in range(0, len(mails), BATCH):
        batch = [
            IncomingMail(raw=raw, source="smtp", app_id=app_id, channel_id=channel_id)
            for raw in mails[i : i + BATCH]
        ]
        process_batch(rt, store_batch(rt, batch))
        if sweep_every is not None and time.perf_counter() - last_sweep >= sweep_every:
            queued += sweep(rt)
            last_sweep = time.perf_counter()
    if sweep_every is not None:
        queued += sweep(rt)
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu
    with rt.unit_of_work() as s:
        done = s.scalar(
            select(func.count(InboundMail.id)).where(InboundMail.state == InboundState.PROCESSED)
        )
    assert done == len(mails), f"{done} of {len(mails)} processed"
    return seconds, cpu, queued


def drain(rt: Runtime) -> tuple[int, float]:
    """Move the clock on to each next due time until nothing is pending: the emails queued, and
    the simulated hours it took."""
    queued = 0
    start = rt.clock()
    while True:
        queued += sweep(rt)
        with rt.unit_of_work() as s:
            due = s.scalar(
                select(func.min(AgentNotification.due_at)).where(
                    AgentNotification.sent_at.is_(None)
                )
            )
        if due is None:
            return queued, (rt.clock() - start).total_seconds() / 3600
        rt.clock.offset += max(due - rt.clock(), dt.timedelta()) + dt.timedelta(seconds=1)  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--senders", type=int, default=100)
    parser.add_argument("--agents", type=int, default=3)
    parser.add_argument("--sweep", type=float, default=1.0, help="seconds between sweeps")
    parser.add_argument("--db", help="an empty scratch database URL (default: SQLite)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-notifications-"))
    mails = corpus(args.messages, args.senders)
    per = 1000 / args.messages
    print(
        f"notification benchmark: {args.messages} inbound mails from {args.senders} customers, "
        f"{args.agents} agents told of each, {args.db or 'SQLite'}"
    )

    def line(label: str, seconds: float, cpu: float, limit: tuple[float, float] | None) -> None:
        ratio = "" if limit is None else f" ({100 * limit[0] / seconds:.0f} % of the limit)"
        cpu_ratio = "" if limit is None else f" ({100 * limit[1] / cpu:.0f} %)"
        print(
            f"{label:<44} {args.messages / seconds:7.1f} msgs/s{ratio:<22} "
            f"{1000 * cpu / args.messages:5.2f} ms CPU per mail{cpu_ratio}"
        )

    # Unmeasured: what the first run alone would pay (the parse workers starting, templates
    # compiling, the database's caches) would count against the limit.
    rt = fresh_runtime(args, tmp, "warm-up")
    inbound(rt, corpus(min(args.messages, 200), args.senders), 0.0)
    rt.close()

    rt = fresh_runtime(args, tmp, "off")
    off, off_cpu, _ = inbound(rt, mails, None)
    rt.close()
    line("1. inbound, notifications off (the limit)", off, off_cpu, None)

    rt = fresh_runtime(args, tmp, "on")
    on, on_cpu, during = inbound(rt, mails, args.sweep)
    line("2. inbound, notifications on", on, on_cpu, (off, off_cpu))
    after, hours = drain(rt)
    limits = rt.config.notifications
    with rt.unit_of_work() as s:
        rows = s.scalar(select(func.count(AgentNotification.id))) or 0
        pairs = s.scalar(select(func.sum(AgentNotification.event_count))) or 0
        emails = (
            s.scalar(select(func.count(Outbox.id)).where(Outbox.kind == "agent_notification")) or 0
        )
        most = max(
            notifications.mails_since(s, agent_id, rt.clock() - dt.timedelta(days=1))
            for agent_id in s.scalars(select(Agent.id))
        )
    rt.close()
    print(
        f"   window {limits.coalesce_seconds:g} s, at most {limits.max_per_hour} emails per agent "
        f"an hour"
    )
    figures = [
        ("(event, agent) pairs: a row and an email each before", pairs * per),
        ("notification rows", rows * per),
        ("emails queued while the mail came in", during * per),
        (f"emails to tell everyone everything (within {hours:.1f} h)", emails * per),
    ]
    for label, figure in figures:
        print(f"   {label:<56} {figure:8.0f} per 1,000 inbound")
    print(f"   ({after} of the emails after the burst; the busiest agent got {most})")


if __name__ == "__main__":
    main()
