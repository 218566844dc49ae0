"""Outbound in batches, through a real SMTP relay (aiosmtpd on loopback): many emails rendered,
stored and sent together arrive once each over kept connections; a relay that drops the
connection in the middle of a batch, or refuses one recipient, costs no email and doubles none;
a tracker's news to every linked customer goes out in batches through the real workers."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from sqlalchemy import func, select

from gateway import outbound
from gateway.broker import setup_broker
from gateway.runtime import Runtime
from tests.integration.test_outbound import T0, Clock, make_config, make_runtime
from tests.support.smtp_sink import Received, SmtpSink
from tickets import services, trackers
from tickets.models import Conversation, Message, Note, Outbox, OutboxState, Ticket


@dataclass
class DroppingRelay(SmtpSink):
    """Closes the connection, without a word, at every `every`+1-th MAIL FROM on it, and
    once at the RCPT TO of `drop_at_rcpt`: the way a relay restarts or a NAT forgets a flow."""

    every: int = 4
    drop_at_rcpt: str | None = None
    drops: int = 0

    def start(self) -> DroppingRelay:
        from aiosmtpd.controller import Controller

        sink = self

        class Handler:
            async def handle_MAIL(
                self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
            ) -> str:
                session.mails = getattr(session, "mails", 0) + 1
                if session.mails > sink.every:
                    sink.drops += 1
                    server.transport.abort()
                    return "421 closing"
                envelope.mail_from = address
                return "250 OK"

            async def handle_RCPT(
                self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
            ) -> str:
                if address == sink.drop_at_rcpt:
                    sink.drop_at_rcpt = None
                    sink.drops += 1
                    server.transport.abort()
                    return "421 closing"
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                with sink.lock:
                    sink.messages.append(
                        Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.content)
                    )
                return "250 OK queued"

        self._controller = Controller(Handler(), hostname=self.host, port=self.port)
        self._controller.start()
        return self


def relay_runtime(tmp_path: Path, relay: SmtpSink, batch_size: int = 50) -> tuple[Runtime, Clock]:
    return make_runtime(
        make_config(
            tmp_path,
            transport="smtp",
            host=relay.host,
            port=relay.port,
            retry_schedule=["1m"],
            give_up_after="1h",
            timeout_seconds=5,
            batch_size=batch_size,
        )
    )


@pytest.fixture
def gw(tmp_path: Path, relay: SmtpSink) -> Iterator[tuple[Runtime, Clock]]:
    rt, clock = relay_runtime(tmp_path, relay)
    yield rt, clock
    close(rt)


def close(rt: Runtime) -> None:
    ob = getattr(rt, "_outbound", None)
    if ob is not None and ob.built is not None and hasattr(ob.built, "close"):
        ob.built.close()
    rt.close()


def conversations_with_replies(rt: Runtime, count: int) -> list[int]:
    """`count` chats, each with an unread agent reply, the grace period over."""
    with rt.unit_of_work() as s:
        app = services.get_app(s, "demo")
        agent = services.add_agent(s, app, "ana@localhost", "Ana", T0)
        ids = []
        for i in range(count):
            customer = services.create_customer(
                s, app, T0, name=f"Customer {i}", email=f"c{i}@example.com"
            )
            conversation, _ = services.start_conversation(
                s, app, customer, "chat", f"Where is order {i}?", T0
            )
            services.add_agent_message(s, conversation, agent, f"Order {i} ships today.", T0)
            ids.append(conversation.id)
    return ids


def deliver_and_send(rt: Runtime, ids: list[int]) -> dict[int, OutboxState]:
    outcomes = outbound.deliver_batch(rt, ids)
    queued = [o.outbox_id for o in outcomes.values() if o.outbox_id is not None]
    assert len(queued) == len(ids), outcomes
    return outbound.send_batch(rt, queued)


def arrivals(relay: SmtpSink) -> Counter[str]:
    """Emails per customer (the agent's own notifications left out)."""
    with relay.lock:
        return Counter(m.rcpt_tos[0] for m in relay.messages if m.rcpt_tos != ["ana@localhost"])


def states(rt: Runtime) -> Counter[OutboxState]:
    with rt.unit_of_work() as s:
        return Counter(s.scalars(select(Outbox.state)))


def test_a_batch_of_emails_arrives_once_each_over_one_kept_connection(gw, relay):
    rt, clock = gw
    ids = conversations_with_replies(rt, 30)
    clock.advance(121)
    assert set(deliver_and_send(rt, ids).values()) == {OutboxState.SENT}
    got = relay.wait_for(30)
    assert arrivals(relay) == Counter({f"c{i}@example.com": 1 for i in range(30)})
    # Each customer got their own conversation's email, under its own Message-ID.
    for message in got:
        i = int(message.rcpt_tos[0].split("@")[0][1:])
        assert f"Order {i} ships today." in message.message.get_body(("plain",)).get_content()
    assert len({m.message["Message-ID"] for m in got}) == 30
    assert relay.greeted == 1  # one connection for the whole batch
    with rt.unit_of_work() as s:
        delivered = s.scalars(select(Message.delivery_state).where(Message.agent_id.is_not(None)))
        assert set(delivered) == {"sent"}
    # Run again (a redelivered broker message): nothing is due, nothing goes out again.
    assert outbound.deliver_batch(rt, ids) == {i: outbound.Outcome("not-due") for i in ids}
    with rt.unit_of_work() as s:
        rows = list(s.scalars(select(Outbox.id)))
    assert outbound.send_batch(rt, rows) == {}
    assert len(relay.messages) == 30


def test_a_relay_dropping_the_connection_mid_batch_loses_nothing_and_doubles_nothing(tmp_path):
    relay = DroppingRelay(drop_at_rcpt="c9@example.com").start()
    rt, clock = relay_runtime(tmp_path, relay)
    try:
        ids = conversations_with_replies(rt, 20)
        clock.advance(121)
        assert set(deliver_and_send(rt, ids).values()) == {OutboxState.SENT}
    finally:
        close(rt)
        relay.stop()
    assert relay.drops >= 4  # it did drop, more than once
    assert arrivals(relay) == Counter({f"c{i}@example.com": 1 for i in range(20)})
    assert states(rt) == Counter({OutboxState.SENT: 20})


def test_a_relay_refusing_one_recipient_fails_only_that_email(gw, relay):
    rt, clock = gw
    relay.refuse_rcpt["c3@example.com"] = "550 5.1.1 no such user"
    ids = conversations_with_replies(rt, 8)
    clock.advance(121)
    result = deliver_and_send(rt, ids)
    assert Counter(result.values()) == Counter({OutboxState.SENT: 7, OutboxState.FAILED: 1})
    relay.wait_for(7)
    assert arrivals(relay) == Counter({f"c{i}@example.com": 1 for i in range(8) if i != 3})
    assert relay.greeted == 1  # the refusal did not cost the connection
    with rt.unit_of_work() as s:
        failed = s.scalar(select(Outbox).where(Outbox.state == OutboxState.FAILED))
        assert failed.recipients == ["c3@example.com"]
        assert "no such user" in failed.last_error
        assert s.get(Message, failed.message_ids[0]).delivery_state == "failed"
        notes = s.scalars(select(Note.text).where(Note.conversation_id == failed.conversation_id))
        assert any("could not be delivered" in n for n in notes)
        others = s.scalars(
            select(func.count())
            .select_from(Note)
            .where(Note.conversation_id != failed.conversation_id)
        )
        assert list(others) == [0]


def test_a_tracker_broadcast_goes_out_in_batches_through_the_workers(tmp_path, relay):
    count = 130
    setup_broker("stub://")
    from gateway import actors
    from gateway.scheduler import Scheduler

    rt, clock = relay_runtime(tmp_path, relay, batch_size=25)
    actors.bind(rt)
    with rt.unit_of_work() as s:
        app = services.get_app(s, "demo")
        agent = services.add_agent(s, app, "ana@localhost", "Ana", T0)
        reporter = services.create_customer(s, app, T0, email="first@example.com")
        first, _ = services.start_conversation(s, app, reporter, "email", "Login down", T0)
        tracker = services.convert(s, first, agent, T0, type="tracker")
        for i in range(count):
            customer = services.create_customer(s, app, T0, email=f"c{i}@example.com")
            conversation, _ = services.start_conversation(
                s, app, customer, "chat", "I cannot log in", T0
            )
            ticket = services.convert(s, conversation, agent, T0)
            services.link_to_tracker(s, ticket, tracker, services.Actor.agent(agent), T0)
        tracker_id, agent_id = tracker.id, agent.id
    clock.advance(10)
    with rt.unit_of_work() as s:
        told = trackers.tell_linked(
            s,
            s.get(Ticket, tracker_id),
            s.get(services.Agent, agent_id),
            "It works again.",
            rt.clock(),
        )
    assert len(told.told) == count
    clock.advance(121)
    broker = dramatiq.get_broker()
    sent_batches: list[int] = []
    original = actors.send_outbound_batch.fn

    def counting(ids: list[int]) -> None:
        sent_batches.append(len(ids))
        original(ids)

    actors.send_outbound_batch.fn = counting
    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        Scheduler(rt).sweep_once()
        broker.join("outbound", timeout=120_000)
        worker.join()
    finally:
        worker.stop()
        actors.send_outbound_batch.fn = original
        close(rt)
    assert arrivals(relay) == Counter({f"c{i}@example.com": 1 for i in range(count)})
    for got in relay.messages:
        if got.rcpt_tos == ["ana@localhost"]:
            continue
        assert "It works again." in got.message.get_body(("plain",)).get_content()
    # Queued and sent in batches of 25, not one transaction (and one actor) each.
    assert sorted(sent_batches) == sorted([25] * 5 + [5])
    with rt.unit_of_work() as s:
        assert (
            s.scalar(
                select(func.count())
                .select_from(Conversation)
                .where(Conversation.email_pending_since.is_not(None))
            )
            == 0
        )
