"""The thread headers we write reach the customer's mail client verbatim: Message-ID,
In-Reply-To and References are never RFC 2047-encoded (an encoded id matches nothing, and the
customer's client shows our reply as a new thread), a long References chain is folded only
between ids, and an id that could not be written verbatim is left out rather than encoded.

Each test sends through the real outbound transport (aiosmtpd on loopback) and reads the bytes
the relay received."""

from __future__ import annotations

import re

from channels.email.compose import fold_ids, message_id_ok
from gateway.runtime import Runtime
from tests.integration.test_outbound import (
    Clock,
    agent_reply,
    deliver_and_send,
    gw,  # noqa: F401 - the fixture
)
from tests.support.smtp_sink import Received, SmtpSink
from tickets import services
from tickets.models import Via

# An ordinary Message-ID of Outlook on Exchange Online (88 characters and more are common).
OUTLOOK_ID = (
    "<DB9PR07MB7771A1B2C3D4E5F60718293A4B5C6D7E8F9A0B1C2D3E4F5A6B7C"
    "@DB9PR07MB7771.eurprd07.prod.outlook.com>"
)


def header_lines(got: Received) -> dict[str, str]:
    """Each header of the raw bytes as it was on the wire, folds (CRLF + space) kept."""
    head = got.raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    fields: dict[str, str] = {}
    for line in re.split(r"\r\n(?![ \t])", head):
        name, _, value = line.partition(":")
        fields[name.lower()] = value
    return fields


def email_conversation(rt: Runtime, their_id: str) -> int:
    with rt.unit_of_work() as s:
        app = services.get_app(s, "demo")
        customer = services.create_customer(s, app, rt.clock(), email="maria@example.org")
        conversation, _ = services.start_conversation(
            s,
            app,
            customer,
            Via.EMAIL,
            "Hello, my order never arrived.",
            rt.clock(),
            subject="Order missing",
            email_message_id=their_id,
        )
        services.add_agent(s, app, "ana@localhost", "Ana", rt.clock())
        return conversation.id


def reply_and_send(rt: Runtime, clock: Clock, relay: SmtpSink, cid: int, text: str) -> Received:
    before = len(relay.messages)
    agent_reply(rt, cid, text)
    clock.advance(121)
    deliver_and_send(rt)
    return relay.wait_for(before + 1)[before]


def test_a_long_outlook_message_id_is_answered_verbatim(gw, relay):  # noqa: F811
    rt, clock = gw
    cid = email_conversation(rt, OUTLOOK_ID)
    got = reply_and_send(rt, clock, relay, cid, "We are looking into it.")
    wire = header_lines(got)
    assert b"=?" not in got.raw.split(b"\r\n\r\n", 1)[0]
    assert wire["in-reply-to"] == f" {OUTLOOK_ID}"
    assert wire["references"] == f" {OUTLOOK_ID}"
    assert re.fullmatch(r" <[a-z]{26}@localhost>", wire["message-id"])
    # What the customer's client reads back is the id it sent.
    assert got.message["In-Reply-To"] == OUTLOOK_ID


def test_a_long_references_chain_is_folded_between_ids_only(gw, relay):  # noqa: F811
    rt, clock = gw
    cid = email_conversation(rt, OUTLOOK_ID)
    sent = [reply_and_send(rt, clock, relay, cid, f"Update {i}.") for i in range(4)]
    last = sent[-1]
    wire = header_lines(last)
    expected = [m.message["Message-ID"] for m in sent[:-1]] + [OUTLOOK_ID]
    # Folded (the chain is far longer than one 78-character line) ...
    assert "\r\n " in wire["references"]
    # ... only at the whitespace between whole ids: every id is intact on its line.
    for line in wire["references"].split("\r\n"):
        assert re.fullmatch(r"( <[^<>\s]+>)+", line), line
        assert len(line) <= 998
    assert wire["references"].split() == expected
    assert wire["in-reply-to"] == f" {OUTLOOK_ID}"
    assert last.message["References"].split() == expected


def test_an_id_with_a_line_break_is_left_out_not_encoded(gw, relay):  # noqa: F811
    rt, clock = gw
    cid = email_conversation(rt, "<evil@example.org>\r\nBcc: victim@example.net")
    got = reply_and_send(rt, clock, relay, cid, "Hello.")
    head = got.raw.split(b"\r\n\r\n", 1)[0]
    assert got.rcpt_tos == ["maria@example.org"]
    assert b"=?" not in head and b"victim" not in head and b"evil" not in head
    assert got.message["Bcc"] is None
    assert "in-reply-to" not in header_lines(got)


def test_an_id_with_non_ascii_is_left_out_not_encoded(gw, relay):  # noqa: F811
    rt, clock = gw
    cid = email_conversation(rt, "<bestellung-müller@example.de>")
    first = reply_and_send(rt, clock, relay, cid, "Hello.")
    head = first.raw.split(b"\r\n\r\n", 1)[0]
    assert b"=?" not in head and b"bestellung" not in head
    # The thread goes on with our own ids.
    second = reply_and_send(rt, clock, relay, cid, "Again.")
    wire = header_lines(second)
    assert wire["in-reply-to"] == " " + first.message["Message-ID"]
    assert wire["references"] == " " + first.message["Message-ID"]


def test_folding_rules():
    ids = [f"<{'x' * 30}{i}@example.com>" for i in range(6)]
    folded = fold_ids("References", ids)
    lines = folded.split("\r\n")
    assert all(len(line) <= 78 for line in lines)
    assert folded.removeprefix("References:").split() == ids
    # An id longer than a line is alone on its line, never cut.
    huge = f"<{'y' * 200}@example.com>"
    assert fold_ids("In-Reply-To", [huge]) == f"In-Reply-To: {huge}"
    assert fold_ids("References", ["<a@b>", huge, "<c@d>"]).split("\r\n") == [
        "References: <a@b>",
        f" {huge}",
        " <c@d>",
    ]
    for bad in ("<a b@c>", "<a@b>\r\n", "a@b", "<ä@b>", "<a@b><c@d>", "<a\x00@b>", "<>"):
        assert not message_id_ok(bad), bad
    assert message_id_ok(OUTLOOK_ID) and message_id_ok("<a.b+c=d@[127.0.0.1]>")
