"""One SMTP transaction per recipient (VERP), through a real relay (aiosmtpd on loopback).

A reply To the customer and Cc two participants is three transactions on one connection, the
same message under three return paths, each naming the row and its recipient. The relay's
answer to each recipient is that recipient's alone: a participant refused at RCPT is marked
undeliverable and the agents are told; a temporary refusal is retried for that recipient only;
a crash inside one recipient's transaction never sends again to those who already have it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from channels.email import outbox
from channels.email.tokens import bounce_token_in
from gateway import outbound
from gateway.config import load_config
from gateway.runtime import Runtime
from tests.integration.test_outbound import Clock, agent_reply, chat, make_config, make_runtime
from tests.support.relay_config import write_relay_config
from tests.support.serve import clean_env, serve_process
from tests.support.smtp_sink import Received, SmtpSink, free_port
from tickets import participants, services
from tickets.models import Conversation, Message, Note, Outbox, OutboxState, Participant

CUSTOMER, PAT, LEE = "chris@example.com", "pat@example.org", "lee@example.net"


def runtime_for(tmp_path: Path, port: int) -> tuple[Runtime, Clock]:
    return make_runtime(
        make_config(
            tmp_path,
            transport="smtp",
            host="127.0.0.1",
            port=port,
            retry_schedule=["1m", "5m"],
            give_up_after="1h",
            timeout_seconds=5,
        )
    )


@pytest.fixture
def gw(tmp_path: Path, relay: SmtpSink) -> Iterator[tuple[Runtime, Clock]]:
    rt, clock = runtime_for(tmp_path, relay.port)
    yield rt, clock
    ob = getattr(rt, "_outbound", None)
    if ob is not None and hasattr(ob.built, "close"):
        ob.built.close()
    rt.close()


def reply_copying_two(rt: Runtime, clock: Clock, text: str = "We sent a new lamp.") -> int:
    """A chat whose customer copies Pat and Lee, and an agent's reply: its outbox row."""
    cid = chat(rt)
    with rt.unit_of_work() as s:
        conversation = s.get(Conversation, cid)
        for address in (PAT, LEE):
            participants.add(s, conversation, address, services.SYSTEM, rt.clock())
    agent_reply(rt, cid, text)
    clock.advance(121)
    row = outbound.deliver(rt, cid).outbox_id
    assert row is not None
    return row


def recipient_named(rt: Runtime, return_path: str) -> str:
    """The recipient a return path's signed token names (its index in the row's recipients)."""
    text = bounce_token_in(return_path)
    assert text is not None
    token = rt.keyring.verify_bounce(text)
    assert token.recipient is not None
    with rt.unit_of_work() as s:
        return str(s.get(Outbox, token.outbox_id).recipients[token.recipient])


def to(relay_messages: list[Received], address: str) -> list[Received]:
    return [m for m in relay_messages if m.rcpt_tos == [address]]


def state_of(rt: Runtime, row_id: int) -> tuple[OutboxState, list[Any] | None]:
    with rt.unit_of_work() as s:
        row = s.get(Outbox, row_id)
        return row.state, row.recipient_states


def test_a_reply_copying_two_is_three_transactions_under_three_return_paths(gw, relay):
    rt, clock = gw
    row = reply_copying_two(rt, clock)
    assert outbound.send_outbound(rt, row) == OutboxState.SENT
    got = relay.wait_for(3)
    assert [m.rcpt_tos for m in got] == [[CUSTOMER], [PAT], [LEE]]
    assert relay.greeted == 1  # one connection for the three
    # The same message to each: the customer in To, both participants visible in Cc.
    assert len({m.raw for m in got}) == 1
    assert got[0].message["To"] == CUSTOMER
    assert got[0].message["Cc"] == f"{PAT}, {LEE}"
    paths = [m.mail_from for m in got]
    assert len(set(paths)) == 3
    assert all(p.startswith("bounces+") and p.endswith("@localhost") for p in paths)
    assert [recipient_named(rt, p) for p in paths] == [CUSTOMER, PAT, LEE]
    assert state_of(rt, row) == (OutboxState.SENT, ["accepted"] * 3)
    assert outbound.send_outbound(rt, row) is None  # nothing more to do, nothing sent again
    assert len(relay.messages) == 3


def test_a_participant_refused_at_rcpt_is_marked_undeliverable_and_the_agents_told(gw, relay):
    rt, clock = gw
    relay.refuse_rcpt[PAT] = "550 5.1.1 <pat@example.org>: Recipient address rejected"
    row = reply_copying_two(rt, clock)
    assert outbound.send_outbound(rt, row) == OutboxState.SENT
    got = relay.wait_for(2)
    assert [m.rcpt_tos for m in got] == [[CUSTOMER], [LEE]]
    assert state_of(rt, row) == (OutboxState.SENT, ["accepted", "refused", "accepted"])
    with rt.unit_of_work() as s:
        marked = {p.address: p.bounced_at for p in s.scalars(select(Participant))}
        assert marked[PAT] is not None and marked[LEE] is None
        notes = s.scalars(select(Note.text)).all()
        assert any(PAT in n and "Recipient address rejected" in n for n in notes), notes
        assert not any(LEE in n or CUSTOMER in n for n in notes)
        assert {m.delivery_state for m in s.scalars(select(Message).where(Message.id > 1))} == {
            "sent"
        }
    # The next reply no longer copies Pat.
    agent_reply(rt, s_cid(rt), "And a spare bulb.")
    clock.advance(121)
    second = outbound.deliver(rt, s_cid(rt)).outbox_id
    assert outbound.send_outbound(rt, second) == OutboxState.SENT
    later = relay.wait_for(4)[2:]
    assert [m.rcpt_tos for m in later] == [[CUSTOMER], [LEE]]
    assert later[0].message["Cc"] == LEE


def s_cid(rt: Runtime) -> int:
    with rt.unit_of_work() as s:
        return int(s.scalar(select(Conversation.id)))


def test_the_customer_refused_at_rcpt_fails_the_email_as_before(gw, relay):
    rt, clock = gw
    relay.refuse_rcpt[CUSTOMER] = "550 5.1.1 no such user"
    row = reply_copying_two(rt, clock)
    assert outbound.send_outbound(rt, row) == OutboxState.FAILED
    assert [m.rcpt_tos for m in relay.wait_for(2)] == [[PAT], [LEE]]
    with rt.unit_of_work() as s:
        failed = s.get(Outbox, row)
        assert "550 5.1.1 no such user" in failed.last_error
        agent = s.scalars(select(Message).where(Message.author_type == "agent")).one()
        assert agent.delivery_state == "failed"
        assert any(CUSTOMER in n for n in s.scalars(select(Note.text)))
        # An agent's retry goes to the customer only: the participants have it.
        outbox.retry(s, row, rt.clock())
    relay.refuse_rcpt.clear()
    assert outbound.send_outbound(rt, row) == OutboxState.SENT
    got = relay.wait_for(3)
    assert [m.rcpt_tos for m in got] == [[PAT], [LEE], [CUSTOMER]]


def test_a_temporary_refusal_is_retried_for_that_recipient_only(gw, relay):
    rt, clock = gw
    relay.refuse_rcpt[PAT] = "452 4.2.2 Mailbox full, try later"
    row = reply_copying_two(rt, clock)
    assert outbound.send_outbound(rt, row) == OutboxState.PENDING
    assert [m.rcpt_tos for m in relay.wait_for(2)] == [[CUSTOMER], [LEE]]
    assert state_of(rt, row) == (OutboxState.PENDING, ["accepted", "pending", "accepted"])
    with rt.unit_of_work() as s:
        # The customer has it: the reply shows as sent, and the conversation's next email is
        # not held up behind a copy.
        agent = s.scalars(select(Message).where(Message.author_type == "agent")).one()
        assert agent.delivery_state == "sent"
        assert s.get(Outbox, row).next_attempt_at == rt.clock() + dt.timedelta(minutes=1)
    assert outbound.send_outbound(rt, row) is None  # not due yet
    relay.refuse_rcpt.clear()
    clock.advance(61)
    assert outbound.send_outbound(rt, row) == OutboxState.SENT
    got = relay.wait_for(3)
    assert [m.rcpt_tos for m in got] == [[CUSTOMER], [LEE], [PAT]]
    assert recipient_named(rt, got[2].mail_from) == PAT
    assert state_of(rt, row) == (OutboxState.SENT, ["accepted"] * 3)


def test_a_copy_that_keeps_failing_is_given_up_and_the_agents_told(gw, relay):
    rt, clock = gw
    relay.refuse_rcpt[PAT] = "452 4.2.2 Mailbox full, try later"
    row = reply_copying_two(rt, clock)
    state = outbound.send_outbound(rt, row)
    while state == OutboxState.PENDING:
        clock.advance(5 * 60 + 1)
        state = outbound.send_outbound(rt, row)
    assert state == OutboxState.SENT  # the customer and Lee have it
    assert len(to(relay.messages, CUSTOMER)) == 1 and len(to(relay.messages, LEE)) == 1
    with rt.unit_of_work() as s:
        assert any(PAT in n and "gave up" in n for n in s.scalars(select(Note.text)))


class StallingRelay:
    """Keeps every message; answers the one to `stall_for` only after a long wait: the window
    a SIGKILL falls into."""

    def __init__(self, stall_for: str) -> None:
        self.stall_for = stall_for
        self.messages: list[Received] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(
            Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content))
        )
        if envelope.rcpt_tos == [self.stall_for]:
            await asyncio.sleep(30)
        return "250 OK"


@pytest.mark.slow
def test_a_kill_inside_one_recipients_transaction_sends_nobody_anything_twice(tmp_path: Path):
    """`gateway serve` is SIGKILLed while the relay holds Pat's copy unanswered: the
    customer's copy is accepted and recorded, Lee's not yet sent, Pat's in doubt. The recovery
    sends Lee's and holds the row for Pat's; an agent's retry sends Pat's alone."""
    relay = StallingRelay(PAT)
    port = free_port()
    controller = Controller(relay, hostname="127.0.0.1", port=port)
    controller.start()
    config_file = write_relay_config(tmp_path, port)
    config = load_config(config_file)
    rt = Runtime.create(config)
    with rt.unit_of_work() as s:
        app = services.get_app(s, "demo")
        agent = services.add_agent(s, app, "ana@localhost", "Ana", rt.clock())
        customer = services.create_customer(s, app, rt.clock(), email=CUSTOMER)
        conversation, _ = services.start_conversation(s, app, customer, "chat", "hi", rt.clock())
        for address in (PAT, LEE):
            participants.add(s, conversation, address, services.SYSTEM, rt.clock())
        reply = services.add_agent_message(s, conversation, agent, "Only once", rt.clock())
        reply_id = reply.id
    rt.close()
    try:
        env = clean_env(GATEWAY_DATA_DIR=str(tmp_path / "data"))
        with serve_process(["--config", str(config_file), "serve"], cwd=tmp_path, env=env) as proc:
            deadline = time.monotonic() + 60
            while not to(relay.messages, PAT) and time.monotonic() < deadline:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                time.sleep(0.05)
            assert len(to(relay.messages, PAT)) == 1
            proc.send_signal(signal.SIGKILL)  # the relay has Pat's copy; the 250 never read
            proc.wait(timeout=30)

        rt = Runtime.create(config)
        later = rt.clock() + dt.timedelta(minutes=20)  # the claim is stale by now
        rt.clock = lambda: later  # type: ignore[method-assign]
        with rt.unit_of_work() as s:
            row = s.scalar(select(Outbox).where(Outbox.kind == "customer"))
            assert row.state == OutboxState.SENDING
            assert row.recipient_states == ["accepted", "sending", "pending"]
            row_id = row.id
        # The stale claim is settled (Pat's copy in doubt, Lee's still to send) and the same
        # attempt sends Lee's: the row is then held for Pat's.
        assert outbound.send_outbound(rt, row_id) == OutboxState.HELD
        assert outbound.send_outbound(rt, row_id) is None
        with rt.unit_of_work() as s:
            row = s.get(Outbox, row_id)
            assert row.recipient_states == ["accepted", "unknown", "accepted"]
            assert "delivery unknown" in row.last_error
            assert s.get(Message, reply_id).delivery_state == "sent"  # the customer has it
            notes = s.scalars(select(Note.text)).all()
            assert any(PAT in n and "held" in n for n in notes), notes
            assert not any(CUSTOMER in n for n in notes)
            outbox.retry(s, row_id, later)  # an agent checked with Pat: send it again
        assert outbound.send_outbound(rt, row_id) == OutboxState.SENT
        rt.close()
        # Ana's notification of the held copy may reach the relay too; only the reply counts here.
        per_recipient = [m.rcpt_tos[0] for m in relay.messages if m.rcpt_tos != ["ana@localhost"]]
        assert sorted(per_recipient) == sorted([CUSTOMER, PAT, LEE, PAT])
        assert per_recipient.count(CUSTOMER) == 1 and per_recipient.count(LEE) == 1
    finally:
        controller.stop()
