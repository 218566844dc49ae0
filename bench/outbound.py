"""Outbound benchmark: rendered and submitted customer emails per second, beside bare smtplib
sending to the same SMTP sink in the same run.

    python bench/outbound.py [--emails N] [--threads T] [--broadcast B] [--db sqlite|URL]

The sink is an aiosmtpd `Controller` that only answers 250, in its own process (its own GIL), so
it costs the senders nothing but the loopback round trips. Figures:

1. bare smtplib: one connection, N pre-built messages of the gateway's size sent back to back -
   the ceiling for submitting mail from Python to this sink, which the gateway is measured
   against;
2. render only: `render_checked` from a `CustomerView` (text, HTML, subject, From name), no
   database, no network; the guard's placeholder rendering runs once per data shape and is
   then remembered, so this is the steady-state cost;
3. gateway row by row, one thread: for each of N conversations with an unread agent reply,
   what the single-id actors do - `deliver` (decide, render from the CustomerView, guard, store
   the outbox row with its Message-ID and thread references, one transaction) then
   `send_outbound` (a batch of one: claim, SMTP, mark sent);
4. gateway row by row, T threads: the same work spread over T threads;
5. gateway in batches, one thread: what the sweep's batch actors do - `deliver_batch` for
   `outbound.batch_size` conversations (one transaction) then `send_batch` for the emails it
   stored (claim in one transaction, send one after another over a kept relay connection,
   record in one transaction);
6. gateway in batches, T threads: batches spread over T threads (the pool keeps at most
   `outbound.connections` relay connections);
7. gateway in batches, P worker processes: the batches shared among P processes with a
   runtime each on the same database (default 2, one per core of the machine this was
   written on); on SQLite they take turns at the write lock, on PostgreSQL they do not;
8. tracker broadcast: "tell every linked customer" of a tracker with B linked customers, all
   with an email address, then every email queued and sent in batches over T threads, as the
   sweep and the workers do once the grace period is over (here: none). Timed from the tell
   to the last email marked sent; the bench checks every row is sent.

Every figure comes from the same run on the same machine; the ratio column is against (1).
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import os
import smtplib
import socket
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def run_sink(port: int, ready: Any, stop: Any) -> None:
    from aiosmtpd.controller import Controller

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            return "250 OK"

    controller = Controller(Handler(), hostname=HOST, port=port)
    controller.start()
    ready.set()
    stop.wait()
    controller.stop()


def bare_smtplib(port: int, messages: list[bytes]) -> float:
    start = time.perf_counter()
    with smtplib.SMTP(HOST, port) as smtp:
        for raw in messages:
            smtp.sendmail("support@localhost", ["chris@example.com"], raw)
    return len(messages) / (time.perf_counter() - start)


def make_runtime(db: str, port: int, tmp: Path):
    from gateway.broker import setup_broker

    setup_broker("stub://")
    from gateway import actors
    from gateway.config import embedded_default
    from gateway.runtime import Runtime

    base = embedded_default()
    config = base.model_copy(
        update={
            "database_url": db if db != "sqlite" else f"sqlite:///{tmp / 'bench.db'}",
            "data_dir": str(tmp),
            "delivery": base.delivery.model_copy(
                update={"email_grace_seconds": 0, "widget_online_seconds": 0}
            ),
            "outbound": base.outbound.model_copy(
                update={"transport": "smtp", "host": HOST, "port": port}
            ),
        }
    )
    os.environ.setdefault("GATEWAY_SECRET_KEY", "bench-secret-key-bench-secret-key")
    runtime = Runtime.create(config)
    actors.bind(runtime)
    return runtime


def seed(runtime, count: int) -> list[int]:
    from tickets import services

    now = runtime.clock() - dt.timedelta(minutes=5)
    ids = []
    with runtime.unit_of_work() as s:
        app = services.get_app(s, "demo")
        agent = services.add_agent(s, app, f"ana{time.monotonic_ns()}@localhost", "Ana", now)
        for i in range(count):
            customer = services.create_customer(
                s, app, now, name=f"Customer {i}", email=f"c{i}-{time.monotonic_ns()}@example.com"
            )
            conversation, _ = services.start_conversation(
                s,
                app,
                customer,
                "chat",
                "Hello, my order arrived damaged and the box was crushed. Can you help me?",
                now,
            )
            services.add_agent_message(
                s,
                conversation,
                agent,
                "So sorry about that! A replacement is on its way and should arrive on Friday. "
                "You do not need to send the damaged one back.",
                now,
            )
            ids.append(conversation.id)
    return ids


def gateway_rate(runtime, ids: list[int], threads: int) -> float:
    from gateway.outbound import deliver, outbound_for, send_outbound
    from tickets.models import OutboxState

    ob = outbound_for(runtime)

    def one(cid: int) -> None:
        outcome = deliver(runtime, cid)
        assert outcome.outbox_id is not None, outcome
        assert send_outbound(runtime, outcome.outbox_id) == OutboxState.SENT

    start = time.perf_counter()
    if threads == 1:
        for cid in ids:
            one(cid)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, ids))
    elapsed = time.perf_counter() - start
    ob.transport.close()
    return len(ids) / elapsed


def batched_rate(runtime, ids: list[int], threads: int) -> float:
    from gateway.outbound import outbound_for

    ob = outbound_for(runtime)
    size = runtime.config.outbound.batch_size
    batches = [ids[start : start + size] for start in range(0, len(ids), size)]
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        sent = sum(pool.map(lambda batch: deliver_and_send(runtime, batch), batches))
    elapsed = time.perf_counter() - start
    ob.transport.close()
    assert sent == len(ids), (sent, len(ids))
    return len(ids) / elapsed


def worker_process(db: str, port: int, tmp: str, ids: list[int], ready: Any, go: Any, done: Any):
    """One worker process: its own runtime on the same database, its share of the batches."""
    runtime = make_runtime(db, port, Path(tmp))
    size = runtime.config.outbound.batch_size
    ready.put(True)
    go.wait()
    sent = sum(deliver_and_send(runtime, ids[i : i + size]) for i in range(0, len(ids), size))
    runtime.close()
    done.put(sent)


def processes_rate(db: str, port: int, tmp: Path, ids: list[int], processes: int) -> float:
    """The batches spread over worker processes (as `gateway worker` processes run them),
    timed from the go to the last one's end; starting the processes is not timed."""
    ctx = multiprocessing.get_context("spawn")  # nothing of this process's connections
    ready, done, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    shares = [ids[k::processes] for k in range(processes)]
    workers = [
        ctx.Process(target=worker_process, args=(db, port, str(tmp), share, ready, go, done))
        for share in shares
    ]
    for w in workers:
        w.start()
    for _ in workers:
        ready.get(timeout=120)
    start = time.perf_counter()
    go.set()
    sent = sum(done.get(timeout=3600) for _ in workers)
    elapsed = time.perf_counter() - start
    for w in workers:
        w.join(30)
    assert sent == len(ids), (sent, len(ids))
    return len(ids) / elapsed


def deliver_and_send(runtime, batch: list[int]) -> int:
    """What `deliver_emails` and then `send_outbound_batch` do; the number of emails sent."""
    from gateway.outbound import deliver_batch, send_batch
    from tickets.models import OutboxState

    outcomes = deliver_batch(runtime, batch)
    queued = [o.outbox_id for o in outcomes.values() if o.outbox_id is not None]
    return list(send_batch(runtime, queued).values()).count(OutboxState.SENT)


def broadcast_rate(runtime, count: int, threads: int) -> float:
    """A tracker with `count` linked customers tells them all; every email goes out."""
    from sqlalchemy import func, select

    from tickets import delivery, trackers
    from tickets.models import Agent, Outbox, OutboxState, Ticket

    with runtime.unit_of_work() as s:
        tracker_id, agent_id = seed_tracker(s, runtime, count)
    with runtime.reading() as s:
        before = s.scalar(select(func.count()).where(Outbox.state == OutboxState.SENT))
    size = runtime.config.outbound.batch_size
    start = time.perf_counter()
    with runtime.unit_of_work() as s:
        told = trackers.tell_linked(
            s,
            s.get(Ticket, tracker_id),
            s.get(Agent, agent_id),
            "The login problem is fixed: you can sign in again.",
            runtime.clock(),
        )
    assert len(told.told) == count, (len(told.told), count)
    with ThreadPoolExecutor(threads) as pool:
        while True:  # the sweep: due conversations, handed out in batches
            with runtime.reading() as s:
                due = list(delivery.due_conversations(s, runtime.clock(), 1000))
            if not due:
                break
            batches = [due[i : i + size] for i in range(0, len(due), size)]
            list(pool.map(lambda batch: deliver_and_send(runtime, batch), batches))
    elapsed = time.perf_counter() - start
    with runtime.reading() as s:
        sent = s.scalar(select(func.count()).where(Outbox.state == OutboxState.SENT)) - before
    assert sent == count, (sent, count)
    return count / elapsed


def seed_tracker(session, runtime, count: int) -> tuple[int, int]:
    """A tracker in the demo app with `count` linked customer tickets, by bulk inserts."""
    from sqlalchemy import insert

    from tickets import services
    from tickets.models import (
        AuthorType,
        ConversationState,
        CustomerAddress,
        Message,
        Ticket,
        TicketStatus,
        TicketType,
        Via,
    )

    now = runtime.clock() - dt.timedelta(minutes=5)
    tag = time.monotonic_ns()
    app = services.get_app(session, "demo")
    agent = services.add_agent(session, app, f"ana{tag}@localhost", "Ana", now)
    reporter = services.create_customer(session, app, now, email=f"first{tag}@example.com")
    conversation, _ = services.start_conversation(session, app, reporter, "email", "Down", now)
    tracker = services.convert(session, conversation, agent, now, type="tracker")
    customers = services.insert_rows(
        session,
        services.Customer,
        [{"app_id": app.id, "name": f"Customer {i}", "created_at": now} for i in range(count)],
    )
    session.execute(
        insert(CustomerAddress),
        [
            {
                "app_id": app.id,
                "customer_id": cid,
                "address": f"c{i}-{tag}@example.com",
                "created_at": now,
            }
            for i, cid in enumerate(customers)
        ],
    )
    conversations = services.insert_rows(
        session,
        services.Conversation,
        [
            {
                "app_id": app.id,
                "customer_id": cid,
                "started_via": Via.CHAT,
                "subject": "I cannot log in since this morning",
                "state": ConversationState.OPEN,
                "created_at": now,
                "updated_at": now,
            }
            for cid in customers
        ],
    )
    session.execute(
        insert(Message),
        [
            {
                "conversation_id": cid,
                "author_type": AuthorType.CUSTOMER,
                "via": Via.CHAT,
                "text": "I cannot log in since this morning",
                "created_at": now,
            }
            for cid in conversations
        ],
    )
    first = (session.scalar(select_max_ticket_number(app.id)) or 0) + 1
    session.execute(
        insert(Ticket),
        [
            {
                "app_id": app.id,
                "number": first + i,
                "conversation_id": cid,
                "type": TicketType.CUSTOMER,
                "status": TicketStatus.OPEN,
                "tracker_id": tracker.id,
                "created_at": now,
                "updated_at": now,
            }
            for i, cid in enumerate(conversations)
        ],
    )
    return tracker.id, agent.id


def select_max_ticket_number(app_id: int):
    from sqlalchemy import func, select

    from tickets.models import Ticket

    return select(func.max(Ticket.number)).where(Ticket.app_id == app_id)


def render_rate(runtime, cid: int, count: int) -> tuple[float, bytes]:
    from channels.email.compose import compose
    from channels.email.render import EmailContent, EmailTemplates, render_checked
    from tickets import services
    from tickets.customer_view import customer_view

    with runtime.unit_of_work() as s:
        app = services.get_app(s, "demo")
        conversation = services.get_conversation(s, app, cid)
        view = customer_view(app, conversation, new_ids={conversation.messages[-1].id})
    templates = EmailTemplates()
    content = EmailContent(view, "https://help.example/widget/demo?c=x", "Ana")
    start = time.perf_counter()
    for _ in range(count):
        rendered = render_checked(templates, "reply", "en", content, [17])
    rate = count / (time.perf_counter() - start)
    raw = compose(
        from_name=rendered.from_name,
        from_address="support@localhost",
        to=["chris@example.com"],
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        message_id="<benchbenchbench@localhost>",
        date=dt.datetime.now(dt.UTC),
    )
    return rate, raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--emails", type=int, default=500)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--db", default="sqlite", help="sqlite (a temp file) or a database URL")
    parser.add_argument(
        "--processes", type=int, default=2, help="worker processes for the last batched figure"
    )
    parser.add_argument(
        "--broadcast", type=int, default=10_000, help="linked customers of the tracker (0: skip)"
    )
    args = parser.parse_args()

    port = free_port()
    ready, stop = multiprocessing.Event(), multiprocessing.Event()
    sink = multiprocessing.Process(target=run_sink, args=(port, ready, stop), daemon=True)
    sink.start()
    ready.wait(10)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            runtime = make_runtime(args.db, port, Path(tmp))
            sets = [seed(runtime, args.emails) for _ in range(5)]
            render, sample = render_rate(runtime, sets[0][0], args.emails)
            bare = bare_smtplib(port, [sample] * args.emails)
            single = gateway_rate(runtime, sets[0], 1)
            multi = gateway_rate(runtime, sets[1], args.threads)
            batched = batched_rate(runtime, sets[2], 1)
            batched_multi = batched_rate(runtime, sets[3], args.threads)
            processes = processes_rate(args.db, port, Path(tmp), sets[4], args.processes)
            broadcast = (
                broadcast_rate(runtime, args.broadcast, args.threads) if args.broadcast else 0
            )
            batch_size = runtime.config.outbound.batch_size
            runtime.close()
    finally:
        stop.set()
        sink.join(10)

    db = "sqlite (WAL, temp file)" if args.db == "sqlite" else args.db.split("@")[-1]
    print(f"outbound benchmark: {args.emails} emails of {len(sample):,} bytes, database {db}")
    print(f"{'':56}{'emails/s':>10}{'vs bare':>10}")
    rows = [
        ("bare smtplib, one connection (the limit)", bare),
        ("render only (guard cached per shape), no DB", render),
        ("gateway row by row (deliver + send_outbound), 1 thread", single),
        (f"gateway row by row, {args.threads} threads", multi),
        (f"gateway in batches of {batch_size}, 1 thread", batched),
        (f"gateway in batches of {batch_size}, {args.threads} threads", batched_multi),
        (f"gateway in batches of {batch_size}, {args.processes} processes", processes),
    ]
    if args.broadcast:
        rows.append((f"tracker broadcast to {args.broadcast:,}, {args.threads} threads", broadcast))
    for label, rate in rows:
        print(f"{label:56}{rate:10.1f}{rate / bare:10.2f}")
    if args.broadcast:
        seconds = args.broadcast / broadcast
        print(
            f"tracker broadcast: {args.broadcast:,} customers told and emailed in {seconds:.1f} s"
        )


if __name__ == "__main__":
    main()
