"""Inbound SMTP end to end: smtplib (and swaks) against the gateway's real aiosmtpd server on
loopback, through the durable store and the processing actor into conversations."""

from __future__ import annotations

import shutil
import smtplib
import socket
import subprocess
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import select

from channels.email.smtp import BatchWriter, InboundController, InboundHandler, Route, SmtpLimits
from gateway.config import GatewayConfig, embedded_default
from gateway.db import utcnow
from gateway.inbound import process_inbound
from gateway.server import Services, start
from tests.support.waiting import wait_for
from tickets import services
from tickets.inbound import IncomingMail
from tickets.models import (
    Channel,
    Conversation,
    ConversationState,
    InboundMail,
    InboundState,
    Message,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_config(tmp_path: Path, **limits: int) -> GatewayConfig:
    base = embedded_default()
    smtp = base.smtp.model_copy(update={"listen": f"127.0.0.1:{free_port()}", **limits})
    return base.model_copy(
        update={
            "database_url": f"sqlite:///{tmp_path / 'gw.db'}",
            "data_dir": str(tmp_path),
            "smtp": smtp,
            "http": base.http.model_copy(update={"listen": "127.0.0.1:0"}),
            "sweep_seconds": 0.5,
            "worker_threads": 2,
        }
    )


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Services]:
    services = start(make_config(tmp_path), "all")
    yield services
    services.stop()


def smtp_port(services: Services) -> int:
    return int(services.runtime.config.smtp.listen.rpartition(":")[2])


def mail(
    sender: str = "chris@example.com",
    to: str = "support@localhost",
    subject: str = "Parcel missing",
    body: str = "Hi, my parcel never arrived.",
    **headers: str,
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"Chris <{sender}>"
    msg["To"] = to
    msg["Subject"] = subject
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg


def inbound_rows(services: Services) -> list[InboundMail]:
    with services.runtime.unit_of_work() as session:
        return list(session.scalars(select(InboundMail).order_by(InboundMail.id)))


def test_mail_is_stored_processed_and_threaded(gateway):
    port = smtp_port(gateway)
    first = mail(Message_ID="<m1@example.com>")
    with smtplib.SMTP("127.0.0.1", port) as client:
        client.send_message(first)
        reply = mail(
            subject="Re: Parcel missing",
            body=(
                "Any news?\n\n"
                "On Mon, Nov 23, 2026 at 10:00 AM Ana <support@localhost> wrote:\n"
                "> we are checking"
            ),
            Message_ID="<m2@example.com>",
            In_Reply_To="<m1@example.com>",
        )
        client.send_message(reply, to_addrs=["support+whatever@localhost"])

    def processed():
        rows = inbound_rows(gateway)
        return len(rows) == 2 and all(r.state == InboundState.PROCESSED for r in rows) and rows

    rows = wait_for(processed)
    assert rows[0].raw.startswith(b"From: Chris")
    assert rows[1].envelope_to == ["support+whatever@localhost"]
    with gateway.runtime.unit_of_work() as session:
        conversations = session.scalars(select(Conversation)).all()
        assert len(conversations) == 1
        messages = session.scalars(select(Message).order_by(Message.id)).all()
        assert [m.text for m in messages] == ["Hi, my parcel never arrived.", "Any news?"]
        assert messages[1].quoted_text and "we are checking" in messages[1].quoted_text
        assert conversations[0].subject == "Parcel missing"


@pytest.mark.parametrize(
    ("subject", "body", "reopens"),
    [
        # Responders that set no RFC 3834 header: the subject or the first lines must tell.
        ("Automatische Antwort: Re: Parcel missing", "Ich bin nicht im Büro.", False),
        (
            "Re: Parcel missing",
            "Hello,\n\nI am out of the office until 24 June with limited access to email.",
            False,
        ),
        ("Re: Parcel missing", "Still nothing here, can you check again?", True),
    ],
    ids=["localised-subject", "first-lines", "customer"],
)
def test_an_out_of_office_reply_does_not_reopen_the_conversation(gateway, subject, body, reopens):
    port = smtp_port(gateway)
    with smtplib.SMTP("127.0.0.1", port) as client:
        client.send_message(mail(Message_ID="<first@example.com>"))
    wait_for(lambda: [r for r in inbound_rows(gateway) if r.state == InboundState.PROCESSED])
    with gateway.runtime.unit_of_work() as session:
        conversation = session.scalars(select(Conversation)).one()
        services.resolve(session, conversation, services.SYSTEM, utcnow())

    away = mail(subject=subject, body=body, Message_ID="<away@example.com>")
    away["In-Reply-To"] = "<first@example.com>"
    with smtplib.SMTP("127.0.0.1", port) as client:
        client.send_message(away)  # envelope sender: the customer's own address

    def both_processed():
        rows = inbound_rows(gateway)
        return len(rows) == 2 and all(r.state == InboundState.PROCESSED for r in rows)

    wait_for(both_processed)
    with gateway.runtime.unit_of_work() as session:
        conversation = session.scalars(select(Conversation)).one()
        latest = session.scalars(select(Message).order_by(Message.id.desc())).first()
        assert latest is not None and latest.conversation_id == conversation.id
        assert latest.is_auto_reply is not reopens
        expected = ConversationState.OPEN if reopens else ConversationState.RESOLVED
        assert conversation.state == expected


def test_unknown_recipient_is_refused_with_550(gateway):
    with smtplib.SMTP("127.0.0.1", smtp_port(gateway)) as client:
        client.ehlo()
        client.mail("chris@example.com")
        code, reason = client.rcpt("sales@elsewhere.example")
        assert (code, reason) == (550, b"5.1.1 No such mailbox here")
        code, _ = client.rcpt("support@localhost")
        assert code == 250


def test_oversized_mail_is_refused_with_552(tmp_path):
    services = start(make_config(tmp_path, max_message_bytes=10_000), "ingress")
    try:
        with smtplib.SMTP("127.0.0.1", smtp_port(services)) as client:
            client.ehlo()
            assert client.has_extn("size")
            assert int(client.esmtp_features["size"]) == 10_000
            big = mail(body="x" * 20_000)
            with pytest.raises(smtplib.SMTPException) as info:
                client.send_message(big)
            assert "552" in str(info.value)
        assert inbound_rows(services) == []
    finally:
        services.stop()


def test_mail_loop_is_refused_with_554(gateway):
    msg = mail()
    for i in range(51):
        msg["Received"] = f"from hop{i}.example by hop{i + 1}.example; Tue, 24 Nov 2026"
    with (
        smtplib.SMTP("127.0.0.1", smtp_port(gateway)) as client,
        pytest.raises(smtplib.SMTPDataError) as info,
    ):
        client.send_message(msg)
    assert info.value.smtp_code == 554


def test_storage_failure_answers_451_and_the_retry_succeeds():
    stored: list[IncomingMail] = []
    failures = iter([True])

    def flaky_store(mails):
        if next(failures, False):
            raise OSError("disk full")
        stored.extend(mails)
        return list(range(1, len(mails) + 1))

    writer = BatchWriter(flaky_store)
    handler = InboundHandler(
        lambda a: Route(1, 1) if a == "support@localhost" else None, writer, SmtpLimits()
    )
    port = free_port()
    controller = InboundController(handler, "127.0.0.1", port)
    controller.start()
    try:
        with smtplib.SMTP("127.0.0.1", port) as client:
            with pytest.raises(smtplib.SMTPDataError) as info:
                client.send_message(mail())
            assert info.value.smtp_code == 451
            assert stored == []
            client.send_message(mail())  # what the sending MTA does next
        assert len(stored) == 1
    finally:
        controller.stop()
        writer.close()


def test_connection_cap_answers_421():
    writer = BatchWriter(lambda mails: list(range(len(mails))))
    handler = InboundHandler(lambda a: None, writer, SmtpLimits(max_connections_per_peer=2))
    port = free_port()
    controller = InboundController(handler, "127.0.0.1", port)
    controller.start()
    try:
        held = [smtplib.SMTP("127.0.0.1", port) for _ in range(2)]
        with pytest.raises(smtplib.SMTPConnectError) as info:
            smtplib.SMTP("127.0.0.1", port)
        assert info.value.smtp_code == 421
        for c in held:
            c.quit()
        with smtplib.SMTP("127.0.0.1", port) as again:
            assert again.noop()[0] == 250
    finally:
        controller.stop()
        writer.close()


def test_a_message_that_breaks_the_processor_is_quarantined_then_reprocessed(tmp_path):
    config = make_config(tmp_path)
    tight = config.model_copy(
        update={"limits": config.limits.model_copy(update={"max_mime_parts": 5})}
    )
    services = start(tight, "ingress")  # no workers: we drive processing by hand
    try:
        msg = mail()
        for i in range(8):
            msg.add_attachment(
                f"part {i}".encode(), maintype="text", subtype="plain", filename=f"{i}.txt"
            )
        with smtplib.SMTP("127.0.0.1", smtp_port(services)) as client:
            client.send_message(msg)
        [row] = inbound_rows(services)
        outcome = process_inbound(services.runtime, row.id)
        assert outcome is not None and outcome.state == "quarantined"
        assert "more than 5 MIME parts" in outcome.detail
        [row] = inbound_rows(services)
        assert row.state == InboundState.QUARANTINED
        assert b'filename="7.txt"' in row.raw
    finally:
        services.stop()
    # The operator raises the limit and reprocesses: the mail was kept, nothing is lost.
    proc = subprocess.run(
        [
            "gateway",
            "--config",
            str(write_config(tmp_path, config)),
            "quarantine",
            "list",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "more than 5 MIME parts" in proc.stdout
    proc = subprocess.run(
        [
            "gateway",
            "--config",
            str(write_config(tmp_path, config)),
            "quarantine",
            "reprocess",
            str(row.id),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("processed")


def write_config(tmp_path: Path, config: GatewayConfig) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f'database_url = "{config.database_url}"\ndata_dir = "{tmp_path}"\n'
        '[[apps]]\nname = "demo"\nbrand = "Demo"\n'
        '[[apps.channels]]\nname = "support"\naddresses = ["support@localhost"]\n'
    )
    return path


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks not installed")
def test_swaks_delivers(gateway):
    port = smtp_port(gateway)
    proc = subprocess.run(
        [
            "swaks",
            "--server",
            "127.0.0.1",
            "--port",
            str(port),
            "--from",
            "dana@example.org",
            "--to",
            "support@localhost",
            "--header",
            "Subject: Sent with swaks",
            "--body",
            "Hello from swaks",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "250 2.0.0 OK: queued" in proc.stdout

    def stored():
        with gateway.runtime.unit_of_work() as session:
            return session.scalar(select(Message).where(Message.from_address == "dana@example.org"))

    message = wait_for(stored)
    assert message.text.startswith("Hello from swaks")


def test_asyncio_is_not_blocked_by_storage():
    # The handler awaits the writer's future: a slow commit must not stall other sessions.
    release = []

    def slow_store(mails):
        while not release:
            time.sleep(0.01)
        return list(range(len(mails)))

    writer = BatchWriter(slow_store)
    handler = InboundHandler(lambda a: Route(1, 1), writer, SmtpLimits())
    port = free_port()
    controller = InboundController(handler, "127.0.0.1", port)
    controller.start()
    try:
        import threading

        t = threading.Thread(target=lambda: smtplib.SMTP("127.0.0.1", port).send_message(mail()))
        t.start()
        time.sleep(0.3)
        with smtplib.SMTP("127.0.0.1", port) as other:
            assert other.noop()[0] == 250  # answered while the first DATA waits on storage
        release.append(True)
        t.join(timeout=10)
    finally:
        controller.stop()
        writer.close()


def test_under_load_accepted_mail_shares_commits_and_a_lone_mail_does_not_wait():
    import threading

    batches: list[int] = []
    first_commit = threading.Event()
    release_first = threading.Event()

    def store(mails):
        batches.append(len(mails))
        if len(batches) == 1:
            first_commit.set()
            release_first.wait(10)
        return list(range(len(mails)))

    window = 0.3  # long, so that timing noise cannot blur what waited and what did not
    writer = BatchWriter(store, group_commit_seconds=window)
    try:
        started = time.monotonic()
        lone = writer.submit(IncomingMail(raw=b"x", source="smtp"))
        assert first_commit.wait(5)
        assert time.monotonic() - started < window  # a quiet moment: committed at once
        # Three more arrive while the first commit is under way: the next group takes all.
        during = [writer.submit(IncomingMail(raw=b"x", source="smtp")) for _ in range(3)]
        release_first.set()
        assert lone.result(5) == 0 and [f.result(5) for f in during] == [0, 1, 2]
        # That group had company: the next one is held open, and a mail that finishes DATA a
        # moment after the first shares its commit.
        first = writer.submit(IncomingMail(raw=b"x", source="smtp"))
        time.sleep(window / 6)
        second = writer.submit(IncomingMail(raw=b"x", source="smtp"))
        assert (first.result(5), second.result(5)) == (0, 1)
        assert batches == [1, 3, 2]
    finally:
        writer.close()


def test_starttls_from_configured_certificate_files(tmp_path):
    from tests.support.certs import make_self_signed_cert

    cert = make_self_signed_cert(tmp_path / "tls")
    config = make_config(tmp_path)
    smtp = config.smtp.model_copy(
        update={"tls_cert_file": str(cert.cert_path), "tls_key_file": str(cert.key_path)}
    )
    services = start(config.model_copy(update={"smtp": smtp}), "ingress")
    try:
        with smtplib.SMTP("127.0.0.1", smtp_port(services)) as client:
            client.ehlo()
            assert client.has_extn("starttls")
            client.starttls(context=cert.client_context())
            client.ehlo()
            client.send_message(mail())
        [row] = inbound_rows(services)
        assert row.state == InboundState.PENDING
    finally:
        services.stop()


def test_a_channel_added_at_run_time_is_accepted_without_a_restart(tmp_path):
    from gateway.channel_admin import create_channel
    from tickets.models import App

    services = start(make_config(tmp_path, routes_refresh_seconds=0.2), "ingress")
    try:
        port = smtp_port(services)

        def rcpt(address: str) -> int:
            with smtplib.SMTP("127.0.0.1", port) as client:
                client.ehlo()
                client.mail("chris@example.com")
                return client.rcpt(address)[0]

        assert rcpt("sales@localhost") == 550
        runtime = services.runtime
        with runtime.unit_of_work() as session:
            app = session.scalar(select(App))
            assert app is not None
            channel = create_channel(session, app, "sales", ["sales@localhost"], runtime.clock())
            channel_id = channel.id
        assert wait_for(lambda: rcpt("sales@localhost") == 250, timeout=10)
        # And a disabled channel's address is refused again.
        with runtime.unit_of_work() as session:
            session.get(Channel, channel_id).enabled = False
        assert wait_for(lambda: rcpt("sales@localhost") == 550, timeout=10)
    finally:
        services.stop()
