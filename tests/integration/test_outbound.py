"""Outbound delivery through a real SMTP relay (aiosmtpd on loopback): where a reply goes, what
the email says and carries in its headers, retries, give-ups, and at most one email per row."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from channels.email import outbox
from channels.email.transport import eml_name
from gateway import outbound
from gateway.config import GatewayConfig, embedded_default
from gateway.runtime import Runtime
from tests.conftest import PG_URL, reset_postgres
from tests.support.smtp_sink import SmtpSink
from tickets import delivery, services
from tickets.models import (
    Channel,
    Conversation,
    Event,
    Message,
    Note,
    Outbox,
    OutboxState,
    ThreadRef,
    Via,
)

T0 = dt.datetime(2026, 11, 24, 9, 0, tzinfo=dt.UTC)
FIRST_LINE = "Hi! My parcel arrived crushed and the lamp inside is broken, what can I do?"


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> dt.datetime:
        self.now += dt.timedelta(seconds=seconds)
        return self.now


def make_config(tmp_path: Path, **outbound_settings: object) -> GatewayConfig:
    """SQLite under tmp_path; PostgreSQL (emptied first) when GATEWAY_TEST_DATABASE_URL is set."""
    base = embedded_default()
    out = base.outbound.model_copy(update=outbound_settings)
    url = f"sqlite:///{tmp_path / 'gw.db'}"
    if PG_URL:
        reset_postgres(PG_URL).dispose()
        url = PG_URL
    return base.model_copy(
        update={
            "database_url": url,
            "data_dir": str(tmp_path),
            "outbound": out,
        }
    )


def make_runtime(config: GatewayConfig) -> tuple[Runtime, Clock]:
    rt = Runtime.create(config)
    clock = Clock(T0)
    rt.clock = clock  # type: ignore[method-assign]
    return rt, clock


@pytest.fixture
def gw(tmp_path: Path, relay: SmtpSink) -> Iterator[tuple[Runtime, Clock]]:
    rt, clock = make_runtime(
        make_config(
            tmp_path,
            transport="smtp",
            host=relay.host,
            port=relay.port,
            retry_schedule=["1m", "5m"],
            give_up_after="1h",
            timeout_seconds=5,
        )
    )
    yield rt, clock
    ob = getattr(rt, "_outbound", None)
    if ob is not None and hasattr(ob.built, "close"):
        ob.built.close()
    rt.close()


def chat(
    rt: Runtime, *, email: str | None = "chris@example.com", text: str = FIRST_LINE, **kw: object
) -> int:
    with rt.unit_of_work() as s:
        app = services.get_app(s, "demo")
        customer = services.create_customer(s, app, rt.clock(), name="Chris", email=email, **kw)
        conversation, _ = services.start_conversation(s, app, customer, "chat", text, rt.clock())
        try:
            services.find_agent(s, app, "ana@localhost")
        except services.NotFound:
            services.add_agent(s, app, "ana@localhost", "Ana", rt.clock())
        return conversation.id


def agent_reply(rt: Runtime, conversation_id: int, text: str) -> int:
    with rt.unit_of_work() as s:
        app = services.get_app(s, "demo")
        conversation = services.get_conversation(s, app, conversation_id)
        agent = services.find_agent(s, app, "ana@localhost")
        return services.add_agent_message(s, conversation, agent, text, rt.clock()).id


def deliver_and_send(rt: Runtime) -> list[outbound.Outcome]:
    """What the sweep and the actors do, run inline: deliver every due conversation, send."""
    grace = dt.timedelta(seconds=rt.config.delivery.email_grace_seconds)
    with rt.unit_of_work() as s:
        due = delivery.due_conversations(s, rt.clock() - grace, 100)
    outcomes = [outbound.deliver(rt, cid) for cid in due]
    for o in outcomes:
        if o.outbox_id is not None:
            outbound.send_outbound(rt, o.outbox_id)
    return outcomes


def body_text(received) -> str:
    msg = received.message
    return msg.get_body(("plain",)).get_content()


def body_html(received) -> str:
    return received.message.get_body(("html",)).get_content()


def test_an_unread_reply_goes_out_after_the_grace_period_in_the_chat_voice(gw, relay):
    rt, clock = gw
    cid = chat(rt)
    clock.advance(30)
    mid = agent_reply(rt, cid, "So sorry! A new lamp is on its way today.")
    clock.advance(60)
    assert deliver_and_send(rt) == []  # still within the grace period
    clock.advance(61)
    [outcome] = deliver_and_send(rt)
    assert outcome.what == "queued"
    [got] = relay.wait_for(1)
    msg = got.message
    assert got.rcpt_tos == ["chris@example.com"]
    # The return path is VERP: a bounce to it names this email and this recipient.
    local, _, domain = got.mail_from.rpartition("@")
    assert domain == "localhost" and local.startswith("bounces+")
    with rt.unit_of_work() as s:
        row = s.scalar(select(Outbox).where(Outbox.message_id_header == got.message["Message-ID"]))
    bounce = rt.config.keyring().verify_bounce(local.removeprefix("bounces+"))
    assert (bounce.outbox_id, bounce.recipient) == (row.id, 0)
    [sender] = msg["From"].addresses
    assert (sender.display_name, sender.addr_spec) == ("Ana from Demo", "support@localhost")
    assert msg["Subject"] == "Re: " + FIRST_LINE  # their words, not a generated title
    assert re.fullmatch(r"<[a-z]{26}@localhost>", msg["Message-ID"])
    # Reply-To carries the signed customer token of this conversation.
    local = msg["Reply-To"].addresses[0].username
    assert local.startswith("support+") and msg["Reply-To"].addresses[0].domain == "localhost"
    token = rt.config.keyring().verify_customer(local.removeprefix("support+"))
    assert token.conversation_id == cid
    assert msg["Date"] and msg["Auto-Submitted"] is None
    text = body_text(got)
    assert "So sorry! A new lamp is on its way today." in text
    assert "Chris" in text and FIRST_LINE in text  # the recap of the chat
    assert "http://127.0.0.1:8025/widget/demo" in text
    html = body_html(got)
    assert "So sorry! A new lamp is on its way today." in html
    assert 'href="http://127.0.0.1:8025/widget/demo?c=' in html
    # Inline styles, nothing fetched from elsewhere.
    assert "<img" not in html and "<link" not in html and "<style" not in html
    assert 'style="' in html
    with rt.unit_of_work() as s:
        message = s.get(Message, mid)
        conversation = s.get(Conversation, cid)
        assert message.delivery_state == "sent"
        assert conversation.email_pending_since is None
        ref = s.scalar(select(ThreadRef).where(ThreadRef.message_id_header == msg["Message-ID"]))
        assert ref.conversation_id == cid and ref.outbound


def test_several_replies_become_one_email(gw, relay):
    rt, clock = gw
    cid = chat(rt)
    agent_reply(rt, cid, "Let me check with the warehouse.")
    clock.advance(50)
    agent_reply(rt, cid, "Found it: a new lamp leaves today.")
    clock.advance(121)
    [_outcome] = deliver_and_send(rt)
    [got] = relay.wait_for(1)
    text = body_text(got)
    assert "Let me check with the warehouse." in text
    assert "Found it: a new lamp leaves today." in text
    assert "new messages" in text
    clock.advance(500)
    assert deliver_and_send(rt) == []
    assert len(relay.messages) == 1


def test_read_in_the_widget_during_grace_means_no_email(gw, relay):
    rt, clock = gw
    cid = chat(rt)
    mid = agent_reply(rt, cid, "Here is the tracking link.")
    clock.advance(40)
    with rt.unit_of_work() as s:
        delivery.mark_read(s, s.get(Conversation, cid), rt.clock())
    clock.advance(200)
    deliver_and_send(rt)
    assert relay.messages == []
    with rt.unit_of_work() as s:
        assert s.get(Message, mid).delivery_state == "read"


def test_a_customer_in_the_widget_gets_no_email_until_they_leave(gw, relay):
    rt, clock = gw
    cid = chat(rt)
    agent_reply(rt, cid, "Are you still there?")
    clock.advance(121)
    with rt.unit_of_work() as s:
        delivery.customer_seen(
            s.get(Conversation, cid).customer, rt.clock() - dt.timedelta(seconds=5)
        )
    [outcome] = deliver_and_send(rt)
    assert outcome.what == "widget"
    assert relay.messages == []
    clock.advance(121)  # gone from the widget, message still unread
    [outcome] = deliver_and_send(rt)
    assert outcome.what == "queued"
    assert len(relay.wait_for(1)) == 1


def test_without_an_address_messages_wait_and_the_conversation_warns(gw, relay):
    rt, clock = gw
    cid = chat(rt, email=None)
    mid = agent_reply(rt, cid, "We need your order number.")
    clock.advance(121)
    [outcome] = deliver_and_send(rt)
    assert outcome.what == "blocked"
    with rt.unit_of_work() as s:
        conversation = s.get(Conversation, cid)
        assert "no email address" in conversation.delivery_warning
        assert s.get(Message, mid).delivery_state == "waiting"
        services.add_customer_address(s, conversation.customer, "late@example.com", rt.clock())
        delivery.rearm(s, conversation.customer, rt.clock())
    clock.advance(121)
    [outcome] = deliver_and_send(rt)
    assert outcome.what == "queued"
    [got] = relay.wait_for(1)
    assert got.rcpt_tos == ["late@example.com"]


def test_a_bounced_address_is_not_written_to(gw, relay):
    rt, clock = gw
    cid = chat(rt)
    with rt.unit_of_work() as s:
        address = s.get(Conversation, cid).customer.addresses[0]
        address.bounced_at = rt.clock()
    agent_reply(rt, cid, "Hello?")
    clock.advance(121)
    [outcome] = deliver_and_send(rt)
    assert outcome.what == "blocked" and "bounced" in outcome.detail
    assert relay.messages == []


def test_no_email_channel_means_a_warning(tmp_path, relay):
    config = make_config(tmp_path).model_copy(update={"apps": []})
    rt, clock = make_runtime(config)
    with rt.unit_of_work() as s:
        app = services.ensure_app(s, "bare", "Bare", rt.clock())
        customer = services.create_customer(s, app, rt.clock(), email="c@example.com")
        conversation, _ = services.start_conversation(s, app, customer, "chat", "hi", rt.clock())
        agent = services.add_agent(s, app, "a@localhost", "Al", rt.clock())
        services.add_agent_message(s, conversation, agent, "hello", rt.clock())
        cid = conversation.id
    clock.advance(121)
    [outcome] = deliver_and_send(rt)
    assert outcome.what == "blocked" and "no email channel" in outcome.detail
    with rt.unit_of_work() as s:
        events = s.scalars(select(Event.kind).where(Event.conversation_id == cid)).all()
    assert "delivery.blocked" in events
    rt.close()


def test_the_ticket_layer_and_notes_never_reach_the_customer(gw, relay):
    rt, clock = gw
    cid = chat(rt, text="I want a refund for the concert ticket I bought")
    with rt.unit_of_work() as s:
        app = services.get_app(s, "demo")
        conversation = services.get_conversation(s, app, cid)
        agent = services.find_agent(s, app, "ana@localhost")
        ticket = services.convert(s, conversation, agent, rt.clock(), priority="urgent")
        ticket.title = "Refund request: concert"
        services.add_note(s, conversation, agent, "finance approved, do not tell yet", rt.clock())
        services.add_agent_message(s, conversation, agent, "Your refund is on its way.", rt.clock())
        number = ticket.number
    clock.advance(121)
    deliver_and_send(rt)
    [got] = relay.wait_for(1)
    visible_html = re.sub(r"<[^>]*>", " ", body_html(got))
    everything = body_text(got) + visible_html
    for header, value in got.message.items():
        everything += f"{header}: {value}\n"
    assert "finance approved" not in everything
    assert "Refund request" not in everything
    assert "urgent" not in everything.lower()
    assert not re.search(rf"#\s*{number}(?!\d)", everything)
    # The customer's own words stay as written, "ticket" included.
    assert "concert ticket" in got.message["Subject"]


def test_a_template_that_says_ticket_is_held_loudly_and_never_sent(gw, relay, tmp_path, caplog):
    import shutil

    from channels.email.render import EmailTemplates, default_root

    rt, clock = gw
    root = tmp_path / "templates"
    shutil.copytree(default_root(), root)
    body = root / "en" / "reply" / "body.txt"
    body.write_text(body.read_text().replace("{% block intro %}", "{% block intro %}Ticket: "))
    ob = outbound.outbound_for(rt)
    rt._outbound = outbound.Outbound(  # type: ignore[attr-defined]
        rt, ob.policy, dataclasses.replace(ob.settings, templates=EmailTemplates(root))
    )
    cid = chat(rt)
    mid = agent_reply(rt, cid, "Hello from the team")
    clock.advance(121)
    [outcome] = deliver_and_send(rt)
    assert outcome.what == "held"
    assert "VOCABULARY GUARD" in caplog.text
    assert relay.messages == []
    with rt.unit_of_work() as s:
        row = s.get(Outbox, outcome.outbox_id)
        assert row.state == OutboxState.HELD and "ticket" in row.last_error
        assert s.get(Message, mid).delivery_state == "held"
        notes = s.scalars(select(Note.text).where(Note.conversation_id == cid)).all()
        assert any("held" in n for n in notes)
    # The sweep never picks a held row up.
    with rt.unit_of_work() as s:
        assert outcome.outbox_id not in outbox.due_ids(s, clock.advance(3600), 100)


def test_a_temporary_failure_is_retried_with_the_configured_backoff(gw, relay):
    rt, clock = gw
    cid = chat(rt)
    mid = agent_reply(rt, cid, "Checking.")
    clock.advance(121)
    relay.answer = "451 4.3.0 try again later"
    [outcome] = deliver_and_send(rt)
    with rt.unit_of_work() as s:
        row = s.get(Outbox, outcome.outbox_id)
        assert row.state == OutboxState.PENDING and row.attempts == 1
        assert row.next_attempt_at == clock.now + dt.timedelta(minutes=1)
        assert "451" in s.get(Message, mid).delivery_error
        assert outcome.outbox_id not in outbox.due_ids(s, clock.now, 100)
    relay.answer = None
    clock.advance(61)
    with rt.unit_of_work() as s:
        assert outbox.due_ids(s, clock.now, 100) == [outcome.outbox_id]
    assert outbound.send_outbound(rt, outcome.outbox_id) == OutboxState.SENT
    assert len(relay.wait_for(1)) == 1
    with rt.unit_of_work() as s:
        assert s.get(Message, mid).delivery_state == "sent"


def test_a_5xx_gives_up_at_once_notes_it_and_tells_the_assignee(gw, relay):
    rt, clock = gw
    cid = chat(rt)
    with rt.unit_of_work() as s:
        app = services.get_app(s, "demo")
        agent = services.find_agent(s, app, "ana@localhost")
        services.convert(
            s, services.get_conversation(s, app, cid), agent, rt.clock(), assignee=agent
        )
        agent_id = agent.id
    mid = agent_reply(rt, cid, "Here you go.")
    clock.advance(121)
    relay.answer = "550 5.1.1 no such mailbox"
    [outcome] = deliver_and_send(rt)
    with rt.unit_of_work() as s:
        row = s.get(Outbox, outcome.outbox_id)
        assert row.state == OutboxState.FAILED and row.attempts == 1
        message = s.get(Message, mid)
        assert message.delivery_state == "failed" and "550" in message.delivery_error
        notes = s.scalars(select(Note.text).where(Note.conversation_id == cid)).all()
        assert any("could not be delivered" in n and "550" in n for n in notes)
        event = s.scalar(select(Event).where(Event.kind == "outbox.failed"))
        assert event.data["assignee_id"] == agent_id
    assert outbound.send_outbound(rt, outcome.outbox_id) is None  # final: nothing more


def test_retries_end_after_give_up_after(gw, relay):
    rt, clock = gw
    cid = chat(rt)
    agent_reply(rt, cid, "Hi")
    clock.advance(121)
    relay.stop()  # the relay is down
    [outcome] = deliver_and_send(rt)
    states = []
    for _ in range(30):
        clock.advance(300)
        state = outbound.send_outbound(rt, outcome.outbox_id)
        if state is not None:
            states.append(state)
        if state == OutboxState.FAILED:
            break
    assert states[-1] == OutboxState.FAILED
    with rt.unit_of_work() as s:
        row = s.get(Outbox, outcome.outbox_id)
        assert "gave up after" in row.last_error
        assert clock.now - row.created_at <= dt.timedelta(hours=1, minutes=10)
    relay.start()


def test_two_attempts_at_one_row_send_one_email(gw, relay):
    rt, clock = gw
    cid = chat(rt)
    agent_reply(rt, cid, "Once only")
    clock.advance(121)
    [outcome] = [outbound.deliver(rt, cid)]
    with rt.unit_of_work() as s:
        assert outbox.claim(s, outcome.outbox_id, "other-worker", rt.clock()) is not None
    # Another worker holds the claim: this attempt does nothing.
    assert outbound.send_outbound(rt, outcome.outbox_id) is None
    assert relay.messages == []


def test_a_row_left_sending_by_a_dead_smtp_attempt_is_held_not_resent(gw, relay):
    rt, clock = gw
    cid = chat(rt)
    mid = agent_reply(rt, cid, "Crash test")
    clock.advance(121)
    outcome = outbound.deliver(rt, cid)
    with rt.unit_of_work() as s:
        outbox.claim(s, outcome.outbox_id, "died", rt.clock())
    clock.advance(60)
    assert outbound.send_outbound(rt, outcome.outbox_id) is None  # not stale yet
    clock.advance(16 * 60)
    assert outbound.send_outbound(rt, outcome.outbox_id) == OutboxState.HELD
    assert relay.messages == []
    with rt.unit_of_work() as s:
        assert s.get(Message, mid).delivery_state == "held"
        outbox.retry(s, outcome.outbox_id, rt.clock())  # an agent decides to resend
    assert outbound.send_outbound(rt, outcome.outbox_id) == OutboxState.SENT
    assert len(relay.wait_for(1)) == 1


def test_a_row_left_sending_with_the_file_transport_is_settled_by_the_file(tmp_path):
    rt, clock = make_runtime(make_config(tmp_path, transport="file"))
    sent = rt.config.outbound_dir
    cid = chat(rt)
    agent_reply(rt, cid, "one")
    clock.advance(121)
    first = outbound.deliver(rt, cid).outbox_id
    with rt.unit_of_work() as s:
        outbox.claim(s, first, "died-before-writing", rt.clock())
    clock.advance(20 * 60)
    # No file: the message was never written, so it is safe to write it now.
    assert outbound.send_outbound(rt, first) == OutboxState.SENT
    files = list(sent.glob("*.eml"))
    assert len(files) == 1
    # The envelope sender is recorded as a delivering MTA would: the VERP return path.
    first_line = files[0].read_bytes().split(b"\r\n", 1)[0]
    assert first_line.startswith(b"Return-Path: <bounces+") and first_line.endswith(b"@localhost>")
    agent_reply(rt, cid, "two")
    clock.advance(121)
    second = outbound.deliver(rt, cid).outbox_id
    with rt.unit_of_work() as s:
        row = outbox.claim(s, second, "died-after-writing", rt.clock())
        (sent / eml_name(row.message_id_header)).write_bytes(row.raw)
    clock.advance(20 * 60)
    assert outbound.send_outbound(rt, second) == OutboxState.SENT
    assert len(list(sent.glob("*.eml"))) == 2  # written once, not again
    rt.close()


def test_rows_of_one_conversation_go_out_in_order(gw, relay):
    rt, clock = gw
    cid = chat(rt)
    ids = []
    for text in ("first", "second"):
        agent_reply(rt, cid, text)
        clock.advance(121)
        ids.append(outbound.deliver(rt, cid).outbox_id)
    relay.answer = "451 busy"
    assert outbound.send_outbound(rt, ids[0]) == OutboxState.PENDING
    relay.answer = None
    # The second may not overtake the first, however often it is tried.
    assert outbound.send_outbound(rt, ids[1]) is None
    with rt.unit_of_work() as s:
        assert outbox.due_ids(s, clock.now + dt.timedelta(hours=1), 100) == [ids[0]]
    clock.advance(61)
    assert outbound.send_outbound(rt, ids[0]) == OutboxState.SENT
    assert outbound.send_outbound(rt, ids[1]) == OutboxState.SENT
    texts = [body_text(m) for m in relay.wait_for(2)]
    assert "first" in texts[0] and "second" in texts[1]


def test_an_email_conversation_is_answered_in_its_own_thread(gw, relay):
    rt, clock = gw
    with rt.unit_of_work() as s:
        app = services.get_app(s, "demo")
        customer = services.create_customer(s, app, rt.clock(), email="kim@example.org")
        conversation, _ = services.start_conversation(
            s,
            app,
            customer,
            Via.EMAIL,
            "Where is my parcel?",
            rt.clock(),
            subject="Parcel ticket 4411 missing",
            email_message_id="<theirs-1@example.org>",
        )
        cid = conversation.id
        services.add_agent(s, app, "ana@localhost", "Ana", rt.clock())
    agent_reply(rt, cid, "Looking into it.")
    clock.advance(121)
    deliver_and_send(rt)
    [first] = relay.wait_for(1)
    assert first.message["Subject"] == "Re: Parcel ticket 4411 missing"
    assert first.message["In-Reply-To"] == "<theirs-1@example.org>"
    assert first.message["References"] == "<theirs-1@example.org>"
    agent_reply(rt, cid, "Found it.")
    clock.advance(121)
    deliver_and_send(rt)
    second = relay.wait_for(2)[1]
    assert second.message["References"].split() == [
        first.message["Message-ID"],
        "<theirs-1@example.org>",
    ]


def test_crlf_in_names_cannot_inject_headers(gw, relay):
    rt, clock = gw
    cid = chat(rt)
    with rt.unit_of_work() as s:
        app = services.get_app(s, "demo")
        evil = services.add_agent(
            s,
            app,
            "evil@localhost",
            "Eve =?utf-8?q?=0D=0ABcc:_x@evil.example?=\r\nBcc: y@evil.example",
            rt.clock(),
        )
        conversation = services.get_conversation(s, app, cid)
        services.add_agent_message(s, conversation, evil, "hi", rt.clock())
    clock.advance(121)
    deliver_and_send(rt)
    [got] = relay.wait_for(1)
    assert got.rcpt_tos == ["chris@example.com"]
    assert got.message["Bcc"] is None
    assert "\n" not in str(got.message["From"]) and "\r" not in str(got.message["From"])


def test_a_channel_with_dkim_signs_what_it_sends(tmp_path, relay):
    import base64
    import subprocess

    import dkim

    from gateway.config import AppConfig, ChannelConfig, DkimConfig

    key = tmp_path / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    der = subprocess.run(
        ["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"],
        check=True,
        capture_output=True,
    ).stdout
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)
    config = make_config(tmp_path, transport="smtp", host=relay.host, port=relay.port)
    app = config.apps[0]
    channel = ChannelConfig(
        name="support",
        addresses=["support@help.example"],
        dkim=DkimConfig(selector="gw1", domain="help.example", private_key_file=str(key)),
    )
    config = config.model_copy(
        update={"apps": [AppConfig(**{**app.model_dump(), "channels": [channel.model_dump()]})]}
    )
    rt, clock = make_runtime(config)
    cid = chat(rt)
    agent_reply(rt, cid, "Signed and sealed.")
    clock.advance(121)
    deliver_and_send(rt)
    [got] = relay.wait_for(1)
    assert got.raw.startswith(b"DKIM-Signature:")

    def dns(name: bytes, timeout: int = 5) -> bytes:
        return record if name == b"gw1._domainkey.help.example." else b""

    assert dkim.verify(got.raw, dnsfunc=dns)
    assert not dkim.verify(
        got.raw.replace(b"Signed and sealed.", b"Signed and sealed!"), dnsfunc=dns
    )
    outbound.outbound_for(rt).transport.close()
    rt.close()


def test_a_channel_with_its_own_relay_sends_through_it(tmp_path, relay):
    rt, clock = make_runtime(make_config(tmp_path, transport="file"))
    with rt.unit_of_work() as s:
        channel = s.scalar(select(Channel).where(Channel.name == "support"))
        channel.settings = {
            **channel.settings,
            "smtp": {"host": relay.host, "port": relay.port, "starttls": False},
        }
    cid = chat(rt)
    agent_reply(rt, cid, "Through the channel's relay")
    clock.advance(121)
    deliver_and_send(rt)
    [got] = relay.wait_for(1)
    assert "Through the channel's relay" in body_text(got)
    assert list(rt.config.outbound_dir.glob("*.eml")) == []
    rt.close()


def test_system_mail_is_marked_automatic_and_comes_from_the_brand(gw, relay):
    rt, clock = gw
    cid = chat(rt)
    with rt.unit_of_work() as s:
        conversation = services.get_conversation(s, services.get_app(s, "demo"), cid)
        services.add_system_message(
            s, conversation, "The fix for your problem is live.", rt.clock()
        )
    clock.advance(121)
    deliver_and_send(rt)
    [got] = relay.wait_for(1)
    assert got.message["Auto-Submitted"] == "auto-generated"
    assert got.message["From"].addresses[0].display_name == "Demo"
    assert "The fix for your problem is live." in body_text(got)


def test_a_relay_password_missing_from_the_environment_fails_sends_not_the_sweep(
    tmp_path, relay, monkeypatch
):
    from gateway.scheduler import due_outbox

    monkeypatch.delenv("GW_TEST_RELAY_PASSWORD", raising=False)
    rt, clock = make_runtime(
        make_config(
            tmp_path,
            transport="smtp",
            host=relay.host,
            port=relay.port,
            username="gw",
            password_env="GW_TEST_RELAY_PASSWORD",
        )
    )
    from gateway import actors

    actors.bind(rt)
    cid = chat(rt)
    agent_reply(rt, cid, "Hello")
    clock.advance(121)
    [outcome] = deliver_and_send(rt)
    with rt.unit_of_work() as s:
        row = s.get(Outbox, outcome.outbox_id)
        assert row.state == OutboxState.PENDING
        assert "GW_TEST_RELAY_PASSWORD" in row.last_error
        clock.advance(3600)
        assert due_outbox(s, clock.now)  # the sweep still finds the row to retry
    assert relay.messages == []
    rt.close()
