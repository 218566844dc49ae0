"""Bounces and loops, replayed as an attacker would: through the gateway's real SMTP server
(smtplib on loopback) with its outbound relay an aiosmtpd sink, on SQLite and PostgreSQL.

- A bounce counts only when it is tied to mail we sent: to the VERP return path of that email
  (`bounces+<signed token>@domain`, checked at RCPT), or citing the Message-ID of one of our
  emails in its returned headers, and then only for that email's recipients.
- Only our own mail is dropped as a loop: a Message-ID we sent, or our signed loop header.
  An employee writing from the company's own domain is a customer like any other.
- The file transport leaves no temp file behind when the disk refuses the write.
"""

from __future__ import annotations

import smtplib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from channels.email.tokens import BounceToken, Keyring, TokenError
from gateway import outbound
from gateway.config import GatewayConfig
from gateway.runtime import Runtime
from gateway.server import Services, start
from tests.integration.test_processing import raw_mail
from tests.support.http import loopback_config
from tests.support.smtp_sink import Received, SmtpSink
from tests.support.waiting import wait_for
from tickets import services as ticket_services
from tickets.models import (
    Conversation,
    ConversationState,
    CustomerAddress,
    InboundMail,
    InboundState,
    Message,
    Outbox,
    OutboxState,
)

CUSTOMER = "rgomez@litware.test"
OTHER = "victim@fabrikam.test"


def gateway_config(tmp_path: Path, database_url: str, **outbound: object) -> GatewayConfig:
    base = loopback_config(tmp_path)
    return base.model_copy(
        update={
            "database_url": database_url,
            "outbound": base.outbound.model_copy(update=outbound),
            # An agent's reply is emailed at the next sweep.
            "delivery": base.delivery.model_copy(update={"email_grace_seconds": 0}),
            "sweep_seconds": 0.3,
            "worker_threads": 2,
        }
    )


@pytest.fixture
def gateway(tmp_path: Path, database_url: str, relay: SmtpSink) -> Iterator[Services]:
    """`gateway serve` (SMTP, workers, scheduler) sending through the relay sink."""
    config = gateway_config(
        tmp_path,
        database_url,
        transport="smtp",
        host=relay.host,
        port=relay.port,
        timeout_seconds=5,
    )
    running = start(config, "all")
    yield running
    running.stop()


def smtp(gateway: Services) -> smtplib.SMTP:
    return smtplib.SMTP("127.0.0.1", int(gateway.runtime.config.smtp.listen.rpartition(":")[2]))


def send(gateway: Services, raw: bytes, *, mail_from: str, to: str = "support@localhost") -> int:
    """Hand a message to the gateway's SMTP server; the id of its processed inbound row."""
    with gateway.runtime.unit_of_work() as session:
        before = session.scalar(select(InboundMail.id).order_by(InboundMail.id.desc()).limit(1))
    with smtp(gateway) as client:
        client.sendmail(mail_from, [to], raw)

    def processed() -> int | None:
        with gateway.runtime.unit_of_work() as session:
            row = session.scalar(
                select(InboundMail)
                .where(InboundMail.id > (before or 0))
                .order_by(InboundMail.id.desc())
                .limit(1)
            )
            return row.id if row is not None and row.state != InboundState.PENDING else None

    return wait_for(processed)


def inbound(gateway: Services, row_id: int) -> InboundMail:
    with gateway.runtime.unit_of_work() as session:
        row = session.get(InboundMail, row_id)
        assert row is not None
        session.expunge(row)
        return row


def conversation_of(gateway: Services, row_id: int) -> Conversation | None:
    with gateway.runtime.unit_of_work() as session:
        message = session.scalar(select(Message).where(Message.inbound_mail_id == row_id))
        if message is None:
            return None
        conversation = session.get(Conversation, message.conversation_id)
        assert conversation is not None
        session.expunge(conversation)
        return conversation


def answered(gateway: Services, relay: SmtpSink, sender: str, first_line: str) -> Received:
    """`sender` writes in by SMTP, an agent answers, the gateway emails the answer: the email
    as the relay got it."""
    row = send(
        gateway,
        raw_mail(sender, first_line, f"{first_line}, please.", f"<{abs(hash(sender))}@c.test>"),
        mail_from=sender,
    )
    conversation = conversation_of(gateway, row)
    assert conversation is not None
    count = len(relay.messages)
    with gateway.runtime.unit_of_work() as session:
        app = ticket_services.get_app(session, "demo")
        try:
            agent = ticket_services.find_agent(session, app, "ana@localhost")
        except ticket_services.NotFound:
            agent = ticket_services.add_agent(
                session, app, "ana@localhost", "Ana", gateway.runtime.clock()
            )
        convo = ticket_services.get_conversation(session, app, conversation.id)
        ticket_services.add_agent_message(
            session, convo, agent, "We are on it.", gateway.runtime.clock()
        )
    return wait_for(
        lambda: next((m for m in relay.wait_for(count + 1)[count:] if m.rcpt_tos == [sender]), None)
    )


def postfix_dsn(
    *,
    to: str,
    recipient: str,
    returned: bytes | None,
    status: str = "5.1.1",
    action: str = "failed",
) -> bytes:
    """A bounce as Postfix writes it: a notice, the delivery status, the returned headers."""
    code = "550" if status.startswith("5") else "450"
    parts = [
        b"Content-Description: Notification\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        b"This is the mail system at host mx1.litware.test.\r\n\r\n"
        b"I'm sorry to have to inform you that your message could not\r\n"
        b"be delivered to one or more recipients. It's attached below.\r\n\r\n"
        + f"<{recipient}>: host mail.litware.test[192.0.2.80] said: {code} {status}\r\n"
        f"    <{recipient}>: Recipient address rejected: User unknown\r\n".encode(),
        b"Content-Description: Delivery report\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mx1.litware.test\r\n\r\n"
        + f"Final-Recipient: rfc822; {recipient}\r\nAction: {action}\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: smtp; {code} {status} <{recipient}>: User unknown\r\n".encode(),
    ]
    if returned is not None:
        parts.append(
            b"Content-Description: Undelivered Message Headers\r\n"
            b"Content-Type: text/rfc822-headers\r\n\r\n" + returned
        )
    head = (
        "Return-Path: <>\r\n"
        "From: MAILER-DAEMON@mx1.litware.test (Mail Delivery System)\r\n"
        f"To: {to}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Date: Tue, 24 Nov 2026 10:00:00 +0000\r\n"
        f"Message-Id: <{time.monotonic_ns()}@mx1.litware.test>\r\n"
        "Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="BB"\r\n\r\n'
        "This is a MIME-encapsulated message.\r\n\r\n"
    ).encode()
    return head + b"".join(b"--BB\r\n" + p + b"\r\n" for p in parts) + b"--BB--\r\n"


def header_block(received: Received) -> bytes:
    return received.raw.split(b"\r\n\r\n", 1)[0] + b"\r\n"


def address_row(gateway: Services, address: str) -> CustomerAddress:
    with gateway.runtime.unit_of_work() as session:
        row = session.scalar(select(CustomerAddress).where(CustomerAddress.address == address))
        assert row is not None
        session.expunge(row)
        return row


def messages_of(gateway: Services, conversation_id: int) -> list[Message]:
    with gateway.runtime.unit_of_work() as session:
        rows = list(
            session.scalars(
                select(Message)
                .where(Message.conversation_id == conversation_id)
                .order_by(Message.id)
            )
        )
        for row in rows:
            session.expunge(row)
        return rows


def test_a_forged_dsn_naming_a_customer_does_not_mark_them_undeliverable(gateway, relay):
    sent = answered(gateway, relay, CUSTOMER, "Where is my refund")
    conversation_id = next(m.conversation_id for m in messages_of_all(gateway))
    with gateway.runtime.unit_of_work() as session:
        convo = session.get(Conversation, conversation_id)
        assert convo is not None
        convo.state = ConversationState.RESOLVED
    # Mallory knows the address, not our mail: a DSN to the support address, with made-up
    # returned headers, from the null sender.
    forged = postfix_dsn(
        to="support@localhost",
        recipient=CUSTOMER,
        returned=b"From: support@localhost\r\nTo: " + CUSTOMER.encode() + b"\r\n"
        b"Message-ID: <guessed-1@localhost>\r\nSubject: Re: Where is my refund\r\n",
    )
    row = send(gateway, forged, mail_from="")
    kept = inbound(gateway, row)
    assert kept.state == InboundState.PROCESSED and kept.raw == forged  # kept, not dropped
    assert kept.reason is not None and "not tied to our mail" in kept.reason
    assert address_row(gateway, CUSTOMER).bounced_at is None
    assert conversation_of(gateway, row) is None  # not threaded as the customer's message
    with gateway.runtime.unit_of_work() as session:
        convo = session.get(Conversation, conversation_id)
        assert convo is not None and convo.state == ConversationState.RESOLVED
    assert all(m.delivery_state != "bounced" for m in messages_of(gateway, conversation_id))
    assert sent.rcpt_tos == [CUSTOMER]


def messages_of_all(gateway: Services) -> list[Message]:
    with gateway.runtime.unit_of_work() as session:
        rows = list(session.scalars(select(Message).order_by(Message.id)))
        for row in rows:
            session.expunge(row)
        return rows


def verp_token(gateway: Services, received: Received) -> BounceToken:
    local, _, domain = received.mail_from.rpartition("@")
    assert domain == "localhost" and local.startswith("bounces+")
    assert len(local) <= 64 and local == local.lower()
    return gateway.runtime.keyring.verify_bounce(local.removeprefix("bounces+"))


def test_every_outbound_email_has_a_verp_return_path_naming_its_row_and_recipient(gateway, relay):
    sent = answered(gateway, relay, CUSTOMER, "Where is my refund")
    token = verp_token(gateway, sent)
    with gateway.runtime.unit_of_work() as session:
        row = session.scalar(
            select(Outbox).where(Outbox.message_id_header == sent.message["Message-ID"])
        )
        assert row is not None
        assert (token.outbox_id, token.recipient) == (row.id, 0)
        assert row.recipients[0] == CUSTOMER


def test_a_real_bounce_to_the_verp_address_marks_that_recipient(gateway, relay):
    sent = answered(gateway, relay, CUSTOMER, "Where is my refund")
    answered(gateway, relay, OTHER, "Broken lamp")
    # The remote MTA writes whatever it likes (here: it names another address and returns no
    # headers); the return path alone says which email and recipient failed.
    dsn = postfix_dsn(to=sent.mail_from, recipient="alias@litware.test", returned=None)
    delayed = postfix_dsn(
        to=sent.mail_from, recipient=CUSTOMER, returned=None, status="4.4.1", action="delayed"
    )
    row = send(gateway, delayed, mail_from="", to=sent.mail_from)
    assert "temporary" in (inbound(gateway, row).reason or "")
    assert address_row(gateway, CUSTOMER).bounced_at is None  # a delay marks nothing
    # A vacation reply to the return path is no delivery report: kept, never threaded.
    away = raw_mail(CUSTOMER, "Out of office", "Back on Monday.", "<away-1@litware.test>")
    row = send(gateway, away, mail_from=CUSTOMER, to=sent.mail_from)
    assert (inbound(gateway, row).reason or "").startswith("mail to the return path")
    assert conversation_of(gateway, row) is None
    row = send(gateway, dsn, mail_from="", to=sent.mail_from.upper())  # case-folded on the way
    assert "marked undeliverable: " + CUSTOMER in (inbound(gateway, row).reason or "")
    assert address_row(gateway, CUSTOMER).bounced_at is not None
    assert address_row(gateway, OTHER).bounced_at is None
    mine = [m for m in messages_of_all(gateway) if m.author_type == "agent"]
    assert [m.delivery_state for m in mine] == ["bounced", "sent"]


def test_a_bounce_citing_our_message_id_counts_only_for_that_emails_recipient(gateway, relay):
    sent = answered(gateway, relay, CUSTOMER, "Where is my refund")
    answered(gateway, relay, OTHER, "Broken lamp")
    # Someone who got our email (so knows its Message-ID) names another customer as well.
    for recipient in (OTHER, CUSTOMER):
        dsn = postfix_dsn(to="support@localhost", recipient=recipient, returned=header_block(sent))
        row = send(gateway, dsn, mail_from="")
        assert conversation_of(gateway, row) is None
    assert address_row(gateway, OTHER).bounced_at is None
    assert address_row(gateway, CUSTOMER).bounced_at is not None


def test_a_forged_verp_token_is_refused_at_rcpt(gateway, relay):
    sent = answered(gateway, relay, CUSTOMER, "Where is my refund")
    good = sent.mail_from.rpartition("@")[0].removeprefix("bounces+")
    other_key = Keyring(b"not the gateway's key, but long enough").sign(BounceToken(1, 1, 0))
    flipped = good[:-1] + ("a" if good[-1] != "a" else "b")
    with smtp(gateway) as client:
        client.ehlo()
        for token in ("garbage", other_key, flipped, good + "a"):
            client.mail("")
            code, text = client.rcpt(f"bounces+{token}@localhost")
            assert code == 550, (token, code, text)
            client.rset()
        client.mail("")
        assert client.rcpt(f"bounces+{good}@localhost")[0] == 250
        client.rset()
    with pytest.raises(TokenError):
        gateway.runtime.keyring.verify_bounce(flipped)


def test_an_employee_writing_from_our_own_domain_becomes_a_conversation(gateway, relay):
    raw = raw_mail(
        "Bo Boss <bo@localhost>",
        "Printer on floor 3",
        "The printer is jammed again.",
        "<20261124.1@localhost>",
        # An unsigned loop header from outside makes no mail disappear either.
        X_Gateway_Loop="notification",
    )
    row = send(gateway, raw, mail_from="bo@localhost")
    assert inbound(gateway, row).state == InboundState.PROCESSED
    conversation = conversation_of(gateway, row)
    assert conversation is not None and conversation.subject == "Printer on floor 3"


def test_a_replay_of_our_own_outgoing_mail_is_dropped_as_a_loop(gateway, relay):
    sent = answered(gateway, relay, CUSTOMER, "Where is my refund")
    before = len(messages_of_all(gateway))
    row = send(gateway, sent.raw, mail_from=sent.mail_from)
    kept = inbound(gateway, row)
    assert kept.state == InboundState.PROCESSED and kept.reason is not None
    assert kept.reason.startswith("dropped our own mail")
    assert len(messages_of_all(gateway)) == before


def test_a_notification_coming_back_with_our_signed_loop_header_is_dropped(gateway, relay):
    with gateway.runtime.unit_of_work() as session:
        app = ticket_services.get_app(session, "demo")
        ticket_services.add_agent(session, app, "ana@localhost", "Ana", gateway.runtime.clock())
    sent = answered(gateway, relay, CUSTOMER, "Where is my refund")  # notifies Ana too
    notifications = wait_for(
        lambda: [m for m in relay.messages if m.message["X-Gateway-Loop"]] or None
    )
    mark = notifications[0].message["X-Gateway-Loop"]
    # A relay that rewrites Message-IDs (as some do) still carries our header back.
    raw = notifications[0].raw.replace(
        notifications[0].message["Message-ID"].encode(), b"<rewritten-1@relay.test>"
    )
    row = send(gateway, raw, mail_from="")
    assert (inbound(gateway, row).reason or "").startswith("dropped our own mail")
    # The same header with a wrong signature makes no mail disappear.
    forged = raw_mail(
        CUSTOMER,
        "Re: Where is my refund",
        "Any news?",
        "<cust-2@litware.test>",
        X_Gateway_Loop=mark[:-2] + ("aa" if not mark.endswith("aa") else "bb"),
    )
    row = send(gateway, forged, mail_from=CUSTOMER)
    assert conversation_of(gateway, row) is not None
    assert sent.rcpt_tos == [CUSTOMER]


# The file transport's write, on a disk that takes no more than a few bytes per file: the soft
# RLIMIT_FSIZE is lowered around that write only (the database files must stay writable), so
# the kernel itself refuses it (EFBIG), as it refuses a write to a full disk (ENOSPC).
FULL_DISK = """
import resource, sys
from gateway import outbound
from gateway.config import GatewayConfig
from gateway.runtime import Runtime

class FullDisk:
    per_recipient = False

    def __init__(self, inner):
        self.inner = inner

    def send(self, *args):
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64, hard))
        try:
            self.inner.send(*args)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))

    def delivered(self, message_id):
        return self.inner.delivered(message_id)

runtime = Runtime.create(GatewayConfig.model_validate_json(sys.argv[1]))
sending = outbound.outbound_for(runtime)
sending.built = FullDisk(outbound.make_transport(runtime.config))
print(outbound.send_outbound(runtime, int(sys.argv[2])))
runtime.close()
"""


def test_a_full_disk_leaves_no_temp_file_and_the_email_waits_for_a_retry(tmp_path, database_url):
    config = gateway_config(tmp_path, database_url)  # the embedded default: .eml files
    runtime = Runtime.create(config)
    with runtime.unit_of_work() as session:
        app = ticket_services.get_app(session, "demo")
        now = runtime.clock()
        customer = ticket_services.create_customer(session, app, now, email=CUSTOMER)
        conversation, _ = ticket_services.start_conversation(
            session, app, customer, "email", "Where is my refund?", now
        )
        agent = ticket_services.add_agent(session, app, "ana@localhost", "Ana", now)
        ticket_services.add_agent_message(session, conversation, agent, "On its way.", now)
    queued = outbound.deliver(runtime, conversation.id)
    assert queued.what == "queued" and queued.outbox_id is not None
    runtime.close()

    child = subprocess.run(
        [sys.executable, "-c", FULL_DISK, config.model_dump_json(), str(queued.outbox_id)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == "pending"
    sent = config.outbound_dir
    assert list(sent.iterdir()) == []  # neither the email nor a temp file

    runtime = Runtime.create(config)
    with runtime.unit_of_work() as session:
        row = session.get(Outbox, queued.outbox_id)
        assert row is not None and row.state == OutboxState.PENDING
        assert row.last_error == f"cannot write to {sent}: File too large"
        assert row.next_attempt_at is not None
        due = row.next_attempt_at
    runtime.clock = lambda: due  # type: ignore[method-assign]
    # The disk has room again: the retry writes the email, once.
    assert outbound.send_outbound(runtime, queued.outbox_id) == OutboxState.SENT
    assert [p.suffix for p in sent.iterdir()] == [".eml"]
    runtime.close()
