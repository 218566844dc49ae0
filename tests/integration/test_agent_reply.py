"""An agent's answer by email, through the inbound pipeline on a real database: posted as a reply
or a note, commands applied, every failed check rejected and nothing posted."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from channels.email.agent_commands import CommandError, parse_when, read_reply
from channels.email.agent_reply import AgentMailPolicy, AgentMailRejected
from channels.email.batch_index import BatchIndex
from channels.email.process import run_pipeline
from channels.email.process_record import ChannelRules
from channels.email.sender_auth import resolver_txt
from channels.email.tokens import Keyring, agent_token, reply_address
from tests.support.agent_mail import STYLES, DkimKeys, agent_mail
from tests.support.dns_server import TxtServer
from tickets import services
from tickets.models import (
    Agent,
    AgentAddress,
    App,
    AuthorType,
    ConversationState,
    InboundMail,
    InboundState,
    Message,
    Note,
    Priority,
    TicketStatus,
)

RING = Keyring(b"agent reply test key")
SUPPORT = "support@acme.test"


@dataclass
class World:
    app: App
    ana: Agent
    bob: Agent
    conversation_id: int
    now: dt.datetime

    def token(self, purpose="reply", agent=None, conversation_id=None, app_id=None, ring=RING):
        agent = agent or self.ana
        token = agent_token(
            app_id or self.app.id,
            conversation_id or self.conversation_id,
            agent.id,
            purpose,
            self.now - dt.timedelta(hours=1),
        )
        return reply_address(SUPPORT, ring.sign(token))


@pytest.fixture
def world(session: Session, app: App, now: dt.datetime) -> World:
    ana = services.add_agent(session, app, "ana@agents.test", "Ana Lopez", now)
    bob = services.add_agent(session, app, "bob@agents.test", "Bob Stone", now)
    customer = services.create_customer(session, app, now, name="Sam", email="sam@example.com")
    conversation, _ = services.start_conversation(
        session, app, customer, "email", "My order never arrived", now, subject="Order"
    )
    services.convert(session, conversation, ana, now, assignee=ana)
    session.flush()
    return World(app, ana, bob, conversation.id, now)


def policy(**kw) -> AgentMailPolicy:
    return AgentMailPolicy(keyring=RING, addresses=frozenset({SUPPORT}), **kw)


def process(session: Session, world: World, raw: bytes, **kw):
    row = InboundMail(
        app_id=world.app.id,
        source="smtp",
        envelope_to=[],
        raw=raw,
        size=len(raw),
        sha256=hashlib.sha256(raw).hexdigest(),
        state=InboundState.PENDING,
        received_at=world.now,
    )
    session.add(row)
    session.flush()
    rules = ChannelRules(agent_mail=policy(**kw))
    with session.begin_nested():
        return run_pipeline(session, row, world.app, rules, world.now, BatchIndex(session))


def agent_messages(session: Session, world: World) -> list[Message]:
    return list(
        session.scalars(
            select(Message).where(
                Message.conversation_id == world.conversation_id,
                Message.author_type == AuthorType.AGENT,
            )
        )
    )


def notes(session: Session, world: World) -> list[str]:
    return [
        n.text
        for n in session.scalars(select(Note).where(Note.conversation_id == world.conversation_id))
    ]


@pytest.mark.parametrize("style", STYLES)
def test_a_reply_in_each_mail_client_is_posted_as_the_agent_with_only_the_new_text(
    session, world, style
):
    mail = agent_mail(
        from_addr="Ana Lopez <ana@agents.test>",
        to_addr=world.token(),
        body="Hi Sam, a new one is on its way.",
        style=style,
        html=style == "gmail",
    )
    result = process(session, world, mail.as_bytes())
    assert result.rule == "agent token"
    [message] = agent_messages(session, world)
    assert message.text == "Hi Sam, a new one is on its way."
    assert message.agent_id == world.ana.id and message.via == "email"
    assert notes(session, world) == []


def test_attachments_are_passed_on_with_the_reply(session, world):
    mail = agent_mail(
        from_addr="ana@agents.test",
        to_addr=world.token(),
        body="Here is the label.",
        attachments=(("label.pdf", "application/pdf", b"%PDF-1.4 label"),),
    )
    process(session, world, mail.as_bytes())
    [message] = agent_messages(session, world)
    assert [(a.filename, a.content) for a in message.attachments] == [
        ("label.pdf", b"%PDF-1.4 label")
    ]


def test_a_note_command_or_a_note_token_stays_internal(session, world):
    process(
        session,
        world,
        agent_mail(
            from_addr="ana@agents.test", to_addr=world.token(), body="/note\nRefund approved."
        ).as_bytes(),
    )
    process(
        session,
        world,
        agent_mail(
            from_addr="ana@agents.test", to_addr=world.token("note"), body="Called the courier."
        ).as_bytes(),
    )
    assert agent_messages(session, world) == []
    assert notes(session, world) == ["Refund approved.", "Called the courier."]


def test_commands_on_the_first_lines_change_the_ticket_as_that_agent(session, world):
    body = (
        "/assign bob\n/priority high\n/status waiting\n/tag refund\n/category billing\n\n"
        "We sent a new one."
    )
    process(
        session,
        world,
        agent_mail(from_addr="ana@agents.test", to_addr=world.token(), body=body).as_bytes(),
    )
    conversation = services.get_conversation(session, world.app, world.conversation_id)
    ticket = conversation.ticket
    assert ticket.assignee_id == world.bob.id
    assert ticket.priority == Priority.HIGH
    assert ticket.status == TicketStatus.WAITING_ON_CUSTOMER
    assert ticket.category == "billing"
    assert [t.name for t in conversation.tags] == ["refund"]
    [message] = agent_messages(session, world)
    assert message.text == "We sent a new one."


def test_snooze_and_resolve_commands(session, world):
    process(
        session,
        world,
        agent_mail(
            from_addr="ana@agents.test", to_addr=world.token(), body="/snooze 2d"
        ).as_bytes(),
    )
    conversation = services.get_conversation(session, world.app, world.conversation_id)
    assert conversation.state == ConversationState.SNOOZED
    assert conversation.snoozed_until == world.now + dt.timedelta(days=2)
    assert agent_messages(session, world) == []
    process(
        session,
        world,
        agent_mail(
            from_addr="ana@agents.test", to_addr=world.token(), body="/resolve\nAll done, Sam!"
        ).as_bytes(),
    )
    assert conversation.state == ConversationState.RESOLVED
    assert [m.text for m in agent_messages(session, world)] == ["All done, Sam!"]


def rejected(session, world, raw, **kw) -> AgentMailRejected:
    before = session.scalar(select(func.count(Message.id)))
    with pytest.raises(AgentMailRejected) as err:
        process(session, world, raw, **kw)
    assert session.scalar(select(func.count(Message.id))) == before
    return err.value


def test_a_forwarded_notification_answered_by_someone_else_is_rejected_and_the_agent_told(
    session, world
):
    raw = agent_mail(
        from_addr="colleague@elsewhere.test", to_addr=world.token(), body="I can help!"
    ).as_bytes()
    exc = rejected(session, world, raw)
    assert exc.reason == "sender" and exc.agent_id == world.ana.id
    assert "colleague@elsewhere.test" in exc.detail


def test_an_unverified_address_of_the_agent_is_not_enough(session, world):
    world.ana.addresses.append(
        AgentAddress(app_id=world.app.id, address="ana@home.test", verified=False)
    )
    session.flush()
    raw = agent_mail(from_addr="ana@home.test", to_addr=world.token(), body="Hi").as_bytes()
    assert rejected(session, world, raw).reason == "sender"


def test_another_agents_token_from_this_agent_is_rejected(session, world):
    raw = agent_mail(
        from_addr="ana@agents.test", to_addr=world.token(agent=world.bob), body="Hi"
    ).as_bytes()
    exc = rejected(session, world, raw)
    assert exc.reason == "sender" and exc.agent_id == world.bob.id


def test_expired_and_foreign_key_tokens_are_rejected(session, world):
    old = agent_token(
        world.app.id,
        world.conversation_id,
        world.ana.id,
        "reply",
        world.now - dt.timedelta(days=31),
    )
    raw = agent_mail(
        from_addr="ana@agents.test", to_addr=reply_address(SUPPORT, RING.sign(old)), body="Hi"
    ).as_bytes()
    assert rejected(session, world, raw).reason == "expired"
    raw = agent_mail(
        from_addr="ana@agents.test",
        to_addr=world.token(ring=Keyring(b"a retired key")),
        body="Hi",
    ).as_bytes()
    exc = rejected(session, world, raw)
    assert exc.reason == "unknown-key" and exc.agent_id == world.ana.id


def test_an_agent_answering_with_a_customer_token_is_rejected_not_posted(session, world):
    from channels.email.tokens import CustomerToken

    customer_address = reply_address(
        SUPPORT, RING.sign(CustomerToken(world.app.id, world.conversation_id, 1))
    )
    raw = agent_mail(from_addr="ana@agents.test", to_addr=customer_address, body="Hi").as_bytes()
    assert rejected(session, world, raw).reason == "wrong-kind"


def test_a_customer_reply_with_a_customer_token_is_left_to_the_customer_path(session, world):
    from channels.email.tokens import CustomerToken

    customer_address = reply_address(
        SUPPORT, RING.sign(CustomerToken(world.app.id, world.conversation_id, 1))
    )
    raw = agent_mail(
        from_addr="sam@example.com", to_addr=customer_address, body="Thanks"
    ).as_bytes()
    result = process(session, world, raw)
    assert result.rule != "agent token"
    assert result.message is not None and result.message.author_type == AuthorType.CUSTOMER


def test_an_unknown_or_broken_command_rejects_the_whole_mail(session, world):
    raw = agent_mail(
        from_addr="ana@agents.test", to_addr=world.token(), body="/prioirty high\nHi Sam"
    ).as_bytes()
    exc = rejected(session, world, raw)
    assert exc.reason == "command" and "/prioirty" in exc.detail
    raw = agent_mail(
        from_addr="ana@agents.test", to_addr=world.token(), body="/priority extreme\nHi Sam"
    ).as_bytes()
    assert "extreme" in rejected(session, world, raw).detail


def test_an_empty_answer_is_rejected(session, world):
    raw = agent_mail(from_addr="ana@agents.test", to_addr=world.token(), body="").as_bytes()
    assert rejected(session, world, raw).reason == "empty"


def test_an_out_of_office_reply_of_the_agent_is_not_posted(session, world):
    raw = agent_mail(
        from_addr="ana@agents.test",
        to_addr=world.token(),
        body="I am out of the office until Monday.",
        headers=(("Auto-Submitted", "auto-replied"),),
    ).as_bytes()
    result = process(session, world, raw)
    assert "ignored" in (result.outcome or "")
    assert agent_messages(session, world) == []


def test_the_same_agent_mail_delivered_twice_is_posted_once(session, world):
    raw = agent_mail(from_addr="ana@agents.test", to_addr=world.token(), body="Once").as_bytes()
    process(session, world, raw)
    process(session, world, raw)
    assert [m.text for m in agent_messages(session, world)] == ["Once"]


@pytest.fixture(scope="module")
def dkim_keys(tmp_path_factory) -> Iterator[DkimKeys]:
    keys = DkimKeys(tmp_path_factory.mktemp("dkim"))
    keys.add("agents.test")
    keys.add("evil.test")
    server = TxtServer(keys.txt_records()).start()
    keys.dns = resolver_txt(server.host, server.port)
    yield keys
    server.stop()


def test_required_dkim_accepts_an_aligned_signature_and_rejects_others(session, world, dkim_keys):
    def mail(body):
        return agent_mail(from_addr="ana@agents.test", to_addr=world.token(), body=body).as_bytes()

    process(
        session,
        world,
        dkim_keys.sign(mail("Signed"), "agents.test"),
        require_dkim=True,
        dns=dkim_keys.dns,
    )
    assert [m.text for m in agent_messages(session, world)] == ["Signed"]
    for raw in (mail("Unsigned"), dkim_keys.sign(mail("Signed by another domain"), "evil.test")):
        assert rejected(session, world, raw, require_dkim=True, dns=dkim_keys.dns).reason == "dkim"
    tampered = dkim_keys.sign(mail("Signed"), "agents.test").replace(b"Signed", b"Altered")
    assert rejected(session, world, tampered, require_dkim=True, dns=dkim_keys.dns).reason == "dkim"


def test_required_dkim_trusts_only_our_edges_authentication_results(session, world):
    def mail(results, body="Hi"):
        return agent_mail(
            from_addr="ana@agents.test",
            to_addr=world.token(),
            body=body,
            headers=tuple(("Authentication-Results", r) for r in results),
        ).as_bytes()

    kw = {"require_dkim": True, "trusted_authserv_id": "mx.acme.test", "dns": lambda *a, **k: None}
    process(session, world, mail(["mx.acme.test; dkim=pass header.d=agents.test"], "Edge"), **kw)
    assert [m.text for m in agent_messages(session, world)] == ["Edge"]
    forged = [
        ["mx.evil.test; dkim=pass header.d=agents.test"],  # someone else's verdict
        # our edge's verdict on top, the sender's forged one below it
        [
            "mx.acme.test; dkim=fail header.d=agents.test",
            "mx.acme.test; dkim=pass header.d=agents.test",
        ],
        ["mx.acme.test; dkim=pass header.d=evil.test"],  # not aligned with the From
    ]
    for results in forged:
        assert rejected(session, world, mail(results), **kw).reason == "dkim"


def test_read_reply_separates_commands_from_text():
    reply = read_reply("\n/assign me\n/tag refund, vip\n\nHello\n/not a command here")
    assert [c.name for c in reply.commands] == ["assign", "tag"]
    assert reply.text == "Hello\n/not a command here"
    assert read_reply("/etc/hosts is broken").commands == ()
    assert read_reply("/note Refund approved\nby phone").text == "Refund approved\nby phone"
    with pytest.raises(CommandError):
        read_reply("/priority")


def test_parse_when_reads_durations_weekdays_and_iso_times():
    now = dt.datetime(2026, 11, 25, 10, 0, tzinfo=dt.UTC)  # a Wednesday
    assert parse_when("2d", now) == now + dt.timedelta(days=2)
    assert parse_when("monday 9:00", now) == dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.UTC)
    assert parse_when("wednesday", now) == dt.datetime(2026, 12, 2, 9, 0, tzinfo=dt.UTC)
    assert parse_when("monday 9:00", now, "Europe/Berlin") == dt.datetime(
        2026, 11, 30, 8, 0, tzinfo=dt.UTC
    )
    assert parse_when("2026-12-01T08:00+00:00", now) == dt.datetime(2026, 12, 1, 8, tzinfo=dt.UTC)
    for bad in ("someday", "monday 25:00", "today 8:00"):
        with pytest.raises(CommandError):
            parse_when(bad, now)
