"""Inbound SMTP benchmark: the gateway's durable accept against a bare aiosmtpd sink, same run.

Prints, on a generated corpus of ~10 KB messages:
  - the bare sink's accept rate (the limit: aiosmtpd answering 250 without storing anything);
  - the gateway's accept rate (role "ingress": 250 only after the row is committed) and the
    latency from the end of DATA to the 250, p50/p99, under full load and paced at 100 msgs/s;
  - the end-to-end rate to "processed" (role "all": workers parse, thread and store).

Client and server share this machine's cores, for the sink and the gateway alike.

    python bench/inbound.py [--messages 2000] [--concurrency 20] [--size 10240] [--db URL]
"""

from __future__ import annotations

import argparse
import shutil
import smtplib
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiosmtpd.controller import Controller
from sqlalchemy import func, select

from gateway.config import embedded_default
from gateway.server import Services, start
from tickets.models import InboundMail, InboundState


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def corpus(n: int, size: int) -> list[bytes]:
    line = b"Hello, I have a question about my order and the delivery of it.  \r\n"
    body = line * max(1, size // len(line))
    out = []
    for i in range(n):
        reply = i % 3 == 2
        headers = (
            f"From: Customer {i % 500} <customer{i % 500}@example.com>\r\n"
            "To: support@localhost\r\n"
            f"Subject: {'Re: ' if reply else ''}Order question {i - 2 if reply else i}\r\n"
            f"Message-ID: <bench-{i}@example.com>\r\n"
            + (f"In-Reply-To: <bench-{i - 2}@example.com>\r\n" if reply else "")
            + "Date: Tue, 24 Nov 2026 10:00:00 +0000\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        )
        out.append(headers.encode() + body)
    return out


def send_all(
    port: int, messages: list[bytes], concurrency: int, pace: float | None = None
) -> tuple[float, list[float]]:
    """Send every message over `concurrency` sessions; (wall seconds, DATA->250 latencies).

    The latency is the time of smtplib's DATA exchange after the 354: sending the body and
    its terminator on loopback, then waiting for the reply (which the gateway sends only after
    the commit).
    """
    latencies: list[float] = []
    lock = threading.Lock()
    start_at = time.perf_counter()

    def worker(index: int) -> None:
        mine = list(range(index, len(messages), concurrency))
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
            client.ehlo()
            for i in mine:
                if pace is not None:
                    due = start_at + i / pace
                    delay = due - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                client.mail("customer@example.com")
                client.rcpt("support@localhost")
                client.putcmd("data")
                code, _ = client.getreply()
                if code != 354:
                    raise RuntimeError(f"DATA answered {code}")
                payload = smtplib._quote_periods(messages[i])  # type: ignore[attr-defined]
                if not payload.endswith(b"\r\n"):
                    payload += b"\r\n"
                t0 = time.perf_counter()
                client.send(payload + b".\r\n")
                code, reply = client.getreply()
                t1 = time.perf_counter()
                if code != 250:
                    raise RuntimeError(f"message {i} refused: {code} {reply!r}")
                with lock:
                    latencies.append(t1 - t0)

    with ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(worker, k) for k in range(concurrency)]:
            future.result()
    return time.perf_counter() - start_at, latencies


class Sink:
    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        return "250 OK"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000


def gateway_services(tmp: Path, db: str | None, role: str) -> Services:
    base = embedded_default()
    config = base.model_copy(
        update={
            "database_url": db or f"sqlite:///{tmp / f'bench-{role}.db'}",
            "data_dir": str(tmp),
            "smtp": base.smtp.model_copy(update={"listen": f"127.0.0.1:{free_port()}"}),
            "worker_threads": 4,
            "sweep_seconds": 1.0,
        }
    )
    return start(config, role)  # type: ignore[arg-type]


def port_of(services: Services) -> int:
    return int(services.runtime.config.smtp.listen.rpartition(":")[2])


def count(services: Services, state: InboundState | None = None) -> int:
    with services.runtime.unit_of_work() as session:
        query = select(func.count()).select_from(InboundMail)
        if state is not None:
            query = query.where(InboundMail.state == state)
        return int(session.scalar(query) or 0)


def timed(label: str, fn: Callable[[], tuple[float, list[float]]]) -> tuple[float, list[float]]:
    print(f"  running: {label} ...", file=sys.stderr, flush=True)
    return fn()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--size", type=int, default=10_240)
    parser.add_argument("--paced-seconds", type=float, default=8.0)
    parser.add_argument("--db", help="database URL (default: a temporary SQLite file)")
    args = parser.parse_args()
    messages = corpus(args.messages, args.size)
    tmp = Path(tempfile.mkdtemp(prefix="bench-inbound-"))
    rows: list[tuple[str, str, str]] = []
    try:
        port = free_port()
        sink = Controller(Sink(), hostname="127.0.0.1", port=port)
        sink.start()
        try:
            wall, _ = timed("bare sink", lambda: send_all(port, messages, args.concurrency))
        finally:
            sink.stop()
        sink_rate = len(messages) / wall
        rows.append(("bare aiosmtpd sink: accept rate", f"{sink_rate:,.0f} msgs/s", "limit"))

        ingress = gateway_services(tmp, args.db, "ingress")
        try:
            wall, lat = timed(
                "gateway accept", lambda: send_all(port_of(ingress), messages, args.concurrency)
            )
            stored = count(ingress)
            paced_n = int(100 * args.paced_seconds)
            _, paced = timed(
                "gateway paced at 100 msgs/s",
                lambda: send_all(port_of(ingress), messages[:paced_n], 10, pace=100.0),
            )
        finally:
            ingress.stop()
        if stored != len(messages):
            print(f"error: {stored} rows stored for {len(messages)} messages", file=sys.stderr)
            return 1
        rate = len(messages) / wall
        rows += [
            (
                "gateway: accept rate (durable commit)",
                f"{rate:,.0f} msgs/s ({rate / sink_rate:.0%} of sink)",
                ">= 80 % of sink",
            ),
            (
                f"gateway: DATA->250 under full load (c={args.concurrency})",
                f"p50 {pct(lat, 50):.1f} ms, p99 {pct(lat, 99):.1f} ms",
                "",
            ),
            (
                "gateway: DATA->250 paced at 100 msgs/s",
                f"p50 {pct(paced, 50):.1f} ms, p99 {pct(paced, 99):.1f} ms",
                "p99 < 50 ms",
            ),
        ]

        full = gateway_services(tmp, None if args.db is None else args.db, "all")
        try:
            started = time.perf_counter()
            timed("end to end", lambda: send_all(port_of(full), messages, args.concurrency))
            while count(full, InboundState.PENDING) > 0:
                time.sleep(0.05)
            e2e = time.perf_counter() - started
            quarantined = count(full, InboundState.QUARANTINED)
        finally:
            full.stop()
        rows.append(
            (
                "end to end: accepted -> processed",
                f"{len(messages) / e2e:,.0f} msgs/s ({quarantined} quarantined)",
                ">= 300 msgs/s",
            )
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(
        f"\ninbound benchmark: {len(messages)} messages of ~{args.size // 1024} KB, "
        f"{args.concurrency} concurrent SMTP sessions, database "
        f"{'SQLite (WAL)' if args.db is None else args.db.split('@')[-1]}"
    )
    width = max(len(r[0]) for r in rows)
    for name, value, aim in rows:
        print(f"  {name:<{width}}  {value:<32} {aim}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
