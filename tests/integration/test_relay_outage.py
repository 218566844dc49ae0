"""A relay outage in the middle of a run of 200 replies: the gateway (real workers, scheduler,
SMTP relay on loopback) delivers every reply exactly once, in order within each conversation.

The relay goes away abruptly, as a crashed relay or a dropped network does: a send whose
message data was already out when the connection died may or may not have reached it, so the
gateway holds that email for an agent instead of risking a duplicate (at most once). Only such
an email may be missing from the relay, and the team must see it held on the conversation."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from gateway.config import GatewayConfig, embedded_default
from gateway.server import Services, start
from gateway.views import conversation_detail
from tests.support.smtp_sink import Received, SmtpSink, free_port
from tests.support.waiting import wait_for
from tickets import services
from tickets.models import Conversation, Message, Outbox, OutboxState

CONVERSATIONS = 20
REPLIES = 200
WORKER_THREADS = 4
EVERY_REPLY = {(c, k) for c in range(CONVERSATIONS) for k in range(REPLIES // CONVERSATIONS)}
MARK = re.compile(r"reply (\d+)-(\d+) end")

pytestmark = pytest.mark.slow


def outage_config(tmp_path: Path, relay: SmtpSink) -> GatewayConfig:
    base = embedded_default()
    return base.model_copy(
        update={
            "database_url": f"sqlite:///{tmp_path / 'gw.db'}",
            "data_dir": str(tmp_path),
            "sweep_seconds": 0.3,
            "worker_threads": WORKER_THREADS,
            "smtp": base.smtp.model_copy(update={"listen": f"127.0.0.1:{free_port()}"}),
            "http": base.http.model_copy(update={"listen": "127.0.0.1:0"}),
            "delivery": base.delivery.model_copy(
                update={"email_grace_seconds": 0, "widget_online_seconds": 0}
            ),
            "outbound": base.outbound.model_copy(
                update={
                    "transport": "smtp",
                    "host": relay.host,
                    "port": relay.port,
                    "retry_schedule": ["1s"],
                    "give_up_after": "1h",
                    "timeout_seconds": 5,
                }
            ),
        }
    )


@pytest.fixture
def gateway(tmp_path: Path, relay: SmtpSink) -> Iterator[Services]:
    running = start(outage_config(tmp_path, relay))
    yield running
    running.stop()


def new_section(text: str) -> str:
    """The messages an email is about: before the chat link (the recap repeats older ones)."""
    return text.split("Continue the chat:", 1)[0]


def marks(text: str) -> list[tuple[int, int]]:
    return [(int(m.group(1)), int(m.group(2))) for m in MARK.finditer(text)]


def message_id(got: Received) -> str:
    return str(got.message["Message-ID"]).strip().strip("<>")


def test_a_relay_outage_loses_nothing_and_duplicates_nothing(gateway, relay):
    rt = gateway.runtime
    with rt.unit_of_work() as s:
        app = services.get_app(s, "demo")
        agent = services.add_agent(s, app, "ana@localhost", "Ana", rt.clock())
        ids = []
        for c in range(CONVERSATIONS):
            customer = services.create_customer(s, app, rt.clock(), email=f"c{c}@example.com")
            conversation, _ = services.start_conversation(
                s, app, customer, "chat", f"question {c}", rt.clock()
            )
            ids.append(conversation.id)
        agent_id = agent.id
    for n in range(REPLIES):
        if n == 60:
            relay.stop()  # the relay goes away for a while...
        if n == 140:
            relay.start()  # ...and comes back
        c = n % CONVERSATIONS
        with rt.unit_of_work() as s:
            app = services.get_app(s, "demo")
            conversation = services.get_conversation(s, app, ids[c])
            agent = s.get(type(agent), agent_id)
            services.add_agent_message(
                s, conversation, agent, f"reply {c}-{n // CONVERSATIONS} end", rt.clock()
            )
        time.sleep(0.03)

    def to_customers() -> list[Received]:
        # The rest are the agent's notifications (issue 6), which quote the conversation.
        return [m for m in list(relay.messages) if m.rcpt_tos != ["ana@localhost"]]

    def delivered() -> list[tuple[int, int]]:
        found = []
        for got in to_customers():
            found += marks(new_section(got.message.get_body(("plain",)).get_content()))
        return found

    def held() -> set[tuple[int, int]]:
        with rt.unit_of_work() as s:
            texts = s.scalars(select(Message.text).where(Message.delivery_state == "held"))
            return {mark for text in texts for mark in marks(text)}

    def unfinished() -> int:
        with rt.unit_of_work() as s:
            return s.scalar(
                select(func.count()).where(
                    Outbox.state.in_((OutboxState.PENDING, OutboxState.SENDING))
                )
            )

    # Settled: every reply went out or was held, and no email is still on its way.
    wait_for(lambda: unfinished() == 0 and set(delivered()) | held() == EVERY_REPLY, timeout=120)
    found, kept = delivered(), held()
    assert len(found) == len(set(found)), "a reply reached the customer twice"
    assert set(found) | kept == EVERY_REPLY  # none lost
    for c in range(CONVERSATIONS):
        sequence = [k for cc, k in found if cc == c]
        assert sequence == sorted(sequence), (c, sequence)
        assert set(sequence) | {k for cc, k in kept if cc == c} == set(
            range(REPLIES // CONVERSATIONS)
        )
    # Each email went to its own conversation's customer.
    for got in to_customers():
        conversations = {
            cc for cc, _ in marks(new_section(got.message.get_body(("plain",)).get_content()))
        }
        assert [f"c{cc}@example.com" for cc in conversations] == got.rcpt_tos

    with rt.unit_of_work() as s:
        rows = list(s.scalars(select(Outbox)))
        retried = s.scalar(select(func.count()).where(Outbox.attempts > 1))
        held_rows = [r for r in rows if r.state == OutboxState.HELD]
        # What the team sees of each conversation an email was held on.
        views = [
            conversation_detail(s.get(Conversation, cid))
            for cid in sorted({r.conversation_id for r in held_rows if r.kind == "customer"})
        ]
    assert {r.state for r in rows} <= {OutboxState.SENT, OutboxState.HELD}
    # Held only for a send cut off after its data was out: one in flight per worker at most.
    assert len(held_rows) <= WORKER_THREADS
    for row in held_rows:
        assert row.last_error is not None
        assert row.last_error.startswith(
            "delivery unknown: connection lost after the message was sent"
        ), row.last_error
    # Every email marked sent reached the relay exactly once; nothing else did, but what was held
    # (the relay may have kept it before the connection died).
    arrived = [message_id(got) for got in list(relay.messages)]
    for row in rows:
        expected = {1} if row.state == OutboxState.SENT else {0, 1}
        assert arrived.count(row.message_id_header.strip("<>")) in expected, row.id
    assert set(arrived) <= {r.message_id_header.strip("<>") for r in rows}
    # A held reply is visible to the team: on the message, and in a note on the conversation.
    shown = [m for view in views for m in view["messages"] if m["delivery_state"] == "held"]
    assert {mark for m in shown for mark in marks(m["text"])} == kept
    assert all("delivery unknown" in m["delivery_error"] for m in shown)
    for view in views:
        assert any("was held, not sent" in n["text"] for n in view["notes"]), view["notes"]
    assert retried > 0  # the outage was real: some rows needed more than one attempt
