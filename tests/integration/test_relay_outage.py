"""A relay outage in the middle of a run of 200 replies: the gateway (real workers, scheduler,
SMTP relay on loopback) delivers every reply exactly once, in order within each conversation."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from gateway.config import GatewayConfig, embedded_default
from gateway.server import Services, start
from tests.support.smtp_sink import SmtpSink, free_port
from tickets import services
from tickets.models import Outbox, OutboxState

CONVERSATIONS = 20
REPLIES = 200
MARK = re.compile(r"reply (\d+)-(\d+) end")

pytestmark = pytest.mark.slow


def outage_config(tmp_path: Path, relay: SmtpSink) -> GatewayConfig:
    base = embedded_default()
    return base.model_copy(
        update={
            "database_url": f"sqlite:///{tmp_path / 'gw.db'}",
            "data_dir": str(tmp_path),
            "sweep_seconds": 0.3,
            "worker_threads": 4,
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

    def to_customers() -> list:
        # The rest are the agent's notifications (issue 6), which quote the conversation.
        return [m for m in list(relay.messages) if m.rcpt_tos != ["ana@localhost"]]

    def delivered() -> list[tuple[int, int]]:
        found = []
        for got in to_customers():
            for m in MARK.finditer(new_section(got.message.get_body(("plain",)).get_content())):
                found.append((int(m.group(1)), int(m.group(2))))
        return found

    deadline = time.monotonic() + 120
    while len(delivered()) < REPLIES and time.monotonic() < deadline:
        time.sleep(0.2)
    found = delivered()
    assert len(found) == REPLIES, f"{len(found)} of {REPLIES} delivered"
    assert len(set(found)) == REPLIES  # none twice
    for c in range(CONVERSATIONS):
        sequence = [k for cc, k in found if cc == c]
        assert sequence == list(range(REPLIES // CONVERSATIONS)), (c, sequence)
    # Each email went to its own conversation's customer.
    for got in to_customers():
        conversations = {
            cc
            for cc, _ in (
                map(int, m.groups())
                for m in MARK.finditer(new_section(got.message.get_body(("plain",)).get_content()))
            )
        }
        assert [f"c{cc}@example.com" for cc in conversations] == got.rcpt_tos
    with rt.unit_of_work() as s:
        states = dict(s.execute(select(Outbox.state, func.count()).group_by(Outbox.state)).all())
        retried = s.scalar(select(func.count()).where(Outbox.attempts > 1))
    assert set(states) == {OutboxState.SENT}
    assert states[OutboxState.SENT] == len(relay.messages)
    assert retried > 0  # the outage was real: some rows needed more than one attempt
