"""Attacks on the SMTP server and on `gateway serve`'s startup, replayed through real servers.

Each test drives the gateway's own aiosmtpd server on a free loopback port (in this process, or
as a `gateway serve` child when its log, exit status or memory is what an operator would see),
with smtplib or raw sockets, on SQLite and, when GATEWAY_TEST_DATABASE_URL is set, PostgreSQL.
"""

from __future__ import annotations

import contextlib
import smtplib
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import delete, select

from gateway.channel_admin import create_channel
from gateway.config import GatewayConfig, embedded_default
from gateway.runtime import Runtime
from gateway.server import Services, start
from tests.support.certs import SelfSignedCert, make_self_signed_cert
from tests.support.serve import clean_env, serve_process
from tickets.models import App, Channel, ChannelAddress, InboundMail

BODY = b"From: sender@example.com\r\nTo: support@localhost\r\nSubject: Hello\r\n\r\nHi there.\r\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def loopback_config(tmp_path: Path, database_url: str, **smtp: object) -> GatewayConfig:
    base = embedded_default()
    return base.model_copy(
        update={
            "database_url": database_url,
            "data_dir": str(tmp_path),
            "smtp": base.smtp.model_copy(update={"listen": f"127.0.0.1:{free_port()}", **smtp}),
            "http": base.http.model_copy(update={"listen": "127.0.0.1:0"}),
        }
    )


@contextmanager
def ingress(config: GatewayConfig) -> Iterator[int]:
    """The gateway's SMTP server (and its batch writer) running; yields its port."""
    services: Services = start(config, "ingress")
    try:
        yield int(config.smtp.listen.rpartition(":")[2])
    finally:
        services.stop()


def stored_senders(config: GatewayConfig) -> list[str | None]:
    runtime = Runtime.create(config)
    try:
        with runtime.unit_of_work() as session:
            return list(session.scalars(select(InboundMail.envelope_from).order_by(InboundMail.id)))
    finally:
        runtime.close()


def concurrent_sessions(
    port: int, envelopes: list[tuple[str, str]]
) -> list[tuple[str, int, bytes]]:
    """One smtplib session per (MAIL FROM path, RCPT TO path), sent as they come (no quoting).

    Every session that gets as far as DATA writes its message and then waits for the others
    before writing the final dot, so the ends of DATA arrive together and share group commits.
    Each result is the command that ended the session and its reply."""
    barrier = threading.Barrier(len(envelopes), timeout=60)
    results: list[tuple[str, int, bytes]] = [("", 0, b"")] * len(envelopes)

    def session(i: int, sender: str, recipient: str) -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
            client.ehlo("client.example")
            for command, arg in (("MAIL", f"FROM:{sender}"), ("RCPT", f"TO:{recipient}")):
                code, reply = client.docmd(command, arg)
                if code != 250:
                    results[i] = (command, code, reply)
                    barrier.wait()
                    return
            code, reply = client.docmd("DATA")
            assert code == 354, reply
            client.send(BODY)
            barrier.wait()
            client.send(b".\r\n")
            code, reply = client.getreply()
            results[i] = ("DATA", code, reply)

    threads = [
        threading.Thread(target=session, args=(i, sender, recipient))
        for i, (sender, recipient) in enumerate(envelopes)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


# --- 1. bytes the stores cannot hold, and one mail's failure in a group commit ---------------


@pytest.mark.parametrize(
    ("command", "path"),
    [
        ("MAIL", "<a\x00b@x.test>"),
        ("MAIL", "<a\x01b@x.test>"),
        ("MAIL", "<ab@x.test\x7f>"),
        ("RCPT", "<support+\x00@localhost>"),
        ("RCPT", "<support+\x1bx@localhost>"),
    ],
)
def test_a_control_byte_in_the_envelope_is_refused_and_the_rest_of_its_group_is_stored(
    tmp_path: Path, database_url: str, command: str, path: str
) -> None:
    config = loopback_config(tmp_path, database_url, group_commit_ms=50)
    good = [(f"<sender{i}@example.com>", "<support@localhost>") for i in range(7)]
    bad = (path, "<support@localhost>") if command == "MAIL" else ("<evil@x.test>", path)
    with ingress(config) as port:
        results = concurrent_sessions(port, [bad, *good])
    ended_by, code, reply = results[0]
    assert (ended_by, code) == (command, 553), results[0]
    assert b"control character" in reply
    assert results[1:] == [("DATA", 250, b"2.0.0 OK: queued")] * len(good)
    assert sorted(stored_senders(config), key=str) == sorted(s.strip("<>") for s, _ in good)


def test_non_ascii_bytes_in_the_envelope_are_refused_with_a_reason(
    tmp_path: Path, database_url: str
) -> None:
    config = loopback_config(tmp_path, database_url)
    with ingress(config) as port, socket.create_connection(("127.0.0.1", port)) as raw:
        reader = raw.makefile("rb")
        assert reader.readline().startswith(b"220")
        raw.sendall(b"EHLO client.example\r\n")
        while not reader.readline().startswith(b"250 "):
            pass
        raw.sendall(b"MAIL FROM:<m\xfcller@x.test>\r\n")  # latin-1, not UTF-8
        reply = reader.readline()
        assert reply.startswith(b"5"), reply
        raw.sendall(b"MAIL FROM:<m\xed\xa0\x80@x.test>\r\n")  # an encoded lone surrogate
        reply = reader.readline()
        assert reply.startswith(b"5"), reply
        raw.sendall(b"MAIL FROM:<ok@x.test>\r\n")
        assert reader.readline().startswith(b"250")  # the session goes on
    assert stored_senders(config) == []


def test_a_mail_whose_row_cannot_be_stored_fails_alone_in_its_group(
    tmp_path: Path, database_url: str
) -> None:
    """A channel removed a moment ago is still in the route table: its mail's row names a
    channel that no longer exists and cannot be inserted. The mails committed with it in one
    group are stored and get 250; only it gets 451 (and its sender retries later)."""
    config = loopback_config(
        tmp_path, database_url, group_commit_ms=50, routes_refresh_seconds=3600
    )
    runtime = Runtime.create(config)
    with runtime.unit_of_work() as session:
        app = session.scalar(select(App))
        assert app is not None
        gone = create_channel(session, app, "gone", ["gone@localhost"], runtime.clock()).id
    with ingress(config) as port:
        with runtime.unit_of_work() as session:  # removed after the routes were loaded
            session.execute(delete(ChannelAddress).where(ChannelAddress.channel_id == gone))
            session.execute(delete(Channel).where(Channel.id == gone))
        good = [(f"<sender{i}@example.com>", "<support@localhost>") for i in range(7)]
        results = concurrent_sessions(port, [("<late@x.test>", "<gone@localhost>"), *good])
    runtime.close()
    assert results[0][:2] == ("DATA", 451), results[0]
    assert results[1:] == [("DATA", 250, b"2.0.0 OK: queued")] * len(good)
    assert sorted(stored_senders(config), key=str) == sorted(s.strip("<>") for s, _ in good)


# --- 3. AUTH ----------------------------------------------------------------------------------


def test_auth_is_not_offered_when_no_login_can_succeed(tmp_path: Path) -> None:
    config, cert = tls_config(tmp_path)
    with ingress(config) as port, smtplib.SMTP("127.0.0.1", port) as client:
        client.ehlo()
        assert not client.has_extn("auth")
        client.starttls(context=cert.client_context())
        client.ehlo()
        assert client.has_extn("starttls") is False
        assert not client.has_extn("auth")
        code, reply = client.docmd("AUTH", "PLAIN AGFnZW50AHNlY3JldA==")
        assert code == 502, reply
        assert client.docmd("NOOP")[0] == 250


def tls_config(tmp_path: Path, **smtp: object) -> tuple[GatewayConfig, SelfSignedCert]:
    cert = make_self_signed_cert(tmp_path / "tls")
    config = loopback_config(
        tmp_path,
        f"sqlite:///{tmp_path / 'gw.db'}",
        tls_cert_file=str(cert.cert_path),
        tls_key_file=str(cert.key_path),
        **smtp,
    )
    return config, cert


def test_starttls_sessions_give_their_connection_slot_back(tmp_path: Path) -> None:
    """A session that said STARTTLS once counted twice against the peer's connections and
    gave one back: after max_connections_per_peer such sessions the peer was locked out."""
    config, cert = tls_config(tmp_path, max_connections_per_peer=2)
    with ingress(config) as port:
        for i in range(5):
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                client.starttls(context=cert.client_context())
                client.sendmail(f"tls{i}@example.com", ["support@localhost"], BODY)
    assert stored_senders(config) == [f"tls{i}@example.com" for i in range(5)]


def test_a_botched_tls_handshake_is_one_line_without_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config, cert = tls_config(tmp_path)
    with ingress(config) as port:
        for _ in range(20):
            with greeted(port) as sock:
                assert smtp_exchange(sock, b"EHLO client.example", b"STARTTLS")[1][:3] == b"220"
                sock.sendall(b"\x16\x03\x01\x00\x05hello, not a TLS client hello\r\n" * 3)
                with contextlib.suppress(OSError):
                    while sock.recv(1024):
                        pass
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:  # the server is fine
            client.starttls(context=cert.client_context())
            client.sendmail("after@example.com", ["support@localhost"], BODY)
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]
    smtp_lines = [r for r in caplog.records if r.name.startswith("channels.email")]
    assert 1 <= len(smtp_lines) <= 2, [r.getMessage() for r in smtp_lines]
    assert stored_senders(config) == ["after@example.com"]


# --- 4. startup errors ------------------------------------------------------------------------


def serve_fails(tmp_path: Path, config_text: bytes | str) -> str:
    """`gateway serve` with this config: it must exit non-zero with one line on stderr."""
    config = tmp_path / "gateway.toml"
    if isinstance(config_text, str):
        config_text = config_text.encode()
    config.write_bytes(config_text)
    with serve_process(
        ["--config", str(config), "serve", "--role", "ingress"], cwd=tmp_path, env=clean_env()
    ) as proc:
        out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0, out
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def listen_config(tmp_path: Path, smtp_port: int, http_port: int, smtp_extra: str = "") -> str:
    return (
        f'database_url = "sqlite:///{tmp_path / "gw.db"}"\ndata_dir = "{tmp_path}"\n'
        f'[smtp]\nlisten = "127.0.0.1:{smtp_port}"\n{smtp_extra}'
        f'[http]\nlisten = "127.0.0.1:{http_port}"\n'
        '[[apps]]\nname = "demo"\nbrand = "Demo"\n'
        '[[apps.channels]]\nname = "support"\naddresses = ["support@localhost"]\n'
    )


def test_a_config_file_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    line = serve_fails(tmp_path, b'data_dir = "./gateway-data"\n# caf\xe9\n')
    assert "gateway.toml" in line and "UTF-8" in line


@pytest.mark.parametrize("which", ["smtp", "http"])
def test_a_listen_port_in_use_is_one_line(tmp_path: Path, which: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = (port, free_port()) if which == "smtp" else (free_port(), port)
        line = serve_fails(tmp_path, listen_config(tmp_path, *ports))
    assert f"{which}.listen" in line and f"127.0.0.1:{port}" in line and "in use" in line


def test_a_database_directory_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    database = tmp_path / "a-file" / "data" / "gw.db"
    config = listen_config(tmp_path, free_port(), free_port())
    line = serve_fails(tmp_path, config.replace(str(tmp_path / "gw.db"), str(database)))
    assert "database" in line and str(database.parent) in line


@pytest.mark.parametrize("problem", ["missing cert", "missing key", "not a cert", "key alone"])
def test_a_bad_tls_file_is_one_line(tmp_path: Path, problem: str) -> None:
    cert = make_self_signed_cert(tmp_path / "tls")
    cert_file, key_file = str(cert.cert_path), str(cert.key_path)
    if problem == "missing cert":
        cert_file = str(tmp_path / "nowhere.pem")
    elif problem == "missing key":
        key_file = str(tmp_path / "tls")  # a directory
    elif problem == "not a cert":
        (tmp_path / "junk.pem").write_text("not a certificate\n")
        cert_file = str(tmp_path / "junk.pem")
    keys = f'tls_cert_file = "{cert_file}"\n' if problem != "key alone" else ""
    keys += f'tls_key_file = "{key_file}"\n'
    line = serve_fails(tmp_path, listen_config(tmp_path, free_port(), free_port(), keys))
    assert "smtp" in line and "tls_" in line


# --- 2. connections ---------------------------------------------------------------------------


def serve_config(tmp_path: Path, smtp_extra: str) -> tuple[Path, int]:
    port = free_port()
    config = tmp_path / "gateway.toml"
    config.write_text(listen_config(tmp_path, port, free_port(), smtp_extra))
    return config, port


@dataclass
class Served:
    """A `gateway serve` child whose output is read as it comes (a full pipe would stall it)."""

    proc: subprocess.Popen[str]
    port: int
    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)
    readers: list[threading.Thread] = field(default_factory=list)

    def stop(self) -> str:
        """SIGTERM; it must stop cleanly. Returns what it wrote on stderr."""
        self.proc.terminate()
        self.proc.wait(timeout=60)
        for reader in self.readers:
            reader.join(timeout=10)
        assert self.proc.returncode == 0, "".join(self.err)
        assert "stopped" in "".join(self.out)
        return "".join(self.err)


@contextmanager
def serving(tmp_path: Path, smtp_extra: str) -> Iterator[Served]:
    config, port = serve_config(tmp_path, smtp_extra)
    with serve_process(
        ["--config", str(config), "serve", "--role", "ingress"], cwd=tmp_path, env=clean_env()
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline()
        assert "running" in first, first + (proc.stderr.read() if proc.poll() else "")
        served = Served(proc, port)
        for stream, sink in ((proc.stdout, served.out), (proc.stderr, served.err)):
            reader = threading.Thread(target=sink.extend, args=(stream,), daemon=True)
            reader.start()
            served.readers.append(reader)
        yield served


def greeted(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    assert sock.recv(1024).startswith(b"220")
    return sock


def test_refused_connections_log_one_rate_limited_line(tmp_path: Path) -> None:
    # No idle eviction here: under load the 500 attempts outlast `idle_evict_seconds`, and a held
    # session closed to make room would let one of them in.
    with serving(tmp_path, "max_connections_per_peer = 2\nidle_evict_seconds = 3600\n") as served:
        held = [greeted(served.port) for _ in range(2)]
        for _ in range(500):
            with socket.create_connection(("127.0.0.1", served.port), timeout=30) as sock:
                assert sock.recv(1024).startswith(b"421 4.7.0")
        for sock in held:
            sock.close()
        err = served.stop()
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert 1 <= len(lines) <= 2, err[:2000]
    assert all("refused" in line for line in lines), lines


def smtp_exchange(sock: socket.socket, *commands: bytes) -> list[bytes]:
    """Send each command and read its (last) reply line."""
    reader = sock.makefile("rb")
    replies = []
    for command in commands:
        sock.sendall(command + b"\r\n")
        line = reader.readline()
        while line[3:4] == b"-":
            line = reader.readline()
        replies.append(line)
    return replies


def open_data(port: int, sender: str) -> socket.socket:
    """A session that has said DATA and got 354: what follows is message content."""
    sock = greeted(port)
    replies = smtp_exchange(
        sock,
        b"EHLO client.example",
        f"MAIL FROM:<{sender}>".encode(),
        b"RCPT TO:<support@localhost>",
        b"DATA",
    )
    assert [r[:3] for r in replies] == [b"250", b"250", b"250", b"354"], replies
    return sock


LINE = b"x" * 998 + b"\r\n"


def test_idle_sessions_make_room_for_a_sender(tmp_path: Path, database_url: str) -> None:
    config = loopback_config(
        tmp_path, database_url, max_connections=10, max_connections_per_peer=10
    )
    with ingress(config) as port:
        idle = [greeted(port) for _ in range(10)]
        for sock in idle:
            assert smtp_exchange(sock, b"EHLO idle.example")[0].startswith(b"250")
        time.sleep(config.smtp.idle_evict_seconds + 0.5)
        started = time.monotonic()
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            client.sendmail("chris@example.com", ["support@localhost"], BODY)
        assert time.monotonic() - started < 10
        told = []
        for sock in idle:
            sock.settimeout(0.5)
            try:
                told.append(sock.recv(1024))
            except TimeoutError:
                told.append(b"")
            sock.close()
    assert sum(reply.startswith(b"421 4.4.2") for reply in told) == 1, told
    assert stored_senders(config) == ["chris@example.com"]


def test_a_session_over_the_pending_data_budget_gets_452(tmp_path: Path, database_url: str) -> None:
    config = loopback_config(tmp_path, database_url, max_pending_data_bytes=4_000_000)
    with ingress(config) as port:
        holder = open_data(port, "holder@example.com")
        holder.sendall(BODY + LINE * 3000)  # 3 MB of a message, not yet ended
        time.sleep(1)
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            with pytest.raises(smtplib.SMTPDataError) as info:
                client.sendmail("big@example.com", ["support@localhost"], BODY + LINE * 2000)
            assert info.value.smtp_code == 452
            assert "4.3.1" in str(info.value)
            client.sendmail("small@example.com", ["support@localhost"], BODY)
            reply = smtp_exchange(holder, b"\r\n.")[0]
            assert reply.startswith(b"250"), reply
            client.sendmail("after@example.com", ["support@localhost"], BODY + LINE * 2000)
        holder.close()
    assert stored_senders(config) == [
        "small@example.com",
        "holder@example.com",
        "after@example.com",
    ]


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


MB = 1024 * 1024


def test_pending_data_of_many_sessions_is_bounded_and_released(tmp_path: Path) -> None:
    """100 sessions each send 2 MB of a message (200 MB in all) and then vanish: the server
    holds no more than its budget of message data meanwhile (besides what each connection's
    socket reader buffers, under half a megabyte), and its memory comes back to where it
    started."""
    budget = 32 * MB
    limits = (
        "max_connections = 300\nmax_connections_per_peer = 300\n"
        f"max_pending_data_bytes = {budget}\n"
    )
    with serving(tmp_path, limits) as served:
        pid, port = served.proc.pid, served.port
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:  # warm: one whole mail
            client.sendmail("warm@example.com", ["support@localhost"], BODY + LINE * 2000)
        start = rss_bytes(pid)
        sessions = [open_data(port, f"s{i}@example.com") for i in range(100)]
        for sock in sessions:
            sock.sendall(LINE * 2000)
        time.sleep(2)
        peak = rss_bytes(pid)
        for sock in sessions:
            sock.close()
        deadline = time.monotonic() + 15
        while rss_bytes(pid) - start > 16 * MB and time.monotonic() < deadline:
            time.sleep(0.2)
        end = rss_bytes(pid)
        served.stop()
    assert peak - start < budget + 100 * MB // 2, (start // MB, peak // MB, end // MB)
    assert end - start < 16 * MB, (start // MB, peak // MB, end // MB)
