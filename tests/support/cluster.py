"""A gateway cluster on one machine for tests/cluster: `gateway serve --role ingress` and
`gateway worker` child processes sharing one PostgreSQL database and one broker namespace, and
SMTP senders that keep going when a node dies, as a mail server would.

The children write their logs to files (a pipe would fill up under thousands of log lines and
stall them); `Node.log()` reads them back for the failure report.
"""

from __future__ import annotations

import os
import signal
import smtplib
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

from sqlalchemy import create_engine, make_url, text

from tests.conftest import create_database
from tests.support.serve import clean_env
from tests.support.waiting import wait_for

# The secret key every node signs and verifies with: one deployment, one key.
SECRET = "cluster-test-secret-key-0123456789abcdef"


@contextmanager
def fresh_database(configured: str) -> Iterator[str]:
    """A new, empty PostgreSQL database beside the configured one, dropped afterwards."""
    url = make_url(configured).set(
        database=f"{make_url(configured).database}_cl_{uuid.uuid4().hex[:8]}"
    )
    wanted = url.render_as_string(hide_password=False)
    create_database(configured, wanted)
    try:
        yield wanted
    finally:
        admin = create_engine(configured, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
        finally:
            admin.dispose()


@dataclass
class Node:
    """One gateway child process; `restart()` starts it again with the same arguments."""

    name: str
    args: list[str]
    cwd: Path
    proc: subprocess.Popen[bytes] | None = None
    runs: int = 0

    @property
    def log_path(self) -> Path:
        return self.cwd / f"{self.name}.{self.runs}.log"

    def start(self) -> Node:
        self.runs += 1
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", *self.args],
                cwd=self.cwd,
                env=clean_env(GATEWAY_SECRET_KEY=SECRET),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def wait_running(self, timeout: float = 60.0) -> None:
        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited:\n{self.log_path.read_text()}")
            return "running" in self.log_path.read_text(errors="replace")

        wait_for(up, timeout)

    def kill(self) -> None:
        """SIGKILL: no cleanup, no lease given up, sessions cut mid-transaction."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)

    def logs(self) -> str:
        """Every run's log, one after the other."""
        runs = [self.cwd / f"{self.name}.{i}.log" for i in range(1, self.runs + 1)]
        return "".join(f"--- {p.name}\n{p.read_text(errors='replace')}" for p in runs if p.exists())


@contextmanager
def nodes_running(nodes: Sequence[Node]) -> Iterator[None]:
    """Start all nodes at once (they import in parallel), wait for each, stop all at the end."""
    try:
        for node in nodes:
            node.start()
        for node in nodes:
            node.wait_running()
        yield
    finally:
        for node in nodes:
            node.stop()


@dataclass
class Senders:
    """`sessions` SMTP sessions, session i starting on node i % len(ports). A mail that does not
    get its 250 (the node died, refused, timed out) is sent again on the next node, with the
    same Message-ID, until it does: what a sending mail server does with a 4xx or a cut
    connection."""

    ports: list[int]
    mails: list[EmailMessage]
    sessions: int
    accepted: dict[str, int] = field(default_factory=dict)  # Message-ID -> port that said 250
    retried: dict[str, list[str]] = field(default_factory=dict)  # Message-ID -> errors
    lock: threading.Lock = field(default_factory=threading.Lock)
    finished: float = 0.0  # time.monotonic() when the last session ended
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Senders:
        for i in range(self.sessions):
            share = self.mails[i :: self.sessions]
            thread = threading.Thread(target=self._session, args=(i, share), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def count(self) -> int:
        with self.lock:
            return len(self.accepted)

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [t for t in self._threads if t.is_alive()]
        assert not stuck, f"{len(stuck)} SMTP sessions still sending after {timeout:.0f}s"

    def _session(self, index: int, mails: list[EmailMessage]) -> None:
        node = index % len(self.ports)
        client: smtplib.SMTP | None = None
        for msg in mails:
            message_id = str(msg["Message-ID"])
            while True:
                port = self.ports[node]
                try:
                    if client is None:
                        client = smtplib.SMTP("127.0.0.1", port, timeout=30)
                    client.send_message(msg)
                except (OSError, smtplib.SMTPException) as exc:
                    with self.lock:
                        self.retried.setdefault(message_id, []).append(f"{port}: {exc!r}")
                    if client is not None:
                        with _quietly():
                            client.close()
                    client = None
                    node = (node + 1) % len(self.ports)
                    time.sleep(0.05)
                    continue
                with self.lock:
                    self.accepted[message_id] = port
                break
        if client is not None:
            with _quietly():
                client.quit()
        with self.lock:
            self.finished = max(self.finished, time.monotonic())


def _quietly() -> suppress:
    return suppress(OSError, smtplib.SMTPException)


def lease_holder_pid(holder: str) -> int:
    """The process id in a scheduler lease holder (`host:pid:thread`)."""
    return int(holder.split(":")[1])


def free_ports(count: int) -> list[int]:
    from tests.support.smtp_sink import free_port

    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


def environ_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))
