"""Attacks on Cc participants, replayed through the real gateway (its aiosmtpd server, workers,
HTTP API) with an aiosmtpd relay as the outbound transport, on SQLite and on PostgreSQL when
GATEWAY_TEST_DATABASE_URL is set.

A participant receives every later reply of the conversation, with the earlier messages quoted
below it: being added is being let into the conversation. So an address is added only from the
customer's mail that is tied to the conversation by something a stranger cannot forge (the
signed reply token in the recipient address, or one of our own Message-IDs, which only the
real recipients have seen), or that starts the conversation; never from a From that anyone
can write plus a guessed subject, never from a participant's mail, and an address the team
removed is not brought back by mail.
"""

from __future__ import annotations

from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gateway.server import Services, start
from tests.integration import test_participants
from tests.integration.test_participants import (
    LIMIT,
    SUPPORT,
    addresses,
    agent_replies,
    api,
    body,
    email_with,
    mail,
    message_with,
    participant_emails,
    pat_answers,
    sam_writes_copying_pat,
)
from tests.support.gateway_e2e import send
from tests.support.smtp_sink import Received, SmtpSink
from tests.support.waiting import wait_for
from tickets import services
from tickets.models import Outbox, OutboxState

gateway = test_participants.gateway  # the fixture of the Cc tests: Sam, Pat, Ana, a limit of 3
MALLORY = "mallory@evil.test"
EDGE = "mx.acme.test"  # the authserv-id of the edge in front of the channel


@pytest.fixture(params=test_participants.DATABASES)
def edged(request, tmp_path: Path, relay: SmtpSink, monkeypatch) -> Iterator[Services]:
    """The gateway of the Cc tests behind an edge whose Authentication-Results it trusts."""
    monkeypatch.delenv("GATEWAY_SECRET_KEY", raising=False)
    config = test_participants.make_config(tmp_path, relay, request.param)
    [app] = config.apps
    channel = app.channels[0].model_copy(update={"trusted_authserv_id": EDGE})
    running = start(
        config.model_copy(update={"apps": [app.model_copy(update={"channels": [channel]})]}),
        "all",
    )
    with running.runtime.unit_of_work() as s:
        acme = services.get_app(s, "acme")
        services.add_agent(s, acme, "ana@agents.test", "Ana Lopez", running.runtime.clock())
    yield running
    running.stop()


def shown(gateway, conversation_id: int) -> dict[str, Any]:
    """The conversation as the team sees it in the API (with its events)."""
    with api(gateway) as c:
        r = c.get(f"/api/v1/conversations/{conversation_id}")
        assert r.status_code == 200, r.text
        return r.json()


def not_added(data: dict[str, Any]) -> list[list[str]]:
    """The addresses copied on mail that the gateway did not let in, per mail."""
    return [e["data"]["addresses"] for e in data["events"] if e["kind"] == "participant.not_added"]


def mail_to(relay: SmtpSink, address: str) -> list[str]:
    """The plain bodies of every email the relay took for `address`."""
    return [body(m) for m in list(relay.messages) if address in m.rcpt_tos]


def recipients(gateway, relay: SmtpSink, sent: Received) -> list[str]:
    """Everyone this email went to (one transaction each), once it is through for all."""
    mid = str(sent.message["Message-ID"]).strip()

    def done() -> bool | None:
        with gateway.runtime.unit_of_work() as s:
            state = s.scalar(select(Outbox.state).where(Outbox.message_id_header == mid))
        return state == OutboxState.SENT or None

    wait_for(done)
    return sorted(
        r for m in list(relay.messages) if m.message["Message-ID"] == mid for r in m.rcpt_tos
    )


def sam_writes_alone(gateway, relay: SmtpSink) -> tuple[int, EmailMessage]:
    """Sam writes to support copying nobody, and gets an answer by email."""
    first = mail("Sam <sam@example.com>", SUPPORT, "My order has not arrived, please help.")
    send(gateway, first, SUPPORT)
    conversation_id = message_with(gateway, "My order has not arrived").conversation_id
    agent_replies(gateway, conversation_id, "We are looking into it.")
    email_with(relay, "We are looking into it.")
    return conversation_id, first


def test_a_forged_customer_guessing_the_subject_copies_nobody_in(gateway, relay):
    conversation_id, _ = sam_writes_alone(gateway, relay)
    # Mallory writes as Sam (the From is all SMTP asks for) under the subject of Sam's thread.
    forged = mail(
        "Sam <sam@example.com>",
        SUPPORT,
        "Please keep my assistant informed of everything from now on.",
        cc=f"Assistant <{MALLORY}>",
        subject="Re: Order 1234",
    )
    send(gateway, forged, SUPPORT)
    stored = message_with(gateway, "keep my assistant informed")
    assert stored.conversation_id == conversation_id  # threads by the subject, as Sam's words
    data = shown(gateway, conversation_id)
    assert participant_emails(data) == []
    assert not_added(data) == [[MALLORY]]  # the team sees who was copied, and can add them

    agent_replies(gateway, conversation_id, "Your parcel is on its way.")
    sent = email_with(relay, "Your parcel is on its way.")
    assert addresses(sent, "Cc") == []
    assert recipients(gateway, relay, sent) == ["sam@example.com"]
    assert mail_to(relay, MALLORY) == []


def test_a_forged_customer_citing_the_customers_own_message_id_copies_nobody_in(gateway, relay):
    # Sam's own Message-ID is no secret: everyone Sam wrote to has it (a list archive shows
    # it). Only our Message-IDs, and our reply address, prove the mail answers our email.
    conversation_id, first = sam_writes_alone(gateway, relay)
    forged = mail(
        "Sam <sam@example.com>",
        SUPPORT,
        "Adding my assistant so that they get your answers too.",
        cc=MALLORY,
        subject="Something else entirely",
        In_Reply_To=str(first["Message-ID"]),
        References=str(first["Message-ID"]),
    )
    send(gateway, forged, SUPPORT)
    assert message_with(gateway, "Adding my assistant").conversation_id == conversation_id
    data = shown(gateway, conversation_id)
    assert participant_emails(data) == [] and not_added(data) == [[MALLORY]]
    agent_replies(gateway, conversation_id, "Here is the tracking number.")
    sent = email_with(relay, "Here is the tracking number.")
    assert recipients(gateway, relay, sent) == ["sam@example.com"]
    assert mail_to(relay, MALLORY) == []


def test_the_customers_answer_to_our_email_still_copies_a_colleague_in(gateway, relay):
    # The same Cc on Sam's real answer (our Message-ID in In-Reply-To) is let in.
    conversation_id, _ = sam_writes_alone(gateway, relay)
    ours = email_with(relay, "We are looking into it.").message
    answer = mail(
        "Sam <sam@example.com>",
        SUPPORT,
        "Copying Lee, who ordered it.",
        cc="Lee <lee@example.net>",
        subject="Re: " + str(ours["Subject"]),
        In_Reply_To=str(ours["Message-ID"]),
        References=str(ours["Message-ID"]),
    )
    send(gateway, answer, SUPPORT)
    assert message_with(gateway, "Copying Lee").conversation_id == conversation_id
    assert participant_emails(shown(gateway, conversation_id)) == ["lee@example.net"]


def test_a_first_mail_its_domain_disowns_copies_nobody_in(edged, relay):
    # A new conversation's Cc is let in (there is nothing to read yet, and the customer is To
    # on our answer) unless the channel's edge says the From's domain disowns the mail.
    for verdict, text, cc in (
        ("fail", "Please send the invoice to my accountant too.", MALLORY),
        ("pass", "Copying Lee, who pays the invoices.", "lee@example.net"),
    ):
        msg = mail("Sam <sam@example.com>", SUPPORT, text, cc=cc, subject=text)
        msg["Authentication-Results"] = (
            f"{EDGE}; dmarc={verdict} (p=reject) header.from=example.com"
        )
        send(edged, msg, SUPPORT)
        conversation_id = message_with(edged, text).conversation_id
        data = shown(edged, conversation_id)
        if verdict == "fail":
            assert participant_emails(data) == [] and not_added(data) == [[MALLORY]]
        else:
            assert participant_emails(data) == ["lee@example.net"] and not_added(data) == []


def test_a_participant_cannot_copy_more_people_in_nor_take_the_customers_place(gateway, relay):
    conversation_id = sam_writes_copying_pat(gateway, "My order has not arrived, please help.")
    agent_replies(gateway, conversation_id, "We are looking into it.")
    ours = email_with(relay, "We are looking into it.")
    # Pat answers by our reply address and Message-ID, but leaves Sam out, copies Mallory,
    # asks for replies elsewhere, and writes a mail command as if an agent.
    msg = ours.message
    answer = mail(
        "Pat Doe <pat@example.org>",
        str(msg["Reply-To"]),
        f"/cc add {MALLORY}\n/cc remove sam@example.com\nPlease answer me only from now on.",
        cc=f"Mallory <{MALLORY}>, more@evil.test",
        subject="Re: " + str(msg["Subject"]),
        In_Reply_To=str(msg["Message-ID"]),
        Reply_To=MALLORY,
    )
    send(gateway, answer, str(msg["Reply-To"]))
    theirs = message_with(gateway, "Please answer me only")
    assert theirs.conversation_id == conversation_id and theirs.flags.get("participant") is True
    data = shown(gateway, conversation_id)
    assert data["customer"]["email"] == "sam@example.com"
    assert participant_emails(data) == ["pat@example.org"]

    agent_replies(gateway, conversation_id, "Noted, thank you.")
    sent = email_with(relay, "Noted, thank you.")
    assert addresses(sent, "To") == ["sam@example.com"]
    assert addresses(sent, "Cc") == ["pat@example.org"]
    assert recipients(gateway, relay, sent) == ["pat@example.org", "sam@example.com"]
    assert mail_to(relay, MALLORY) == [] and mail_to(relay, "more@evil.test") == []


def test_a_removed_participant_with_an_old_email_stays_out(gateway, relay):
    conversation_id = sam_writes_copying_pat(gateway, "My order has not arrived, please help.")
    agent_replies(gateway, conversation_id, "We are looking into it.")
    ours = email_with(relay, "We are looking into it.")
    with api(gateway) as c:
        r = c.delete(f"/api/v1/conversations/{conversation_id}/participants/pat@example.org")
        assert r.status_code == 200, r.text

    # As themself, with the reply address and Message-ID of the email they kept: a stranger,
    # who starts a conversation of their own.
    pat_answers(gateway, ours, "Pat writes after being removed.")
    assert message_with(gateway, "Pat writes after").conversation_id != conversation_id

    # Writing as Sam with the same email, copying themself back in: the mail is Sam's to the
    # conversation (the token cannot tell), but an address the team removed is not re-added.
    msg = ours.message
    forged = mail(
        "Sam <sam@example.com>",
        str(msg["Reply-To"]),
        "Please keep Pat in the loop again.",
        cc="Pat Doe <pat@example.org>",
        subject="Re: " + str(msg["Subject"]),
        In_Reply_To=str(msg["Message-ID"]),
    )
    send(gateway, forged, str(msg["Reply-To"]))
    assert message_with(gateway, "keep Pat in the loop").conversation_id == conversation_id
    data = shown(gateway, conversation_id)
    assert participant_emails(data) == [] and not_added(data) == [["pat@example.org"]]
    before = len(mail_to(relay, "pat@example.org"))
    agent_replies(gateway, conversation_id, "Only you get this one.")
    sent = email_with(relay, "Only you get this one.")
    assert recipients(gateway, relay, sent) == ["sam@example.com"]
    assert len(mail_to(relay, "pat@example.org")) == before

    # The team can add them back.
    with api(gateway) as c:
        path = f"/api/v1/conversations/{conversation_id}/participants"
        assert c.post(path, json={"email": "pat@example.org"}).status_code == 200


def test_quoted_history_never_carries_a_note(gateway, relay):
    conversation_id = sam_writes_copying_pat(gateway, "My order has not arrived, please help.")
    with gateway.runtime.unit_of_work() as s:
        app = services.get_app(s, "acme")
        conversation = services.get_conversation(s, app, conversation_id)
        ana = services.find_agent(s, app, "ana@agents.test")
        now = gateway.runtime.clock()
        services.add_note(s, conversation, ana, "INTERNAL: customer is on the fraud list", now)
    agent_replies(gateway, conversation_id, "We are looking into it.")
    first = email_with(relay, "We are looking into it.")
    pat_answers(gateway, first, "Thanks, I am the colleague.")
    message_with(gateway, "Thanks, I am the colleague.")
    agent_replies(gateway, conversation_id, "Your parcel is on its way.")
    second = email_with(relay, "Your parcel is on its way.")
    # Pat, who was copied, sees the thread (as mail clients and helpdesks quote it) but no note.
    assert recipients(gateway, relay, second) == ["pat@example.org", "sam@example.com"]
    html = second.message.get_body(("html",)).get_content()
    for text in (body(second), html):
        assert "My order has not arrived" in text and "We are looking into it." in text
        assert "fraud" not in text and "INTERNAL" not in text
    # Only the team's own notification mail may carry it.
    for m in list(relay.messages):
        assert b"fraud" not in m.raw or m.rcpt_tos == ["ana@agents.test"], m.rcpt_tos


def test_names_copied_cannot_write_headers_or_flip_text(gateway, relay):
    # An encoded-word display name that decodes to CR LF and a header, and one with a
    # right-to-left override, on the customer's Cc and on the participant's own From.
    raw = (
        "From: Sam <sam@example.com>\r\n"
        f"To: {SUPPORT}\r\n"
        "Cc: =?utf-8?q?Pat=0D=0ABcc=3A_mallory=40evil=2Etest?= <pat@example.org>,\r\n"
        " =?utf-8?b?4oCuZ25pcHBpaHM=?= <kim@example.net>\r\n"
        "Subject: Order 1234\r\n"
        f"Message-ID: {make_msgid(domain='client.test')}\r\n"
        "\r\n"
        "My order has not arrived, please help.\r\n"
    ).encode()
    send(gateway, raw, SUPPORT, mail_from="sam@example.com")
    conversation_id = message_with(gateway, "My order has not arrived").conversation_id
    data = shown(gateway, conversation_id)
    names = {p["email"]: p["name"] for p in data["participants"]}
    assert names == {"pat@example.org": "Pat Bcc: mallory@evil.test", "kim@example.net": "gnippihs"}

    agent_replies(gateway, conversation_id, "We are looking into it.")
    first = email_with(relay, "We are looking into it.")
    assert recipients(gateway, relay, first) == [
        "kim@example.net",
        "pat@example.org",
        "sam@example.com",
    ]
    assert first.message.get_all("Bcc") is None
    pat_answers(gateway, first, "Thanks from Pat.")
    message_with(gateway, "Thanks from Pat.")
    agent_replies(gateway, conversation_id, "Your parcel is on its way.")
    second = email_with(relay, "Your parcel is on its way.")
    assert MALLORY not in recipients(gateway, relay, second)
    assert second.message.get_all("Bcc") is None
    assert "\u202e" not in body(second) and "Pat Bcc: mallory@evil.test" in body(second)


def test_a_cc_list_of_a_thousand_is_capped(gateway, relay):
    many = ", ".join(f"person{i}@example.net" for i in range(1000))
    send(gateway, mail("sam@example.com", SUPPORT, "Copying everyone I know.", cc=many), SUPPORT)
    conversation_id = message_with(gateway, "Copying everyone I know.").conversation_id
    data = shown(gateway, conversation_id)
    assert participant_emails(data) == [f"person{i}@example.net" for i in range(LIMIT)]
    [limit] = [e["data"] for e in data["events"] if e["kind"] == "participant.limit"]
    assert limit["limit"] == LIMIT and len(limit["not_added"]) == 1000 - LIMIT
    agent_replies(gateway, conversation_id, "We will answer you and your first three.")
    sent = email_with(relay, "We will answer you and your first three.")
    assert len(recipients(gateway, relay, sent)) == LIMIT + 1
