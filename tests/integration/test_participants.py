"""Cc participants end to end: the real gateway (its aiosmtpd server, workers, scheduler, HTTP
API) and an aiosmtpd relay on loopback, driven with smtplib, httpx and the `gateway` command.

A customer copies a colleague: the colleague becomes a participant of the conversation (not a
customer with a conversation of their own); our replies go To the customer and Cc them; their
reply-all threads into the same conversation as theirs. The support addresses, return paths and
agents are never added; a stranger guessing the subject, or a removed participant, does not get
in. Agents add and remove participants by API, CLI and mail command. On SQLite, and on
PostgreSQL when GATEWAY_TEST_DATABASE_URL is set.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import getaddresses, make_msgid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from gateway.api_tokens import issue_token
from gateway.config import AppConfig, ChannelConfig, GatewayConfig, embedded_default
from gateway.server import Services, start
from gateway.views import conversation_detail
from tests.conftest import PG_URL, reset_postgres
from tests.support.agent_mail import quoted_reply
from tests.support.gateway_e2e import relay_config, send
from tests.support.smtp_sink import Received, SmtpSink
from tests.support.waiting import wait_for
from tickets import participants, services
from tickets.models import Conversation, CustomerAddress, InboundMail, Message

SUPPORT = "support@acme.test"
HELP = "help@acme.test"  # a second address of the app's channel
LIMIT = 3
DATABASES = ["sqlite"] + (["postgresql"] if PG_URL else [])

# What the customer writes, what the colleague answers, and how our email greets, per locale.
LOCALES = {
    "en": (
        "Hello, my order has not arrived yet. Can you please check what happened to it?",
        "Thanks, I am the colleague who ordered it for the office.",
        "Hi Sam",
    ),
    "de": (
        "Hallo, meine Bestellung ist noch nicht angekommen. Können Sie bitte nachsehen, was "
        "mit ihr ist?",
        "Danke, ich bin die Kollegin, die die Bestellung für das Büro aufgegeben hat.",
        "Hallo Sam",
    ),
    "es": (
        "Hola, mi pedido no ha llegado todavía. ¿Pueden ver qué pasa con el pedido, por favor?",
        "Gracias, yo soy la colega que hizo el pedido para la oficina.",
        "Hola Sam",
    ),
    "fr": (
        "Bonjour, ma commande n'est pas encore arrivée. Pouvez-vous vérifier ce qui se passe "
        "avec la commande ?",
        "Merci, je suis la collègue qui a passé la commande pour le bureau.",
        "Bonjour Sam",
    ),
}


def make_config(tmp_path: Path, relay: SmtpSink, database: str) -> GatewayConfig:
    url = f"sqlite:///{tmp_path / 'gw.db'}"
    if database == "postgresql":
        assert PG_URL
        reset_postgres(PG_URL).dispose()
        url = PG_URL
    apps = [
        AppConfig(
            name="acme",
            brand="Acme",
            channels=[ChannelConfig(name="support", addresses=[SUPPORT, HELP])],
        )
    ]
    limits = embedded_default().limits.model_copy(update={"max_participants": LIMIT})
    return relay_config(tmp_path, relay, apps, database_url=url, limits=limits)


@pytest.fixture(params=DATABASES)
def gateway(request, tmp_path: Path, relay: SmtpSink, monkeypatch) -> Iterator[Services]:
    monkeypatch.delenv("GATEWAY_SECRET_KEY", raising=False)
    running = start(make_config(tmp_path, relay, request.param), "all")
    with running.runtime.unit_of_work() as s:
        app = services.get_app(s, "acme")
        services.add_agent(s, app, "ana@agents.test", "Ana Lopez", running.runtime.clock())
    yield running
    running.stop()


def mail(
    sender: str, to: str, text: str, *, cc: str = "", subject: str = "Order 1234", **headers: str
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    if cc:
        msg["Cc"] = cc
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="client.test")
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(text)
    return msg


def message_with(gateway: Services, text: str) -> Message:
    """The stored message carrying `text`, once the gateway has processed it."""

    def find() -> Message | None:
        with gateway.runtime.unit_of_work() as s:
            return s.scalar(select(Message).where(Message.text.contains(text)))

    return wait_for(find)


def detail(gateway: Services, conversation_id: int) -> dict[str, Any]:
    with gateway.runtime.unit_of_work() as s:
        conversation = services.get_conversation(s, services.get_app(s, "acme"), conversation_id)
        return conversation_detail(conversation)


def conversations_of(gateway: Services, address: str) -> list[int]:
    with gateway.runtime.unit_of_work() as s:
        return list(
            s.scalars(
                select(Conversation.id)
                .join(CustomerAddress, CustomerAddress.customer_id == Conversation.customer_id)
                .where(CustomerAddress.address == address)
            )
        )


def agent_replies(gateway: Services, conversation_id: int, text: str) -> None:
    with gateway.runtime.unit_of_work() as s:
        app = services.get_app(s, "acme")
        conversation = services.get_conversation(s, app, conversation_id)
        ana = services.find_agent(s, app, "ana@agents.test")
        services.add_agent_message(s, conversation, ana, text, gateway.runtime.clock())


def email_with(relay: SmtpSink, text: str) -> Received:
    def find() -> Received | None:
        for m in list(relay.messages):
            if "sam@example.com" in m.rcpt_tos and text in body(m):
                return m
        return None

    return wait_for(find)


def transactions_of(relay: SmtpSink, email: Received, count: int) -> list[Received]:
    """The relay's transactions carrying this email (its Message-ID), once there are `count`."""
    mid = email.message["Message-ID"]

    def find() -> list[Received] | None:
        found = [m for m in list(relay.messages) if m.message["Message-ID"] == mid]
        return found if len(found) >= count else None

    return wait_for(find)


def body(received: Received) -> str:
    return received.message.get_body(("plain",)).get_content()


def addresses(received: Received, header: str) -> list[str]:
    return [a for _, a in getaddresses(received.message.get_all(header) or [])]


def participant_emails(data: dict[str, Any]) -> list[str]:
    return [p["email"] for p in data["participants"]]


def sam_writes_copying_pat(gateway: Services, text: str) -> int:
    """Sam copies Pat, and also (as mail clients do) our own addresses, a return path and an
    agent: only Pat becomes a participant."""
    send(
        gateway,
        mail(
            "Sam <sam@example.com>",
            SUPPORT,
            text,
            cc=f"Pat Doe <pat@example.org>, {HELP}, Ana <ana@agents.test>, "
            f"bounces+aaaa@acme.test, Support <{SUPPORT}>",
        ),
        SUPPORT,
    )
    return message_with(gateway, text).conversation_id


def pat_answers(gateway: Services, ours: Received, text: str, sender: str = "pat") -> None:
    """Reply-all from Pat's mail client: to our Reply-To, the customer in Cc, quoting us."""
    msg = ours.message
    answer = mail(
        f"Pat Doe <{sender}@example.org>",
        str(msg["Reply-To"]),
        quoted_reply("gmail", text, str(msg["From"]), body(ours)),
        cc="Sam <sam@example.com>",
        subject="Re: " + str(msg["Subject"]),
        In_Reply_To=str(msg["Message-ID"]),
        References=str(msg["Message-ID"]),
    )
    send(gateway, answer, str(msg["Reply-To"]))


@pytest.mark.parametrize("locale", sorted(LOCALES))
def test_a_copied_colleague_stays_in_the_loop(gateway, relay, locale):
    customer_text, colleague_text, greeting = LOCALES[locale]
    conversation_id = sam_writes_copying_pat(gateway, customer_text)
    data = detail(gateway, conversation_id)
    assert data["customer"]["email"] == "sam@example.com"
    assert data["participants"] == [
        {
            "email": "pat@example.org",
            "name": "Pat Doe",
            "added_by": "customer",
            "undeliverable": False,
            "created_at": data["participants"][0]["created_at"],
        }
    ]
    # Copied is not written: Pat, the agent and our own addresses have no conversation.
    for address in ("pat@example.org", "ana@agents.test", SUPPORT, HELP):
        assert conversations_of(gateway, address) == []

    agent_replies(gateway, conversation_id, "We are looking into it.")
    first = email_with(relay, "We are looking into it.")
    assert addresses(first, "To") == ["sam@example.com"]
    assert addresses(first, "Cc") == ["pat@example.org"]
    # One transaction per recipient, each under its own return path (VERP).
    copies = transactions_of(relay, first, 2)
    assert [m.rcpt_tos for m in copies] == [["sam@example.com"], ["pat@example.org"]]
    assert len({m.mail_from for m in copies}) == 2
    assert all(m.mail_from.startswith("bounces+") for m in copies)
    assert all(m.mail_from.endswith("@acme.test") for m in copies)
    assert body(first).startswith(greeting)

    pat_answers(gateway, first, colleague_text)
    theirs = message_with(gateway, colleague_text)
    assert theirs.conversation_id == conversation_id
    assert (theirs.author_type.value, theirs.from_address) == ("customer", "pat@example.org")
    assert theirs.flags.get("participant") is True
    assert "We are looking into it" not in theirs.text  # the quote is cut as for a customer
    assert conversations_of(gateway, "pat@example.org") == []
    assert participant_emails(detail(gateway, conversation_id)) == ["pat@example.org"]

    # The next email shows who wrote what: Pat's words under Pat's name, in Sam's language.
    agent_replies(gateway, conversation_id, "Your parcel is on its way.")
    second = email_with(relay, "Your parcel is on its way.")
    assert addresses(second, "Cc") == ["pat@example.org"]
    text = body(second)
    assert text.startswith(greeting)
    assert "Pat Doe" in text and colleague_text in text


def test_a_stranger_or_a_removed_participant_does_not_get_in(gateway, relay):
    conversation_id = sam_writes_copying_pat(gateway, "My order has not arrived, please help.")
    agent_replies(gateway, conversation_id, "We are looking into it.")
    ours = email_with(relay, "We are looking into it.")

    # Someone else answering our email (forwarded to them), even by our reply address and with
    # our Message-ID, and someone guessing the subject: each starts their own conversation.
    pat_answers(gateway, ours, "I am not on this thread but I answer anyway.", sender="mallory")
    guessed = mail("Mallory <mallory@example.org>", SUPPORT, "Cancel that order.")
    guessed.replace_header("Subject", "Re: Order 1234")
    send(gateway, guessed, SUPPORT)
    for text in ("I am not on this thread", "Cancel that order."):
        assert message_with(gateway, text).conversation_id != conversation_id
    assert conversation_id not in conversations_of(gateway, "mallory@example.org")

    # A participant an agent removed is a stranger from then on.
    with api(gateway) as c:
        r = c.delete(f"/api/v1/conversations/{conversation_id}/participants/pat@example.org")
        assert r.status_code == 200, r.text
        assert r.json()["participants"] == []
    pat_answers(gateway, ours, "Pat again, after being removed.")
    assert message_with(gateway, "Pat again").conversation_id != conversation_id
    assert [m["text"] for m in detail(gateway, conversation_id)["messages"]] == [
        "My order has not arrived, please help.",
        "We are looking into it.",
    ]


def api(gateway: Services) -> httpx.Client:
    """An API client of agent Ana against the gateway's own HTTP server."""
    [url] = [x.removeprefix("http: ") for x in gateway.listening if x.startswith("http: ")]
    with gateway.runtime.unit_of_work() as s:
        ana = services.find_agent(s, services.get_app(s, "acme"), "ana@agents.test")
        token = issue_token(s, ana, "test", gateway.runtime.clock())[1]
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def test_agents_add_and_remove_participants_by_api(gateway, relay):
    conversation_id = sam_writes_copying_pat(gateway, "My order has not arrived, please help.")
    path = f"/api/v1/conversations/{conversation_id}/participants"
    with api(gateway) as c:
        r = c.post(path, json={"email": "Lee@Example.net", "name": "Lee"})
        assert r.status_code == 200, r.text
        assert participant_emails(r.json()) == ["pat@example.org", "lee@example.net"]
        assert r.json()["participants"][1]["added_by"] == "agent"
        # Never our own addresses (any of them, a reply-token form too), an agent, the customer.
        for address, reason in (
            (SUPPORT, "support addresses"),
            ("HELP+abc@acme.test", "support addresses"),
            ("bounces+xyz@acme.test", "support addresses"),
            ("ana@agents.test", "agent"),
            ("sam@example.com", "customer"),
        ):
            r = c.post(path, json={"email": address})
            assert r.status_code == 400 and reason in r.json()["detail"], (address, r.text)
        assert c.post(path, json={"email": "kim@example.net"}).status_code == 200
        r = c.post(path, json={"email": "one-too-many@example.net"})
        assert r.status_code == 409 and f"({LIMIT})" in r.json()["detail"]
        r = c.delete(f"{path}/pat@example.org")
        assert participant_emails(r.json()) == ["lee@example.net", "kim@example.net"]
        assert c.delete(f"{path}/pat@example.org").status_code == 404
        shown = c.get(f"/api/v1/conversations/{conversation_id}").json()
        assert participant_emails(shown) == ["lee@example.net", "kim@example.net"]
        assert [e["kind"] for e in shown["events"] if e["kind"].startswith("participant")] == [
            "participant.added",
            "participant.added",
            "participant.added",
            "participant.removed",
        ]
    agent_replies(gateway, conversation_id, "Lee and Kim are in the loop now.")
    sent = email_with(relay, "Lee and Kim are in the loop now.")
    assert addresses(sent, "Cc") == ["lee@example.net", "kim@example.net"]
    copies = transactions_of(relay, sent, 3)
    assert sorted(r for m in copies for r in m.rcpt_tos) == [
        "kim@example.net",
        "lee@example.net",
        "sam@example.com",
    ]


def test_the_customers_cc_is_capped(gateway):
    many = ", ".join(f"c{i}@example.net" for i in range(LIMIT + 2))
    send(gateway, mail("sam@example.com", SUPPORT, "Copying my whole team.", cc=many), SUPPORT)
    conversation_id = message_with(gateway, "Copying my whole team.").conversation_id
    data = detail(gateway, conversation_id)
    assert participant_emails(data) == [f"c{i}@example.net" for i in range(LIMIT)]


def test_agents_add_and_remove_participants_by_cli(gateway, tmp_path):
    conversation_id = sam_writes_copying_pat(gateway, "My order has not arrived, please help.")
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'data_dir = "{tmp_path}"\ndatabase_url = "{gateway.runtime.config.database_url}"\n'
        f"[limits]\nmax_participants = {LIMIT}\n"
        '[[apps]]\nname = "acme"\nbrand = "Acme"\n'
        f'[[apps.channels]]\nname = "support"\naddresses = ["{SUPPORT}", "{HELP}"]\n'
    )

    def gw(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway", "--config", str(config), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    cid = str(conversation_id)
    added = gw("participants", "add", cid, "lee@example.net", "--by", "ana@agents.test")
    assert added.returncode == 0, added.stderr
    assert "lee@example.net" in added.stdout
    refused = gw("participants", "add", cid, HELP)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().count("\n") == 0 and "support addresses" in refused.stderr
    removed = gw("participants", "remove", cid, "pat@example.org")
    assert removed.returncode == 0, removed.stderr
    listed = json.loads(gw("participants", "list", cid, "--json").stdout)
    assert [(p["email"], p["added_by"]) for p in listed] == [("lee@example.net", "agent")]
    assert participant_emails(detail(gateway, conversation_id)) == ["lee@example.net"]


def test_agents_add_and_remove_participants_by_mail_command(gateway, relay):
    conversation_id = sam_writes_copying_pat(gateway, "My order has not arrived, please help.")
    with gateway.runtime.unit_of_work() as s:
        app = services.get_app(s, "acme")
        conversation = services.get_conversation(s, app, conversation_id)
        ana = services.find_agent(s, app, "ana@agents.test")
        services.convert(s, conversation, ana, gateway.runtime.clock(), assignee=ana)
    send(gateway, mail("sam@example.com", SUPPORT, "Any news about it?"), SUPPORT)

    def notification() -> Received | None:
        for m in list(relay.messages):
            if m.rcpt_tos == ["ana@agents.test"] and "Any news about it?" in body(m):
                return m
        return None

    note = wait_for(notification).message
    answer = mail(
        "Ana Lopez <ana@agents.test>",
        str(note["Reply-To"]),
        quoted_reply(
            "gmail",
            "/cc add lee@example.net\n/cc remove pat@example.org\nLee takes over from Pat.",
            str(note["From"]),
            body(wait_for(notification)),
        ),
        subject="Re: " + str(note["Subject"]),
        In_Reply_To=str(note["Message-ID"]),
    )
    send(gateway, answer, str(note["Reply-To"]))
    sent = email_with(relay, "Lee takes over from Pat.")
    assert addresses(sent, "Cc") == ["lee@example.net"]
    assert "/cc" not in body(sent)
    data = detail(gateway, conversation_id)
    assert participant_emails(data) == ["lee@example.net"]
    assert data["participants"][0]["added_by"] == "agent"

    # A command that cannot be done rejects the mail: nothing reaches the customer.
    bad = mail(
        "Ana Lopez <ana@agents.test>",
        str(note["Reply-To"]),
        quoted_reply("gmail", f"/cc add {HELP}\nThis must not go out.", str(note["From"]), ""),
        subject="Re: " + str(note["Subject"]),
    )
    send(gateway, bad, str(note["Reply-To"]))

    def rejected() -> Received | None:
        for m in list(relay.messages):
            if m.rcpt_tos == ["ana@agents.test"] and "support addresses" in body(m):
                return m
        return None

    wait_for(rejected)
    assert participant_emails(detail(gateway, conversation_id)) == ["lee@example.net"]
    assert not [m for m in relay.messages if "This must not go out." in body(m)]


def dsn(return_path: str, recipient: str) -> bytes:
    """A Postfix delivery report for one recipient, sent back to our return path."""
    return (
        "From: MAILER-DAEMON@mx.example.org (Mail Delivery System)\r\n"
        f"To: {return_path}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Auto-Submitted: auto-replied\r\n"
        f"Message-ID: {make_msgid(domain='mx.example.org')}\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\n"
        f"<{recipient}>: 550 5.1.1 User unknown\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.org\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 User unknown\r\n"
        "--b--\r\n"
    ).encode()


def test_a_participant_that_bounces_is_copied_no_longer(gateway, relay):
    conversation_id = sam_writes_copying_pat(gateway, "My order has not arrived, please help.")
    agent_replies(gateway, conversation_id, "We are looking into it.")
    ours = email_with(relay, "We are looking into it.")
    # Pat's copy went in a transaction of its own, under a return path naming Pat.
    (to_pat,) = [m for m in transactions_of(relay, ours, 2) if m.rcpt_tos == ["pat@example.org"]]
    send(gateway, dsn(to_pat.mail_from, "pat@example.org"), to_pat.mail_from)

    def bounced() -> list[dict[str, Any]] | None:
        found = detail(gateway, conversation_id)["participants"]
        return found if found and found[0]["undeliverable"] else None

    wait_for(bounced)
    data = detail(gateway, conversation_id)
    # Sam got the email: only the copy to Pat failed, and the agents see it in a note.
    assert data["customer"]["undeliverable"] == []
    assert [m["delivery_state"] for m in data["messages"] if m["author_type"] == "agent"] == [
        "sent"
    ]
    assert any("pat@example.org" in n["text"] for n in data["notes"])
    agent_replies(gateway, conversation_id, "Pat's address bounced, so only you get this.")
    sent = email_with(relay, "only you get this")
    assert sent.rcpt_tos == ["sam@example.com"] and addresses(sent, "Cc") == []


def test_a_notice_naming_nobody_to_a_participants_return_path_marks_that_participant(
    gateway, relay
):
    conversation_id = sam_writes_copying_pat(gateway, "My order has not arrived, please help.")
    with gateway.runtime.unit_of_work() as s:
        conversation = s.get(Conversation, conversation_id)
        participants.add(s, conversation, "lee@example.net", services.SYSTEM, s_now(gateway))
    agent_replies(gateway, conversation_id, "We are looking into it.")
    ours = email_with(relay, "We are looking into it.")
    (to_pat,) = [m for m in transactions_of(relay, ours, 3) if m.rcpt_tos == ["pat@example.org"]]
    # No layout we know, no address, no report part: only the return path says whose it is.
    notice = (
        "From: Mail Delivery Subsystem <MAILER-DAEMON@mx.example.org>\r\n"
        f"To: {to_pat.mail_from}\r\n"
        "Subject: Delivery failure\r\n"
        f"Message-ID: {make_msgid(domain='mx.example.org')}\r\n\r\n"
        "Your message could not be delivered. The mailbox is unavailable.\r\n"
    ).encode()
    send(gateway, notice, to_pat.mail_from)

    def bounced() -> dict[str, bool] | None:
        found = {
            p["email"]: p["undeliverable"] for p in detail(gateway, conversation_id)["participants"]
        }
        return found if found.get("pat@example.org") else None

    assert wait_for(bounced) == {"pat@example.org": True, "lee@example.net": False}
    data = detail(gateway, conversation_id)
    assert data["customer"]["undeliverable"] == []
    assert [m["delivery_state"] for m in data["messages"] if m["author_type"] == "agent"] == [
        "sent"
    ]
    # A person answering the same return path (an out-of-office) marks nobody.
    away = mail("Lee <lee@example.net>", to_pat.mail_from, "I am away until Monday.")
    send(gateway, away, to_pat.mail_from)
    assert "not applied" in wait_for(lambda: inbound_outcome(gateway, "away until Monday"))
    assert detail(gateway, conversation_id)["participants"][1]["undeliverable"] is False


def s_now(gateway: Services) -> Any:
    return gateway.runtime.clock()


def inbound_outcome(gateway: Services, text: str) -> str | None:
    with gateway.runtime.unit_of_work() as s:
        for row in s.scalars(select(InboundMail).where(InboundMail.processed_at.is_not(None))):
            if text.encode() in row.raw:
                return str(row.reason)
    return None
