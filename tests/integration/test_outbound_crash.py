"""`gateway serve` SIGKILLed mid-send: the relay already has the message, the gateway never read
its answer. The row must not go out a second time; it is held for an agent, with a note."""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from gateway import outbound
from gateway.config import load_config
from gateway.runtime import Runtime
from tests.support.relay_config import write_relay_config
from tests.support.serve import clean_env, serve_process
from tests.support.smtp_sink import Received, free_port
from tickets import services
from tickets.models import Message, Note, Outbox, OutboxState

pytestmark = pytest.mark.slow


class SlowRelay:
    """Keeps the message, then takes its time to say so: the window a crash falls into."""

    def __init__(self) -> None:
        self.messages: list[Received] = []

    def to_customer(self) -> list[Received]:
        # Agent notifications (issue 6) go through the same relay; only the customer's count.
        return [m for m in self.messages if m.rcpt_tos == ["chris@example.com"]]

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(
            Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content))
        )
        await asyncio.sleep(30)
        return "250 OK"


def test_a_crash_between_relay_accept_and_marking_sent_sends_nothing_twice(tmp_path: Path):
    relay = SlowRelay()
    port = free_port()
    controller = Controller(relay, hostname="127.0.0.1", port=port)
    controller.start()
    config_file = write_relay_config(tmp_path, port)
    config = load_config(config_file)
    rt = Runtime.create(config)
    with rt.unit_of_work() as s:
        app = services.get_app(s, "demo")
        agent = services.add_agent(s, app, "ana@localhost", "Ana", rt.clock())
        customer = services.create_customer(s, app, rt.clock(), email="chris@example.com")
        conversation, _ = services.start_conversation(s, app, customer, "chat", "hi", rt.clock())
        reply = services.add_agent_message(s, conversation, agent, "Only once", rt.clock())
        reply_id = reply.id
    rt.close()
    try:
        env = clean_env(GATEWAY_DATA_DIR=str(tmp_path / "data"))
        with serve_process(["--config", str(config_file), "serve"], cwd=tmp_path, env=env) as proc:
            deadline = time.monotonic() + 60
            while not relay.to_customer() and time.monotonic() < deadline:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                time.sleep(0.05)
            assert len(relay.to_customer()) == 1
            proc.send_signal(signal.SIGKILL)  # the relay has it; the 250 was never read
            proc.wait(timeout=30)
    finally:
        controller.stop()

    rt = Runtime.create(config)
    later = rt.clock() + dt.timedelta(minutes=20)  # the claim is stale by now
    rt.clock = lambda: later  # type: ignore[method-assign]
    with rt.unit_of_work() as s:
        row = s.scalar(select(Outbox).where(Outbox.kind == "customer"))
        assert row.state == OutboxState.SENDING
        row_id = row.id
    # The sweep finds it as a stale claim...
    with rt.unit_of_work() as s:
        stale_before = later - outbound.outbound_for(rt).stale_after
        assert row_id in outbound.outbox.stale_ids(s, stale_before, 10)
    # ...and the attempt it enqueues settles it: the relay cannot say, so it is held.
    assert outbound.send_outbound(rt, row_id) == OutboxState.HELD
    assert outbound.send_outbound(rt, row_id) is None  # and stays held
    with rt.unit_of_work() as s:
        row = s.get(Outbox, row_id)
        assert row.state == OutboxState.HELD and "delivery unknown" in row.last_error
        assert s.get(Message, reply_id).delivery_state == "held"
        notes = s.scalars(select(Note.text)).all()
        assert any("held" in n for n in notes)
    assert len(relay.to_customer()) == 1
    rt.close()
