"""End to end through real servers: the gateway (`gateway.server.start`: its aiosmtpd inbound
server, workers and scheduler) and an aiosmtpd relay on loopback, driven with smtplib.

A customer writes; the assignee's notification arrives at the sink; the agent answers it as
Gmail, Outlook or Apple Mail would quote it, by SMTP to its Reply-To; the customer receives only
the new text, in the chat's voice. A /note answer stays internal; commands change the ticket.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import select

from gateway.config import AppConfig, ChannelConfig, GatewayConfig
from gateway.server import Services, start
from tests.support.agent_mail import HTML_ONLY, STYLES, quoted_reply, quoted_reply_html
from tests.support.gateway_e2e import relay_config, send
from tests.support.smtp_sink import Received, SmtpSink
from tests.support.waiting import wait_for
from tickets import services
from tickets.models import InboundMail, InboundState, Note, Priority, TicketStatus
from tickets.vocabulary import find_internal_words

SUPPORT = "support@acme.test"


def make_config(tmp_path: Path, relay: SmtpSink) -> GatewayConfig:
    apps = [
        AppConfig(
            name="acme", brand="Acme", channels=[ChannelConfig(name="support", addresses=[SUPPORT])]
        )
    ]
    return relay_config(tmp_path, relay, apps)


@pytest.fixture
def gateway(tmp_path: Path, relay: SmtpSink, monkeypatch) -> Iterator[Services]:
    monkeypatch.delenv("GATEWAY_SECRET_KEY", raising=False)
    running = start(make_config(tmp_path, relay), "all")
    yield running
    running.stop()


def mails_to(relay: SmtpSink, address: str, subject_part: str = "") -> list[Received]:
    return [
        m
        for m in list(relay.messages)
        if address in m.rcpt_tos and subject_part in str(m.message["Subject"])
    ]


def setup_ticket(gateway: Services) -> int:
    """Sam has an email conversation, converted into a ticket assigned to Ana."""
    rt = gateway.runtime
    with rt.unit_of_work() as s:
        app = services.get_app(s, "acme")
        ana = services.add_agent(s, app, "ana@agents.test", "Ana Lopez", rt.clock())
        services.add_agent(s, app, "bob@agents.test", "Bob Stone", rt.clock())
        customer = services.create_customer(s, app, rt.clock(), name="Sam", email="sam@example.com")
        conversation, _ = services.start_conversation(
            s, app, customer, "email", "My parcel never arrived", rt.clock(), subject="Parcel"
        )
        services.convert(s, conversation, ana, rt.clock(), assignee=ana)
        return conversation.id


def customer_writes(gateway: Services, text: str) -> None:
    msg = EmailMessage()
    msg["From"] = "Sam <sam@example.com>"
    msg["To"] = SUPPORT
    msg["Subject"] = "Re: Parcel"
    msg.set_content(text)
    send(gateway, msg, SUPPORT)


def answer(
    gateway: Services,
    notification: Received,
    style: str,
    text: str,
    attachments: tuple[tuple[str, str, bytes], ...] = (),
) -> None:
    note = notification.message
    quoted = note.get_body(("plain",)).get_content()
    reply = EmailMessage()
    reply["From"] = "Ana Lopez <ana@agents.test>"
    reply["To"] = str(note["Reply-To"])
    reply["Subject"] = "Re: " + str(note["Subject"])
    reply["In-Reply-To"] = str(note["Message-ID"])
    if style == HTML_ONLY:
        reply.set_content(quoted_reply_html(text, str(note["From"]), quoted), subtype="html")
    else:
        reply.set_content(quoted_reply(style, text, str(note["From"]), quoted))
    for filename, content_type, content in attachments:
        maintype, subtype = content_type.split("/")
        reply.add_attachment(content, maintype=maintype, subtype=subtype, filename=filename)
    send(gateway, reply, str(note["Reply-To"]))


def notification_for(relay: SmtpSink, text: str) -> Received:
    def find():
        for m in mails_to(relay, "ana@agents.test", "New message"):
            if text in m.message.get_body(("plain",)).get_content():
                return m
        return None

    return wait_for(find)


@pytest.mark.parametrize("style", STYLES)
def test_an_agent_answers_a_notification_from_their_mail_client(gateway, relay, style):
    conversation_id = setup_ticket(gateway)
    customer_writes(gateway, "Any news about my parcel?")
    notification = notification_for(relay, "Any news about my parcel?")
    msg = notification.message
    assert msg["Auto-Submitted"] == "auto-generated"
    assert str(msg["Reply-To"]).startswith("support+") and msg["Reply-To"].endswith("@acme.test")
    assert notification.rcpt_tos == ["ana@agents.test"]
    body = msg.get_body(("plain",)).get_content()
    assert "Ticket #1" in body and "My parcel never arrived" in body

    label = ("label.pdf", "application/pdf", b"%PDF-1.4 return label")
    answer(gateway, notification, style, "Hi Sam, a new one is on its way.", (label,))
    [to_customer] = wait_for(lambda: mails_to(relay, "sam@example.com"))
    # The agent's attachment is passed on to the customer.
    [attached] = list(to_customer.message.iter_attachments())
    assert (attached.get_filename(), attached.get_content()) == ("label.pdf", label[2])
    text = to_customer.message.get_body(("plain",)).get_content()
    assert "Hi Sam, a new one is on its way." in text
    assert "Ana" in str(to_customer.message["From"])
    # Only the new text: nothing of the notification (ticket layer, marker) reaches Sam.
    for leaked in ("Ticket #", "Reply above this line", "priority", "/note", "ana@agents.test"):
        assert leaked not in text
    assert find_internal_words(str(to_customer.message["Subject"]), ticket_refs=[1]) == []
    with gateway.runtime.unit_of_work() as s:
        conversation = services.get_conversation(s, services.get_app(s, "acme"), conversation_id)
        assert conversation.messages[-1].text == "Hi Sam, a new one is on its way."


def test_a_note_answer_stays_internal_and_commands_change_the_ticket(gateway, relay):
    conversation_id = setup_ticket(gateway)
    customer_writes(gateway, "Can I get a refund instead?")
    notification = notification_for(relay, "Can I get a refund instead?")
    answer(
        gateway,
        notification,
        "gmail",
        "/note\n/priority high\n/assign bob\n/tag refund\n/status waiting\n"
        "Refund approved by phone.",
    )

    def noted():
        with gateway.runtime.unit_of_work() as s:
            return s.scalar(select(Note).where(Note.conversation_id == conversation_id))

    note = wait_for(noted)
    assert note.text == "Refund approved by phone."
    with gateway.runtime.unit_of_work() as s:
        conversation = services.get_conversation(s, services.get_app(s, "acme"), conversation_id)
        ticket = conversation.ticket
        assert (
            ticket.priority == Priority.HIGH and ticket.status == TicketStatus.WAITING_ON_CUSTOMER
        )
        assert ticket.assignee.email == "bob@agents.test"
        assert [t.name for t in conversation.tags] == ["refund"]
    # Bob is told he was assigned; Sam gets nothing.
    wait_for(lambda: mails_to(relay, "bob@agents.test", "Assigned to you"))
    time.sleep(1.5)
    assert mails_to(relay, "sam@example.com") == []


def test_a_forwarded_notification_answered_by_someone_else_is_quarantined_and_ana_told(
    gateway, relay
):
    setup_ticket(gateway)
    customer_writes(gateway, "Hello?")
    notification = notification_for(relay, "Hello?")
    forwarded = EmailMessage()
    forwarded["From"] = "Eve <eve@elsewhere.test>"
    forwarded["To"] = str(notification.message["Reply-To"])
    forwarded["Subject"] = "Re: " + str(notification.message["Subject"])
    forwarded.set_content("I'll take this one. Refund on its way!")
    send(gateway, forwarded, str(notification.message["Reply-To"]))

    [notice] = wait_for(lambda: mails_to(relay, "ana@agents.test", "not accepted"))
    assert "eve@elsewhere.test" in notice.message.get_body(("plain",)).get_content()
    assert mails_to(relay, "eve@elsewhere.test") == []
    with gateway.runtime.unit_of_work() as s:
        row = s.scalar(select(InboundMail).where(InboundMail.state == InboundState.QUARANTINED))
        assert row is not None and "sender" in (row.reason or "")
    time.sleep(1.5)
    assert mails_to(relay, "sam@example.com") == []
