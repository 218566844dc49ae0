"""Inbound SMTP benchmark: the gateway's accept path against a bare aiosmtpd sink, in one run.

    python bench/inbound.py [--messages N] [--concurrency C] [--size 10240] [--db sqlite|URL]
    python bench/inbound.py --phases sink,scaled --worker-processes 1,2,4 --broker redis://...

Four figures, each on a generated corpus of realistic ~10 KB plain-text messages to
support@localhost (distinct senders and subjects, a third of them replies threaded with
In-Reply-To/References to an earlier message of the corpus):

1. bare sink: an aiosmtpd `Controller` whose `handle_DATA` only answers 250 - the ceiling of
   aiosmtpd on this machine, which the gateway is measured against;
2. gateway accept: `gateway.server.start(config, "ingress")` (SMTP server + batch writer, a fresh
   SQLite WAL database by default) under the same load: accept rate, latency, ratio to the sink;
3. paced latency: the same gateway at a fixed offered rate (100 msgs/s for 10 s);
4. end to end: `start(config, "all")` (stub broker workers + scheduler in-process), the time
   until every stored `inbound_mail` row is `processed`.
5. scaled (only when asked for): the same end to end, with this process as `serve --role
   ingress` and 1, 2 and 4 (`--worker-processes`) `gateway worker` processes beside it in
   turn on a real broker (Redis by default; its queues under a namespace of the run's own), all
   on the same database: the deployment DESIGN.md describes for load, and whether adding a
   worker process ever lowers the rate.

The load generator runs in a separate process (its own interpreter and GIL) so that it competes
with the server for the machine's cores but not for the server's GIL, in the same way for the
sink and the gateway. It is a minimal asyncio SMTP client rather than smtplib-in-threads: it
costs less CPU per message (so the sink figure is aiosmtpd's limit, not the client's), and it
can stamp the moment it sends the end-of-data terminator. Latency is measured from writing
".\\r\\n" (the body already written) until the final reply to DATA has been read; it therefore
includes the server reading the last of the 10 KB body from the loopback socket.

The server runs in this process, whose main thread only waits meanwhile, so this process's CPU
time is the server's: the table shows CPU per message for the server and the client, which says
whether a figure is bound by the cores or by the server's single GIL.

With `--db URL` (e.g. postgresql+psycopg://...) every phase uses that database: give it an empty
scratch database. The bench marks the rows of its ingress-only phases `discarded` so that the
end-to-end phase does not process them as well.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import math
import multiprocessing
import os
import random
import shutil
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any

RCPT = "support@localhost"
HOST = "127.0.0.1"

# ---------------------------------------------------------------------------------------------
# Corpus

# Word lists as text (split once at import): readable, and short to edit.
_WORD_TEXT = """
order parcel delivery invoice refund account password login subscription plan upgrade cancel
tracking number shipment warehouse address billing card payment charged twice support team
please thanks hello regards error message screen app update version phone laptop browser
settings email notification missing damaged replacement return label customer service week
yesterday today tomorrow morning evening urgent help issue problem still waiting reply answer
ticket case reference attached screenshot receipt discount coupon code expired works broken
slow fast again first second last time because when could would should really quite very the
a an and or but if then so to of in on at for with from by about as is was are were be been
have has had do did not no yes my your our
"""
_NAME_TEXT = """
ana ben chris dana eli fatima george hana ivan julia kenji lena marco nina omar
|smith garcia muller rossi kowalski nguyen dubois silva jensen tanaka okafor
"""
_TOPIC_TEXT = """Parcel missing|Charged twice for my order|Cannot log in|Refund not received
|Wrong item delivered|Cancel my subscription|App crashes on start|Invoice address wrong
|Discount code rejected|Delivery delayed again|Password reset email never arrives
|Damaged package|Upgrade plan question|Tracking number does not work"""
_WORDS = _WORD_TEXT.split()
_FIRST, _LAST = (part.split() for part in _NAME_TEXT.split("|"))
_TOPICS = [topic.strip() for topic in _TOPIC_TEXT.split("|")]


@dataclass(frozen=True)
class Mail:
    """One pre-rendered message: envelope sender and the dot-stuffed DATA body (CRLF, ends CRLF)."""

    sender: str
    data: bytes
    thread: int  # index of the thread's first message: replies share it


def _text_lines(rng: random.Random, count: int) -> list[str]:
    # A pool of prose lines, reused across messages: building 10 KB of fresh random words per
    # message would make corpus generation slower than the benchmark itself.
    lines = []
    for _ in range(count):
        words = rng.choices(_WORDS, k=rng.randint(8, 13))
        lines.append(" ".join(words).capitalize() + ".")
    return lines


def make_corpus(count: int, size: int, seed: int, run_id: str, reply_share: float) -> list[Mail]:
    """`count` messages of about `size` bytes; `reply_share` of them reply to an earlier one."""
    rng = random.Random(seed)
    pool = _text_lines(rng, 400)
    roots: list[int] = []  # indexes of thread-starting messages
    latest: dict[int, int] = {}  # thread root -> index of its latest message
    info: list[tuple[str, str, str, str, list[str]]] = []  # sender, name, subject, msgid, refs
    out: list[Mail] = []
    for i in range(count):
        # Replies go to a thread started a while ago (not the message just before), as a
        # customer answers after the agent did; the first few messages all start threads.
        if len(roots) > 10 and rng.random() < reply_share:
            thread = rng.choice(roots[: len(roots) - 5])
            sender, name, subject, _, _ = info[thread]
            # Thread on the latest message of that thread: a chain, like real back-and-forth.
            parent = latest[thread]
            refs = [*info[parent][4], info[parent][3]][-10:]
            subject = subject if subject.startswith("Re: ") else f"Re: {subject}"
        else:
            first, last = rng.choice(_FIRST), rng.choice(_LAST)
            name = f"{first.title()} {last.title()}"
            sender = f"{first}.{last}.{i}@customer{i % 97}.example"
            subject = f"{rng.choice(_TOPICS)} (#{run_id}-{i})"
            refs = []
            thread = i
            roots.append(i)
        latest[thread] = i
        msgid = f"<{run_id}.{i}@{sender.rpartition('@')[2]}>"
        info.append((sender, name, subject, msgid, refs))
        headers = [
            f"From: {name} <{sender}>",
            f"To: Support <{RCPT}>",
            f"Subject: {subject}",
            f"Message-ID: {msgid}",
            f"Date: {formatdate(localtime=False)}",
            "MIME-Version: 1.0",
            "Content-Type: text/plain; charset=utf-8",
            "Content-Transfer-Encoding: 7bit",
        ]
        if refs:
            headers.insert(4, f"In-Reply-To: {refs[-1]}")
            headers.insert(5, f"References: {' '.join(refs)}")
        head = "\r\n".join(headers) + "\r\n\r\n"
        body_lines = ["Hello,", ""] if not refs else ["Hi again,", ""]
        length = len(head) + 16
        while length < size - 40:
            line = rng.choice(pool)
            body_lines.append(line)
            length += len(line) + 2
        body_lines += ["", "Regards,", name]
        text = head + "\r\n".join(body_lines) + "\r\n"
        # Dot-stuffing (RFC 5321 4.5.2), done here so that the client does no work while timed.
        data = "\r\n".join(
            "." + line if line.startswith(".") else line for line in text.split("\r\n")
        )
        out.append(Mail(sender=sender, data=data.encode("ascii"), thread=thread))
    return out


# ---------------------------------------------------------------------------------------------
# Load generator (runs in the child process)


class SmtpFailure(Exception):
    """An SMTP reply the bench did not expect (4xx/5xx) or a broken session."""


@dataclass
class LoadResult:
    sent: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # end of DATA -> reply, seconds
    max_lag: float = 0.0  # paced mode: how far behind schedule a send started, seconds
    client_cpu: float = 0.0  # CPU seconds of the load generator while sending
    server_cpu: float = 0.0  # CPU seconds of the bench process (the server) meanwhile


_CORPUS: list[Mail] = []


def prepare(count: int, size: int, seed: int, run_id: str, reply_share: float) -> tuple[int, int]:
    """Build the corpus in the client process ahead of time; its byte and thread counts."""
    global _CORPUS
    _CORPUS = make_corpus(count, size, seed, run_id, reply_share)
    return sum(len(m.data) for m in _CORPUS), len({m.thread for m in _CORPUS})


async def _reply(reader: asyncio.StreamReader, expect: int, what: str) -> None:
    while True:
        line = await reader.readline()
        if not line:
            raise SmtpFailure(f"{what}: connection closed by the server")
        if line[3:4] != b"-":
            break
    code = int(line[:3]) if line[:3].isdigit() else 0
    if code != expect:
        raise SmtpFailure(f"{what}: expected {expect}, got {line.decode(errors='replace').strip()}")


async def _session(
    port: int, jobs: asyncio.Queue[Mail | None], result: LoadResult, ready: asyncio.Event
) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        await _reply(reader, 220, "greeting")
        writer.write(b"EHLO bench.localhost\r\n")
        await _reply(reader, 250, "EHLO")
        ready.set()
        perf = time.perf_counter
        while (mail := await jobs.get()) is not None:
            writer.write(f"MAIL FROM:<{mail.sender}>\r\n".encode())
            await _reply(reader, 250, "MAIL FROM")
            writer.write(f"RCPT TO:<{RCPT}>\r\n".encode())
            await _reply(reader, 250, "RCPT TO")
            writer.write(b"DATA\r\n")
            await _reply(reader, 354, "DATA")
            writer.write(mail.data)
            await writer.drain()
            start = perf()
            writer.write(b".\r\n")
            await _reply(reader, 250, "end of DATA")
            result.latencies.append(perf() - start)
            result.sent += 1
        writer.write(b"QUIT\r\n")
        await _reply(reader, 221, "QUIT")
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _load(port: int, concurrency: int, rate: float | None) -> LoadResult:
    result = LoadResult()
    jobs: asyncio.Queue[Mail | None] = asyncio.Queue()
    readies = [asyncio.Event() for _ in range(concurrency)]
    tasks = [asyncio.ensure_future(_session(port, jobs, result, ready)) for ready in readies]
    # Connect and greet before the clock starts: the figure is about messages, not handshakes.
    waiting = asyncio.ensure_future(asyncio.gather(*(r.wait() for r in readies)))
    done, _ = await asyncio.wait([waiting, *tasks], return_when=asyncio.FIRST_COMPLETED)
    if waiting not in done:
        waiting.cancel()
        for task in tasks:
            task.cancel()
        for task in done:
            task.result()  # raises the session's failure
    start = time.perf_counter()
    if rate is None:
        for mail in _CORPUS:
            jobs.put_nowait(mail)
    else:
        # Open loop: message i is due at start + i/rate whatever the replies; a session picks it
        # up when free (with a few sessions at 100/s one always is, so the lag stays ~0).
        async def pace() -> None:
            for i, mail in enumerate(_CORPUS):
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    result.max_lag = max(result.max_lag, -delay)
                jobs.put_nowait(mail)

        tasks.append(asyncio.ensure_future(pace()))
        await tasks[-1]
    for _ in range(concurrency):
        jobs.put_nowait(None)
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        raise
    result.seconds = time.perf_counter() - start
    return result


def send_corpus(port: int, concurrency: int, rate: float | None = None) -> LoadResult:
    """Send the prepared corpus over `concurrency` sessions (at `rate` msgs/s if given)."""
    cpu = time.process_time()
    result = asyncio.run(_load(port, concurrency, rate))
    result.client_cpu = time.process_time() - cpu
    return result


# ---------------------------------------------------------------------------------------------
# Servers (run in the bench's own process)


class SinkHandler:
    """The bare sink: accept everything, store nothing."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def sink_server() -> Iterator[int]:
    from aiosmtpd.controller import Controller

    port = free_port()
    controller = Controller(SinkHandler(), hostname=HOST, port=port, ready_timeout=10)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


@dataclass
class Gateway:
    services: Any
    port: int
    data_dir: Path
    database_url: str


@contextlib.contextmanager
def gateway_server(
    db: str,
    role: str,
    concurrency: int,
    worker_threads: int | None = None,
    broker_url: str | None = None,
    namespace: str = "",
) -> Iterator[Gateway]:
    """The gateway in this process with the embedded default config on a free port."""
    from gateway.config import embedded_default
    from gateway.server import start

    tmp = Path(tempfile.mkdtemp(prefix=f"bench-inbound-{role}-"))
    try:
        base = embedded_default()
        port = free_port()
        smtp = base.smtp.model_copy(
            update={
                "listen": f"{HOST}:{port}",
                # Every bench session comes from 127.0.0.1: lift the per-peer cap to the load.
                "max_connections_per_peer": max(base.smtp.max_connections_per_peer, concurrency),
                "max_connections": max(base.smtp.max_connections, concurrency),
            }
        )
        url = f"sqlite:///{tmp / 'gateway.db'}" if db == "sqlite" else db
        http = base.http.model_copy(update={"listen": f"{HOST}:{free_port()}"})
        update: dict[str, Any] = {
            "database_url": url,
            "data_dir": str(tmp),
            "smtp": smtp,
            "http": http,
        }
        if worker_threads:
            update["worker_threads"] = worker_threads
        if broker_url:
            update["broker_url"] = broker_url
            update["broker_namespace"] = namespace
        services = start(base.model_copy(update=update), role)  # type: ignore[arg-type]
        try:
            yield Gateway(services, port, tmp, url)
        finally:
            services.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def inbound_counts(gateway: Gateway, after_id: int) -> dict[str, int]:
    from sqlalchemy import func, select

    from tickets.models import InboundMail

    # A read-only session: the bench watches without taking the gateway's write lock.
    with gateway.services.runtime.reading() as session:
        rows = session.execute(
            select(InboundMail.state, func.count())
            .where(InboundMail.id > after_id)
            .group_by(InboundMail.state)
        )
        return {str(state): int(n) for state, n in rows}


def max_inbound_id(gateway: Gateway) -> int:
    from sqlalchemy import func, select

    from tickets.models import InboundMail

    with gateway.services.runtime.reading() as session:
        return int(session.scalar(select(func.max(InboundMail.id))) or 0)


def discard_pending(gateway: Gateway, after_id: int) -> None:
    """Shared database only: keep the ingress phases' rows out of the end-to-end phase."""
    from sqlalchemy import update

    from tickets.models import InboundMail, InboundState

    with gateway.services.runtime.unit_of_work() as session:
        session.execute(
            update(InboundMail)
            .where(InboundMail.id > after_id, InboundMail.state == InboundState.PENDING)
            .values(state=InboundState.DISCARDED)
        )


def count_conversations(gateway: Gateway, after_id: int) -> int:
    from sqlalchemy import func, select

    from tickets.models import Message

    # Conversations that received this run's mail: a check that threading happened.
    with gateway.services.runtime.unit_of_work() as session:
        return int(
            session.scalar(
                select(func.count(func.distinct(Message.conversation_id))).where(
                    Message.inbound_mail_id > after_id
                )
            )
            or 0
        )


# ---------------------------------------------------------------------------------------------
# Orchestration


class BenchError(Exception):
    pass


@dataclass
class Row:
    figure: str
    value: str
    aim: str
    limit: str
    ok: bool | None  # None: informational


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile of `values` (seconds) in milliseconds."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1] * 1000


def ms_pair(values: list[float]) -> str:
    return f"{pct(values, 50):.2f} / {pct(values, 99):.2f} ms"


def cpu_text(result: LoadResult) -> str:
    n = len(result.latencies) or 1
    return (
        f"{result.server_cpu / n * 1000:.2f} / {result.client_cpu / n * 1000:.2f} ms, "
        f"{(result.server_cpu + result.client_cpu) / result.seconds:.2f} cores busy"
    )


class Client:
    """The load-generator process, reused across phases (spawned once, imports once)."""

    def __init__(self, args: argparse.Namespace, run_id: str) -> None:
        self.args = args
        self.run_id = run_id
        self.seed = args.seed
        self.pool = ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn")
        )
        self.bytes = self.threads = 0

    def prepare(self, count: int) -> None:
        # A new seed and id prefix per corpus: no Message-ID repeats within a run.
        self.seed += 1
        self.bytes, self.threads = self.pool.submit(
            prepare, count, self.args.size, self.seed, f"{self.run_id}{self.seed}", 1 / 3
        ).result()

    def start(self, port: int, rate: float | None = None) -> Future[LoadResult]:
        return self.pool.submit(send_corpus, port, self.args.concurrency, rate)

    def run(self, port: int, rate: float | None = None) -> LoadResult:
        # The main thread only waits here, so this process's CPU time is the server's.
        cpu = time.process_time()
        result = self.start(port, rate).result()
        result.server_cpu = time.process_time() - cpu
        return result

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def log(msg: str) -> None:
    print(f"  .. {msg}", file=sys.stderr, flush=True)


@dataclass
class Limit:
    """The bare sink's figures of this run, quoted next to the gateway's."""

    rate: float | None = None
    latencies: list[float] = field(default_factory=list)

    @property
    def rate_text(self) -> str:
        return f"{self.rate:,.0f} msgs/s" if self.rate else "(sink not run)"

    @property
    def latency_text(self) -> str:
        return ms_pair(self.latencies) if self.latencies else "(sink not run)"


def phase_sink(args: argparse.Namespace, client: Client, rows: list[Row]) -> Limit:
    log(f"bare sink: {args.messages} messages over {args.concurrency} sessions")
    with sink_server() as port:
        client.prepare(args.warmup)
        client.run(port)
        client.prepare(args.messages)
        sink = client.run(port)
    limit = Limit(sink.sent / sink.seconds, sink.latencies)
    rows.append(
        Row(f"bare sink accept rate (C={args.concurrency})", limit.rate_text, "-", "-", None)
    )
    rows.append(
        Row("bare sink end-of-DATA->250 p50 / p99", ms_pair(sink.latencies), "-", "-", None)
    )
    rows.append(Row("  CPU per msg server / client", cpu_text(sink), "-", "-", None))
    rows.append(
        Row("message size (mean)", f"{client.bytes / args.messages:,.0f} bytes", "-", "-", None)
    )
    return limit


def phase_ingress(
    args: argparse.Namespace, client: Client, rows: list[Row], limit: Limit, phases: set[str]
) -> None:
    n, c = args.messages, args.concurrency
    with gateway_server(args.db, "ingress", c) as gw:
        first = max_inbound_id(gw)
        client.prepare(args.warmup)
        client.run(gw.port)
        expected = args.warmup
        if "accept" in phases:
            log(f"gateway ingress ({args.db}): {n} messages over {c} sessions")
            client.prepare(n)
            acc = client.run(gw.port)
            expected += n
            rate = acc.sent / acc.seconds
            rows.append(
                Row("gateway accept rate", f"{rate:,.0f} msgs/s", "-", limit.rate_text, None)
            )
            if limit.rate:
                ratio = rate / limit.rate
                rows.append(
                    Row("gateway / bare sink", f"{ratio:.0%}", ">= 80 %", "100 %", ratio >= 0.8)
                )
            rows.append(
                Row(
                    "gateway end-of-DATA->250 p50 / p99",
                    ms_pair(acc.latencies),
                    "-",
                    limit.latency_text,
                    None,
                )
            )
            rows.append(Row("  CPU per msg server / client", cpu_text(acc), "-", "-", None))
        if "paced" in phases:
            paced_n = max(1, int(args.paced_rate * args.paced_seconds))
            log(f"gateway ingress paced: {args.paced_rate:g} msgs/s for {args.paced_seconds:g} s")
            client.prepare(paced_n)
            paced = client.run(gw.port, args.paced_rate)
            expected += paced_n
            p99 = pct(paced.latencies, 99)
            what = f"paced {args.paced_rate:g} msgs/s end-of-DATA->250"
            rows.append(Row(f"{what} p50", f"{pct(paced.latencies, 50):.2f} ms", "-", "-", None))
            rows.append(Row(f"{what} p99", f"{p99:.2f} ms", "< 50 ms", "-", p99 < 50))
            if paced.max_lag > 0.05:
                lag = f"{paced.max_lag * 1000:.0f} ms"
                rows.append(Row("paced: sending fell behind by", lag, "-", "-", None))
        # Every 250 must stand for a committed row: count them.
        stored = sum(inbound_counts(gw, first).values())
        if stored != expected:
            raise BenchError(f"ingress: {expected} messages accepted but {stored} rows stored")
        if args.db != "sqlite":
            discard_pending(gw, first)


def phase_e2e(args: argparse.Namespace, client: Client, rows: list[Row], limit: Limit) -> None:
    log(f"gateway all ({args.db}): {args.messages} messages, waiting until processed")
    with gateway_server(args.db, "all", args.concurrency, args.worker_threads) as gw:
        measure_e2e(args, client, rows, limit, gw, "end to end: all processed")


def phase_scaled(args: argparse.Namespace, client: Client, rows: list[Row], limit: Limit) -> None:
    """`serve --role ingress` here and 1, 2, 4 ... `gateway worker` processes beside it in turn,
    on a real broker: whether adding a worker process ever lowers the end-to-end rate."""
    counts = args.worker_processes
    # A queue namespace of this run's own: another run's jobs (naming rows of another database)
    # or another user's workers on the same broker server never meet ours.
    namespace = f"bench{uuid.uuid4().hex[:10]}"
    log(f"gateway ingress + {counts} worker processes on {args.broker}: {args.messages} messages")
    rates: list[tuple[int, float]] = []
    try:
        with gateway_server(
            args.db, "ingress", args.concurrency, broker_url=args.broker, namespace=namespace
        ) as gw:
            for n in counts:
                log(f"  {n} worker processes")
                with worker_processes(gw, args.broker, namespace, n):
                    figure = f"end to end: ingress + {n} worker processes"
                    rates.append((n, measure_e2e(args, client, rows, limit, gw, figure)))
    finally:
        _drop_queues(args.broker, namespace)
    steps = [f"{n}: {rate:,.0f}" for n, rate in rates]
    # Runs on a shared machine vary by a few percent; a drop beyond that is a drop.
    never_lower = all(b >= 0.95 * a for (_, a), (_, b) in itertools.pairwise(rates))
    rows.append(
        Row(
            "  msgs/s by worker processes",
            ", ".join(steps),
            "each >= the one before (-5 % noise)",
            "-",
            never_lower if len(rates) > 1 else None,
        )
    )


def _drop_queues(url: str, namespace: str) -> None:
    """RabbitMQ keeps a declared queue after its consumers left: delete the run's queues.
    (Redis drops an empty list by itself.)"""
    if not url.startswith("amqp"):
        return
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        for queue in ("inbound", "timers", "checks", "outbound", "default"):
            for suffix in ("", ".DQ", ".XQ"):
                channel.queue_delete(f"{namespace}.{queue}{suffix}")
    finally:
        connection.close()


@contextlib.contextmanager
def worker_processes(gw: Gateway, broker_url: str, namespace: str, count: int) -> Iterator[None]:
    import subprocess

    config = gw.data_dir / "workers.toml"
    config.write_text(
        f'database_url = "{gw.database_url}"\ndata_dir = "{gw.data_dir}"\n'
        f'broker_url = "{broker_url}"\nbroker_namespace = "{namespace}"\n'
        f'[http]\nlisten = "{HOST}:{free_port()}"\n'
        '[[apps]]\nname = "demo"\nbrand = "Demo"\n'
        '[[apps.channels]]\nname = "support"\naddresses = ["support@localhost"]\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "gateway", "--config", str(config), "worker"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for _ in range(count)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if "running" not in line:
                raise BenchError(f"gateway worker did not start: {line!r}")
        yield
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def measure_e2e(
    args: argparse.Namespace,
    client: Client,
    rows: list[Row],
    limit: Limit,
    gw: Gateway,
    figure: str,
) -> float:
    """Append the end-to-end rows of `figure`; the rate in msgs/s."""
    n = args.messages
    # Warm-up through the whole pipeline (imports, caches), then measure from idle.
    before = max_inbound_id(gw)
    client.prepare(args.warmup)
    client.run(gw.port)
    wait_processed(gw, before, args.warmup, args.timeout)
    first = max_inbound_id(gw)
    client.prepare(n)
    start = time.perf_counter()
    cpu = time.process_time()
    future = client.start(gw.port)
    wait_processed(gw, first, n, args.timeout, future)
    elapsed = time.perf_counter() - start
    server_cpu = time.process_time() - cpu
    sent = future.result()
    rate = n / elapsed
    rows.append(
        Row(
            figure,
            f"{rate:,.0f} msgs/s ({elapsed:.1f} s)",
            ">= 300 msgs/s",
            limit.rate_text,
            rate >= 300,
        )
    )
    rows.append(
        Row(
            "  meanwhile accepted at / p50 / p99",
            f"{n / sent.seconds:,.0f} msgs/s / {ms_pair(sent.latencies)}",
            "-",
            "-",
            None,
        )
    )
    rows.append(
        Row(
            "  CPU per msg in this process, cores busy",
            f"{server_cpu / n * 1000:.2f} ms, {server_cpu / elapsed:.2f}",
            "-",
            "-",
            None,
        )
    )
    rows.append(
        Row(
            "  conversations created / threads sent",
            f"{count_conversations(gw, first)} / {client.threads}",
            "-",
            "-",
            None,
        )
    )
    return rate


def wait_processed(
    gw: Gateway,
    after_id: int,
    count: int,
    timeout: float,
    sending: Future[LoadResult] | None = None,
) -> dict[str, int]:
    """Poll until `count` rows after `after_id` are all processed; fail on quarantine/timeout."""
    deadline = time.monotonic() + timeout
    while True:
        if sending is not None and sending.done():
            sending.result()  # a client failure ends the wait at once
            sending = None
        states = inbound_counts(gw, after_id)
        if states.get("quarantined"):
            raise BenchError(f"end to end: {states['quarantined']} messages quarantined")
        if states.get("processed", 0) >= count:
            return states
        if time.monotonic() > deadline:
            raise BenchError(f"end to end: not processed after {timeout:g} s: {states}")
        # 50 ms keeps the measurement error small and the polling cost negligible.
        time.sleep(0.05)


PHASES = ("sink", "accept", "paced", "e2e", "scaled")


def bench(args: argparse.Namespace) -> list[Row]:
    phases = set(args.phases)
    client = Client(args, uuid.uuid4().hex[:8])
    rows: list[Row] = []
    try:
        limit = phase_sink(args, client, rows) if "sink" in phases else Limit()
        if phases & {"accept", "paced"}:
            phase_ingress(args, client, rows, limit, phases)
        if "e2e" in phases:
            phase_e2e(args, client, rows, limit)
        if "scaled" in phases:
            phase_scaled(args, client, rows, limit)
    finally:
        client.close()
    return rows


def print_table(rows: list[Row], args: argparse.Namespace) -> None:
    header = ("figure", "value", "aim", "bare-sink limit (same run)", "")
    cells = [
        (r.figure, r.value, r.aim, r.limit, "" if r.ok is None else ("ok" if r.ok else "MISSED"))
        for r in rows
    ]
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    print()
    print(
        f"inbound SMTP bench: {args.messages} messages of ~{args.size} bytes, "
        f"{args.concurrency} concurrent sessions, db {args.db}, {_cores()} cores"
    )
    print(line)
    for row in [header, *cells]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if row is header:
            print(line)
    print(line)
    print(
        "latency = from writing the end-of-data '.' (body already written) to reading the reply;\n"
        "the load generator is one separate process (asyncio), competing with the server for\n"
        "the same cores in every phase, so the sink and gateway figures compare.\n"
        "CPU per msg: server = this process (all its threads), client = the load generator.\n"
        "end to end = first MAIL FROM until every inbound_mail row of the run is 'processed'."
    )


def _cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--messages", "-n", type=int, default=3000, help="messages per phase")
    p.add_argument("--concurrency", "-c", type=int, default=10, help="SMTP client sessions")
    p.add_argument("--size", type=int, default=10240, help="approximate message size, bytes")
    p.add_argument("--db", default="sqlite", help="'sqlite' (temp file, WAL) or a database URL")
    p.add_argument("--paced-rate", type=float, default=100.0, help="msgs/s of the paced phase")
    p.add_argument("--paced-seconds", type=float, default=10.0, help="length of the paced phase")
    p.add_argument("--warmup", type=int, default=50, help="unmeasured messages before each phase")
    p.add_argument("--timeout", type=float, default=300.0, help="end-to-end wait limit, seconds")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--worker-threads", type=int, default=None, help="end to end: override the config's"
    )
    p.add_argument(
        "--phases",
        type=lambda v: [x.strip() for x in v.split(",") if x.strip()],
        default=["sink", "accept", "paced", "e2e"],
        help=f"comma-separated subset of {','.join(PHASES)}",
    )
    p.add_argument(
        "--worker-processes",
        type=lambda v: [int(x) for x in v.split(",") if x.strip()],
        default=[1, 2, 4],
        help="scaled: how many `gateway worker` processes, one measurement each (1,2,4)",
    )
    p.add_argument(
        "--broker",
        default=os.environ.get("GATEWAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/13"),
        help="scaled: the broker the ingress and the workers share",
    )
    p.add_argument("--strict", action="store_true", help="exit 2 if an aim is missed")
    args = p.parse_args(argv)
    if args.messages < 1 or args.concurrency < 1 or args.size < 512:
        p.error("--messages and --concurrency must be >= 1, --size >= 512")
    if not args.worker_processes or min(args.worker_processes) < 1:
        p.error("--worker-processes: counts of at least 1, e.g. 1,2,4")
    if not args.phases or set(args.phases) - set(PHASES):
        p.error(f"--phases: choose from {','.join(PHASES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The gateway logs per-message INFO lines; only problems belong in the bench's output.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        rows = bench(args)
    except (BenchError, SmtpFailure, OSError) as exc:
        print(f"\nFAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print_table(rows, args)
    missed = [r.figure for r in rows if r.ok is False]
    if missed:
        print(f"missed aims: {', '.join(missed)}")
    return 2 if missed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
