"""The gateway killed with SIGKILL in the middle of a load: nothing acknowledged is lost, nothing
is stored twice.

1,000 messages over 50 concurrent SMTP sessions against a real `gateway serve` process; the
process is killed once a third of them are acknowledged, restarted, and the senders resend what
was not acknowledged, as an MTA would. A message whose row was committed but whose 250 was lost
with the process is sent again: the inbound log then holds two copies and processing stores one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select

from tickets.models import InboundMail, InboundState, Message

TOTAL = 1000
SESSIONS = 50
PG_URL = os.environ.get("GATEWAY_TEST_DATABASE_URL")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gateway(config: Path, cwd: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "--config", str(config), "serve"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "running" in line, line
    # Drain stdout so the child never blocks on a full pipe.
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    return proc


def message(i: int) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"customer{i}@example.com"
    msg["To"] = "support@localhost"
    msg["Subject"] = f"Question {i}"
    msg["Message-ID"] = f"<crash-{i}@example.com>"
    msg.set_content(f"Message number {i}\n" + "lorem ipsum " * 50)
    return msg


@pytest.mark.slow
@pytest.mark.parametrize("database", ["sqlite"] + (["postgresql"] if PG_URL else []))
def test_sigkill_mid_load_loses_nothing_and_doubles_nothing(tmp_path, database):
    if database == "postgresql":
        from tests.conftest import reset_postgres

        assert PG_URL
        reset_postgres(PG_URL).dispose()
        db_url = PG_URL
    else:
        db_url = f"sqlite:///{tmp_path / 'gw.db'}"
    port = free_port()
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'database_url = "{db_url}"\ndata_dir = "{tmp_path}"\nsweep_seconds = 1.0\n'
        f'[smtp]\nlisten = "127.0.0.1:{port}"\n'
        '[http]\nlisten = "127.0.0.1:0"\n'
        '[[apps]]\nname = "demo"\nbrand = "Demo"\n'
        '[[apps.channels]]\nname = "support"\naddresses = ["support@localhost"]\n'
    )
    acked: set[int] = set()
    lock = threading.Lock()
    deadline = time.monotonic() + 180

    def sender(ids: list[int]) -> None:
        pending = list(ids)
        while pending and time.monotonic() < deadline:
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                    while pending:
                        client.send_message(message(pending[0]))
                        with lock:
                            acked.add(pending.pop(0))
            except (OSError, smtplib.SMTPException):
                # The server went away: like an MTA, keep the message and try again later.
                time.sleep(0.2)

    proc = start_gateway(config, tmp_path)
    threads = [
        threading.Thread(target=sender, args=(list(range(s, TOTAL, SESSIONS)),))
        for s in range(SESSIONS)
    ]
    for t in threads:
        t.start()
    try:
        while len(acked) < TOTAL // 3:
            assert time.monotonic() < deadline, "load did not get going"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_at = len(acked)
        time.sleep(1.0)
        proc = start_gateway(config, tmp_path)
        for t in threads:
            t.join(timeout=max(1.0, deadline - time.monotonic()))
        assert len(acked) == TOTAL, f"only {len(acked)} acknowledged"
        assert killed_at < TOTAL

        engine = create_engine(db_url)
        try:
            while True:
                with engine.connect() as conn:
                    pending = conn.scalar(
                        select(func.count()).where(InboundMail.state == InboundState.PENDING)
                    )
                if pending == 0:
                    break
                assert time.monotonic() < deadline, f"{pending} inbound rows still pending"
                time.sleep(0.5)
            with engine.connect() as conn:
                per_id = dict(
                    conn.execute(
                        select(Message.email_message_id, func.count()).group_by(
                            Message.email_message_id
                        )
                    ).all()
                )
                quarantined = conn.scalar(
                    select(func.count()).where(InboundMail.state == InboundState.QUARANTINED)
                )
        finally:
            engine.dispose()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert quarantined == 0
    expected = {f"<crash-{i}@example.com>" for i in range(TOTAL)}
    assert set(per_id) == expected, "every acknowledged message is stored"
    doubled = {mid: n for mid, n in per_id.items() if n != 1}
    assert doubled == {}, "no message is stored twice"


IMAP_USER = "support@example.test"
IMAP_TOTAL = 300


def imap_counts(engine) -> tuple[int, int, int]:
    """Inbound rows, distinct IMAP source keys, and rows still pending."""
    with engine.connect() as conn:
        rows = conn.scalar(select(func.count()).select_from(InboundMail)) or 0
        keys = conn.scalar(select(func.count(func.distinct(InboundMail.source_key)))) or 0
        pending = conn.scalar(select(func.count()).where(InboundMail.state == InboundState.PENDING))
    return rows, keys, pending or 0


class SlowStoreProxy:
    """A TCP proxy in front of Dovecot that holds every IMAP STORE command for a while, as a
    slow or distant server would: it opens a wide window between storing and marking."""

    def __init__(self, host: str, port: int, delay: float) -> None:
        self.target, self.delay = (host, port), delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        try:
            while data := src.recv(65536):
                if from_client and b" STORE " in data.upper():
                    time.sleep(self.delay)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()


def seen_on_server(dovecot) -> int:
    with dovecot.login(IMAP_USER) as client:
        client.select_folder("INBOX", readonly=True)
        return len(client.search(["SEEN"]))


@pytest.mark.slow
def test_sigkill_between_imap_fetch_and_mark_stores_each_message_once(
    tmp_path, dovecot, monkeypatch
):
    """The poller stores a fetched batch, then marks it \\Seen on the server. Killed in between,
    the restarted gateway finds the stored keys and only marks: nothing is stored twice, and
    nothing is left unmarked or untaken."""
    monkeypatch.setenv("TEST_IMAP_PASSWORD", dovecot.users[IMAP_USER])
    with dovecot.login(IMAP_USER) as client:
        for i in range(IMAP_TOTAL):
            msg = message(i)
            msg.replace_header("To", IMAP_USER)
            msg.replace_header("Message-ID", f"<imap-crash-{i}@example.com>")
            client.append("INBOX", msg.as_bytes())
    db_url = f"sqlite:///{tmp_path / 'gw.db'}"
    proxy = SlowStoreProxy(dovecot.host, dovecot.port, delay=1.0)
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'database_url = "{db_url}"\ndata_dir = "{tmp_path}"\nsweep_seconds = 1.0\n'
        f'[smtp]\nlisten = "127.0.0.1:{free_port()}"\n'
        '[http]\nlisten = "127.0.0.1:0"\n'
        '[[apps]]\nname = "demo"\nbrand = "Demo"\n'
        f'[[apps.channels]]\nname = "support"\naddresses = ["{IMAP_USER}"]\n'
        f'[apps.channels.imap]\nhost = "127.0.0.1"\nport = {proxy.port}\nssl = false\n'
        f'username = "{IMAP_USER}"\npassword_env = "TEST_IMAP_PASSWORD"\npoll_seconds = 0.5\n'
    )
    deadline = time.monotonic() + 240
    caught_in_the_window = False
    engine = create_engine(db_url)
    kills = 0
    proc = start_gateway(config, tmp_path)
    try:
        # Kill whenever some mail is stored; check, with the gateway dead and the mailbox
        # frozen, whether the kill fell between storing and marking (more rows than \Seen).
        while not caught_in_the_window and kills < 8:
            before = imap_counts(engine)[0]
            while before == imap_counts(engine)[0] < IMAP_TOTAL:
                assert time.monotonic() < deadline, "IMAP ingestion did not get going"
                time.sleep(0.005)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            stored, keys, _ = imap_counts(engine)
            assert stored == keys, "a message was stored twice"
            caught_in_the_window = stored > seen_on_server(dovecot)
            if stored >= IMAP_TOTAL:
                break
            proc = start_gateway(config, tmp_path)
        if proc.poll() is not None:
            proc = start_gateway(config, tmp_path)
        while True:
            stored, keys, pending = imap_counts(engine)
            if stored >= IMAP_TOTAL and pending == 0 and seen_on_server(dovecot) == IMAP_TOTAL:
                break
            assert time.monotonic() < deadline, f"{stored} stored, {pending} pending"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        proxy.close()
    assert caught_in_the_window, f"no kill of {kills} fell between store and mark"
    assert (stored, keys) == (IMAP_TOTAL, IMAP_TOTAL)
    try:
        with engine.connect() as conn:
            per_id = dict(
                conn.execute(
                    select(Message.email_message_id, func.count()).group_by(
                        Message.email_message_id
                    )
                ).all()
            )
    finally:
        engine.dispose()
    assert per_id == {f"<imap-crash-{i}@example.com>": 1 for i in range(IMAP_TOTAL)}
