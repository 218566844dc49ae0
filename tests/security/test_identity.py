"""Identity is the address, never the display name: attacks on From (and on what names and
text reach headers and the stores), replayed through the gateway's own servers.

Mail goes in with smtplib to the gateway's aiosmtpd server (`gateway serve`'s wiring, on SQLite
and on PostgreSQL), is processed by its workers, and what an agent or a customer would notice is
asserted: whose conversation a mail lands in, who a message is posted as, what is quarantined
and why, and what the headers of the mail that goes out say.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import smtplib
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from channels.email.addresses import parse_addresses
from channels.email.compose import compose
from channels.email.parse import parse_message
from channels.email.tokens import agent_token, reply_address
from gateway.config import embedded_default
from gateway.server import Services, start
from tests.conftest import DATABASES
from tests.security.conftest import fresh_database
from tests.support.agent_mail import agent_mail
from tests.support.http import free_port
from tests.support.waiting import wait_for
from tickets import services
from tickets.models import (
    AuthorType,
    Conversation,
    Customer,
    CustomerAddress,
    Event,
    InboundMail,
    InboundState,
    Message,
)

CHANNEL = "support@localhost"


@dataclass
class Gateway:
    services: Services
    port: int
    sent: Path

    def session(self) -> AbstractContextManager[Session]:
        return self.services.runtime.unit_of_work()


@pytest.fixture(scope="module", params=DATABASES)
def gateway(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """`gateway serve` (role all) on loopback, on SQLite and, when configured, PostgreSQL."""
    tmp = tmp_path_factory.mktemp("identity")
    url = fresh_database(request.param, tmp)
    base = embedded_default()
    port = free_port()
    config = base.model_copy(
        update={
            "database_url": url,
            "data_dir": str(tmp),
            "smtp": base.smtp.model_copy(update={"listen": f"127.0.0.1:{port}"}),
            "http": base.http.model_copy(update={"listen": "127.0.0.1:0"}),
            "delivery": base.delivery.model_copy(update={"email_grace_seconds": 0}),
            "sweep_seconds": 0.3,
            "worker_threads": 2,
        }
    )
    running = start(config, "all")
    try:
        yield Gateway(running, port, running.runtime.config.outbound_dir)
    finally:
        running.stop()


def raw_mail(
    from_header: str,
    *,
    subject: str = "Parcel missing",
    body: str = "Hi, my parcel never arrived.",
    to: str = CHANNEL,
    headers: tuple[str, ...] = (),
    content_type: str = "text/plain; charset=utf-8",
) -> tuple[str, bytes]:
    """(Message-ID, the message as a client puts it on the wire, headers verbatim)."""
    mid = f"<{uuid.uuid4().hex}@client.test>"
    lines = [
        f"From: {from_header}",
        f"To: {to}",
        f"Subject: {subject}",
        f"Message-ID: {mid}",
        "Date: Thu, 03 Dec 2026 10:00:00 +0000",
        *headers,
        "MIME-Version: 1.0",
        f"Content-Type: {content_type}",
        "Content-Transfer-Encoding: 8bit",
        "",
        body,
        "",
    ]
    return mid, "\r\n".join(lines).encode("utf-8", "surrogateescape")


def send(gw: Gateway, *mails: bytes, rcpt: str = CHANNEL) -> None:
    with smtplib.SMTP("127.0.0.1", gw.port) as client:
        for raw in mails:
            client.sendmail("envelope@client.test", [rcpt], raw)


def settled(gw: Gateway, mid: str) -> InboundMail:
    """The inbound row of the mail with Message-ID `mid`, once processed or quarantined."""
    needle = f"Message-ID: {mid}".encode()

    def done() -> InboundMail | None:
        with gw.session() as s:
            for row in s.scalars(select(InboundMail).where(InboundMail.state != "pending")):
                if needle in row.raw:
                    s.expunge(row)
                    return row
        return None

    return wait_for(done)


def stored(gw: Gateway, mid: str) -> tuple[Message, Conversation, list[str]]:
    """The message a processed mail became, its conversation, and that customer's addresses."""
    row = settled(gw, mid)
    assert row.state == InboundState.PROCESSED, row.reason
    with gw.session() as s:
        message = s.scalars(select(Message).where(Message.email_message_id == mid)).one()
        conversation = s.get(Conversation, message.conversation_id)
        assert conversation is not None
        addresses = [a.address for a in conversation.customer.addresses]
        s.expunge_all()
    return message, conversation, addresses


def customer_name(gw: Gateway, address: str) -> str | None:
    with gw.session() as s:
        customer = s.scalars(
            select(Customer)
            .join(CustomerAddress, CustomerAddress.customer_id == Customer.id)
            .where(CustomerAddress.address == address)
        ).one()
        return customer.name


# --- encoded display names as real clients write them ----------------------------------------


def encoded_word(text: str, charset: str, encoding: str) -> str:
    data = text.encode(charset)
    if encoding == "B":
        payload = base64.b64encode(data).decode()
    else:
        payload = "".join(
            chr(b) if chr(b).isascii() and chr(b).isalnum() else "_" if b == 32 else f"={b:02X}"
            for b in data
        )
    return f"=?{charset}?{encoding}?{payload}?="


# (display name, charset, Q or B): commas, quotes, `@` and `<>` inside names, many scripts.
CLIENT_NAMES = [
    ("Müller, Hans", "iso-8859-1", "Q"),  # Outlook
    ("Jürgen Weiß €", "iso-8859-15", "Q"),
    ("Zoë “The Boss” O’Neill", "windows-1252", "Q"),
    ("Пётр <petr@victim.test>", "koi8-r", "B"),
    ("山田太郎, 営業部", "shift_jis", "B"),  # Japanese Outlook and Becky!
    ("王小明 <wang@victim.test>", "gb2312", "B"),  # Foxmail
    ('陳大文 "Boss"', "big5", "B"),
    ("alice@victim.test", "utf-8", "Q"),
    ('"Alice" <alice@victim.test>', "utf-8", "B"),
    ("team: a@victim.test, b@victim.test;", "utf-8", "Q"),
]


def test_encoded_display_names_of_real_clients_keep_the_real_address(gateway: Gateway) -> None:
    gw = gateway
    sent = []
    for i, (name, charset, enc) in enumerate(CLIENT_NAMES):
        address = f"sender{i}@client.test"
        mid, raw = raw_mail(f"{encoded_word(name, charset, enc)} <{address}>", subject=f"Q{i}")
        sent.append((mid, raw, name, address))
    send(gw, *(raw for _, raw, _, _ in sent))
    for mid, _, name, address in sent:
        message, _, addresses = stored(gw, mid)
        assert message.from_address == address
        assert addresses == [address]
        assert customer_name(gw, address) == name


def test_outlook_writes_muller_hans_and_it_is_hans(gateway: Gateway) -> None:
    mid, raw = raw_mail("=?iso-8859-1?Q?M=FCller=2C_Hans?= <hans.mueller@kunde.test>")
    send(gateway, raw)
    message, _, addresses = stored(gateway, mid)
    assert message.from_address == "hans.mueller@kunde.test"
    assert addresses == ["hans.mueller@kunde.test"]
    assert customer_name(gateway, "hans.mueller@kunde.test") == "Müller, Hans"


@pytest.mark.parametrize(
    ("from_header", "address"),
    [
        ("sender@obsolete.test (=?utf-8?q?N=C3=A4me?=)", "sender@obsolete.test"),
        ("<@relay.test,@mx.test:routed@obsolete.test>", "routed@obsolete.test"),
        ('"quoted"@obsolete.test', "quoted@obsolete.test"),
        ("Smith, John <john.smith@obsolete.test>", "john.smith@obsolete.test"),
        ("=?utf-8?Q?alice?=@victim.test", "=?utf-8?q?alice?=@victim.test"),
    ],
)
def test_obsolete_and_odd_syntax_is_read_as_written(
    gateway: Gateway, from_header: str, address: str
) -> None:
    # An encoded-word is never decoded inside an address: that last one is a literal local
    # part, not alice@victim.test.
    mid, raw = raw_mail(from_header, subject=f"Odd {uuid.uuid4().hex[:6]}")
    send(gateway, raw)
    message, _, addresses = stored(gateway, mid)
    assert message.from_address == address
    assert addresses == [address]


def test_an_address_in_the_display_name_does_not_thread_into_that_customers_conversation(
    gateway: Gateway,
) -> None:
    gw = gateway
    alice_mid, alice = raw_mail("Alice <alice@victim.test>", subject="My invoice")
    send(gw, alice)
    _, alice_conversation, _ = stored(gw, alice_mid)
    # Same subject, within the subject-threading window: only the sender can tell them apart.
    mallory_mid, mallory = raw_mail(
        "=?utf-8?Q?alice=40victim=2Etest?= <mallory@mallory.test>",
        subject="Re: My invoice",
        body="Please send the invoice to my new address.",
    )
    send(gw, mallory)
    message, conversation, addresses = stored(gw, mallory_mid)
    assert message.from_address == "mallory@mallory.test"
    assert conversation.id != alice_conversation.id
    assert addresses == ["mallory@mallory.test"]
    with gw.session() as s:
        texts = s.scalars(
            select(Message.text).where(Message.conversation_id == alice_conversation.id)
        ).all()
    assert "Please send the invoice to my new address." not in texts


@pytest.mark.parametrize(
    ("from_headers", "reason"),
    [
        (["=?utf-8?Q?alice=40victim=2Etest?="], "no sender address"),
        (["undisclosed-recipients:;"], "no sender address"),
        (["alice@victim.test <mallory@mallory.test>"], "not readable"),
        (["Alice <alice@victim.test>)<mallory@mallory.test>"], "not readable"),
        (["alice@victim.test, mallory@mallory.test"], "more than one sender address"),
        (["Alice <alice@victim.test>", "Mallory <mallory@mallory.test>"], "more than one"),
    ],
)
def test_mail_without_one_readable_from_address_is_quarantined_with_the_reason(
    gateway: Gateway, from_headers: list[str], reason: str
) -> None:
    extra = tuple(f"From: {v}" for v in from_headers[1:])
    mid, raw = raw_mail(from_headers[0], headers=extra, subject=f"Hello {uuid.uuid4().hex[:6]}")
    send(gateway, raw)
    row = settled(gateway, mid)
    assert row.state == InboundState.QUARANTINED
    assert row.reason and reason in row.reason
    with gateway.session() as s:
        assert s.scalars(select(Message).where(Message.email_message_id == mid)).first() is None


def test_groups_in_to_and_cc_are_read_as_their_members() -> None:
    _, raw = raw_mail(
        "Chris <chris@client.test>",
        to="undisclosed-recipients:;",
        headers=(
            "Cc: team: =?utf-8?Q?a=40evil=2Etest?= <ann@client.test>, bob@client.test;,"
            " =?utf-8?B?PGV2ZUBldmlsLnRlc3Q+?= <carl@client.test>",
        ),
    )
    parsed = parse_message(raw)
    assert parsed.to == ()
    assert parsed.cc == ("ann@client.test", "bob@client.test", "carl@client.test")


# --- agent mail: the token's agent is the address, not a name that says so --------------------


def test_an_agent_address_in_the_display_name_does_not_post_as_the_agent(
    gateway: Gateway,
) -> None:
    gw = gateway
    rt = gw.services.runtime
    now = rt.clock()
    with gw.session() as s:
        app = services.get_app(s, "demo")
        ana = services.add_agent(s, app, "ana@agents.test", "Ana Lopez", now)
        sam = services.create_customer(s, app, now, name="Sam", email="sam@example.com")
        conversation, _ = services.start_conversation(s, app, sam, "email", "Parcel?", now)
        ids = app.id, conversation.id, ana.id
    # Mallory holds a notification's Reply-To (it was forwarded to her) and writes as "Ana".
    to = reply_address(CHANNEL, rt.keyring.sign(agent_token(*ids, "reply", now)))
    forged = agent_mail(
        from_addr="Mallory <mallory@mallory.test>",
        to_addr=to,
        body="Refund approved, please send your card number.",
    )
    genuine = agent_mail(
        from_addr="=?utf-8?Q?Ana_L=C3=B3pez?= <ana@agents.test>",
        to_addr=to,
        body="We are on it.",
    )
    # The From as it goes on the wire (the email package would re-encode it), and raw 8-bit
    # and NUL in the subject: the rejection must still be recorded on PostgreSQL.
    forged_raw = (
        forged.as_bytes()
        .replace(
            b"From: Mallory <mallory@mallory.test>",
            b"From: =?utf-8?Q?ana=40agents=2Etest?= <mallory@mallory.test>",
        )
        .replace(b"Subject: Re: New message", b"Subject: Re: \x00\xff")
    )
    assert b"From: =?utf-8?Q?ana=40agents" in forged_raw
    send(gw, forged_raw, genuine.as_bytes(), rcpt=to)
    rejected = settled(gw, str(forged["Message-ID"]))
    assert rejected.state == InboundState.QUARANTINED
    accepted = settled(gw, str(genuine["Message-ID"]))
    assert accepted.state == InboundState.PROCESSED, accepted.reason
    with gw.session() as s:
        posted = s.scalars(
            select(Message).where(Message.conversation_id == ids[1]).order_by(Message.id)
        ).all()
        by_agent = [m.text for m in posted if m.author_type == AuthorType.AGENT]
    assert by_agent == ["We are on it."]
    assert all("card number" not in m.text for m in posted)
    with gw.session() as s:
        events = s.scalars(select(Event.data).where(Event.kind == "agent_mail.rejected")).all()
    [notice] = [e for e in events if e["inbound_id"] == rejected.id]
    # Ana's notice names the address the mail really came from.
    assert "mallory@mallory.test" in notice["mail_from"]


# --- the property: whatever the display name, the address is the angle-addr ------------------

CHARSETS = ("utf-8", "iso-8859-1", "iso-8859-15", "windows-1252", "koi8-r", "shift_jis", "gb2312")
NAME_ALPHABET = st.characters(
    codec="utf-8", exclude_categories=("Cs", "Cc", "Zl", "Zp"), exclude_characters="\x00"
) | st.sampled_from(list('@<>,;:"()\\[]. =?_'))
LOCAL = st.from_regex(r"[a-z0-9]([a-z0-9._+-]{0,20}[a-z0-9])?", fullmatch=True).filter(
    lambda s: ".." not in s
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.text(NAME_ALPHABET, min_size=1, max_size=40),
    charset=st.sampled_from(CHARSETS),
    encoding=st.sampled_from("QB"),
    local=LOCAL,
    domain=st.sampled_from(["client.test", "kunde.example", "mx.xn--mller-kva.test"]),
    split=st.booleans(),
)
def test_any_encoded_display_name_leaves_the_angle_addr_the_address(
    name: str, charset: str, encoding: str, local: str, domain: str, split: bool
) -> None:
    try:
        name.encode(charset)
    except UnicodeEncodeError:
        charset = "utf-8"
    if split and len(name) > 1:  # two adjacent encoded-words, as long names are written
        half = len(name) // 2
        words = f"{encoded_word(name[:half], charset, encoding)} " + encoded_word(
            name[half:], charset, encoding
        )
    else:
        words = encoded_word(name, charset, encoding)
    address = f"{local}@{domain}"
    field = parse_addresses([f"{words} <{address}>"])
    assert [m.address for m in field.mailboxes] == [address]
    assert field.unreadable == ()
    _, raw = raw_mail(f"{words} <{address}>")
    parsed = parse_message(raw)
    assert parsed.from_address == address
    # What the charset makes of it (shift_jis reads back a yen sign as a backslash).
    assert parsed.from_name == " ".join(name.encode(charset).decode(charset).split())


# --- names and text that reach headers and the stores ----------------------------------------

BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"


def test_bidi_controls_and_line_breaks_in_names_never_reach_outgoing_headers(
    gateway: Gateway,
) -> None:
    gw = gateway
    # The customer's own words become the subject of our reply; the agent's name its From.
    subject = "=?utf-8?Q?Invoice_=E2=80=AEfdp.exe=0D=0ABcc:_x@evil.test_=E2=81=A6x?="
    mid, raw = raw_mail(
        "=?utf-8?Q?Dana_=E2=80=AE=0D=0ABcc:_evil=40evil.test?= <dana@client.test>",
        subject=subject,
    )
    send(gw, raw)
    _, conversation, _ = stored(gw, mid)
    now = gw.services.runtime.clock()
    with gw.session() as s:
        app = services.get_app(s, "demo")
        agent = services.add_agent(
            s, app, f"ana{uuid.uuid4().hex[:6]}@agents.test", "Ana\u202e", now
        )
        agent.name = "Ana\u202e\u2066 \r\nBcc: evil@evil.test"
        s.flush()
        services.add_agent_message(
            s, s.get_one(Conversation, conversation.id), agent, "Here it is.", now
        )

    def outgoing() -> bytes | None:
        for path in gw.sent.glob("*.eml"):
            data = path.read_bytes()
            if b"dana@client.test" in data.split(b"\r\n\r\n", 1)[0]:
                return data
        return None

    sent = wait_for(outgoing)
    msg = message_from_bytes(sent, policy=policy.default)
    head = sent.split(b"\r\n\r\n", 1)[0].decode()
    for header in ("From", "Subject"):
        value = str(msg[header])
        assert not set(value) & set(BIDI + "\r\n"), (header, value)
    assert "Ana" in str(msg["From"]) and "fdp.exe" in str(msg["Subject"])
    assert "Bcc" not in [k for k in msg]
    assert "evil.test" not in str(msg["To"])
    assert head.count("\r\nBcc:") == 0


def test_compose_drops_bidi_and_control_characters_from_every_name() -> None:
    raw = compose(
        from_name="Ana\u202e from Br\u2067and\x00\x1b",
        from_address=CHANNEL,
        to=["dana@client.test"],
        subject="Re: \u202egnp.exe\u200f\r\nX-Evil: 1",
        text="hi",
        html=None,
        message_id="<a@localhost>",
        date=dt.datetime(2026, 12, 3, tzinfo=dt.UTC),
        extra_headers=[("X-Customer", "Dana\u2066\u061c")],
    )
    msg = message_from_bytes(raw, policy=policy.default)
    for header in ("From", "Subject", "X-Customer"):
        value = str(msg[header])
        assert not set(value) & set(BIDI + "\r\n\x00\x1b"), (header, value)
    assert str(msg["From"]).startswith("Ana from Brand")
    assert "X-Evil" not in msg


def test_nul_in_body_subject_and_name_is_stored_as_a_replacement_character(
    gateway: Gateway,
) -> None:
    mid, raw = raw_mail(
        "=?utf-8?Q?Nu=00l?= <nul@client.test>",
        subject="Before\x00after =?utf-8?Q?and=00encoded?=",
        body="line one\x00line two",
    )
    send(gateway, raw)
    message, conversation, _ = stored(gateway, mid)
    assert message.text == "line one\ufffdline two"
    assert conversation.subject == "Before\ufffdafter and\ufffdencoded"
    assert customer_name(gateway, "nul@client.test") == "Nu\ufffdl"


UTF7_SURROGATE = (
    "From: Chris <chris@client.test>\r\n"
    "To: support@localhost\r\n"
    "Subject: =?utf-7?Q?Hi_+2AA-?=\r\n"
    "Message-ID: <{mid}@client.test>\r\n"
    "MIME-Version: 1.0\r\n"
    'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
    "--b\r\nContent-Type: text/plain; charset=utf-7\r\n\r\nHello +2AA- there\r\n"
    "--b\r\nContent-Type: text/plain; charset=utf-7\r\nContent-Disposition: attachment;"
    ' filename="=?utf-7?Q?a+2AA-.txt?="\r\n\r\nx\r\n--b--\r\n'
)


def test_a_utf7_part_that_decodes_to_surrogates_is_parsed_and_stored(
    gateway: Gateway, tmp_path: Path
) -> None:
    mid = uuid.uuid4().hex
    raw = UTF7_SURROGATE.format(mid=mid).encode()
    eml = tmp_path / "utf7.eml"
    eml.write_bytes(raw)
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "parse", str(eml), "--json"],
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert b"Traceback" not in result.stderr
    shown = json.loads(result.stdout)
    assert shown["text"].startswith("Hello \ufffd there")
    assert shown["subject"] == "Hi \ufffd"
    assert [a["filename"] for a in shown["attachments"]] == ["a\ufffd.txt"]
    send(gateway, raw)
    message, conversation, _ = stored(gateway, f"<{mid}@client.test>")
    assert message.text.startswith("Hello \ufffd there")
    assert conversation.subject == "Hi \ufffd"


def test_a_name_and_a_subject_longer_than_their_columns_are_stored(gateway: Gateway) -> None:
    name = "Ünïcödé " * 60  # 480 characters, encoded over many lines
    words = "\r\n ".join(encoded_word(name[i : i + 20], "utf-8", "B") for i in range(0, 480, 20))
    subject = "\r\n ".join(["word " * 12] * 100)  # folded, 6000 characters
    mid, raw = raw_mail(f"{words} <long@client.test>", subject=subject)
    send(gateway, raw)
    message, conversation, _ = stored(gateway, mid)
    assert message.from_address == "long@client.test"
    assert conversation.subject.startswith("word word")
    assert (customer_name(gateway, "long@client.test") or "").startswith("Ünïcödé Ünïcödé")
