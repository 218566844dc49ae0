"""Outbound benchmark: rendered and submitted customer emails per second, beside bare smtplib
sending to the same SMTP sink in the same run.

    python bench/outbound.py [--emails N] [--threads T] [--db sqlite|URL]

The sink is an aiosmtpd `Controller` that only answers 250, in its own process (its own GIL), so
it costs the senders nothing but the loopback round trips. Figures:

1. bare smtplib: one connection, N pre-built messages of the gateway's size sent back to back -
   the ceiling for submitting mail from Python to this sink, which the gateway is measured
   against;
2. render only: `render_checked` from a `CustomerView` (text, HTML, subject, From name), no
   database, no network; the guard's placeholder rendering runs once per data shape and is
   then remembered, so this is the steady-state cost;
3. gateway, one thread: for each of N conversations with an unread agent reply, what the actors
   do - `deliver` (decide, render from the CustomerView, guard, store the outbox row with its
   Message-ID and thread references, one transaction) then `send_outbound` (claim, SMTP, mark
   sent, three short transactions);
4. gateway, T threads: the same work spread over T threads, as the worker threads run it.

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
    args = parser.parse_args()

    port = free_port()
    ready, stop = multiprocessing.Event(), multiprocessing.Event()
    sink = multiprocessing.Process(target=run_sink, args=(port, ready, stop), daemon=True)
    sink.start()
    ready.wait(10)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            runtime = make_runtime(args.db, port, Path(tmp))
            one_thread = seed(runtime, args.emails)
            many_threads = seed(runtime, args.emails)
            render, sample = render_rate(runtime, one_thread[0], args.emails)
            bare = bare_smtplib(port, [sample] * args.emails)
            single = gateway_rate(runtime, one_thread, 1)
            multi = gateway_rate(runtime, many_threads, args.threads)
            runtime.close()
    finally:
        stop.set()
        sink.join(10)

    db = "sqlite (WAL, temp file)" if args.db == "sqlite" else args.db.split("@")[-1]
    print(f"outbound benchmark: {args.emails} emails of {len(sample):,} bytes, database {db}")
    print(f"{'':44}{'emails/s':>10}{'vs bare':>10}")
    rows = [
        ("bare smtplib, one connection (the limit)", bare),
        ("render only (guard cached per shape), no DB", render),
        ("gateway deliver + send, 1 thread", single),
        (f"gateway deliver + send, {args.threads} threads", multi),
    ]
    for label, rate in rows:
        print(f"{label:44}{rate:10.1f}{rate / bare:10.2f}")


if __name__ == "__main__":
    main()
