"""A `gateway worker` process killed with SIGKILL in the middle of sending: at most one email per
outbox row.

The relay (aiosmtpd on loopback) takes each message and then waits before answering 250, so the
kill lands after the relay has the message but before the worker knows it: the case where a
naive retry would send a second copy. A new worker process then sends the rest; the rows the
dead one left `sending` are settled once their claim is stale (held for an agent, because an
SMTP relay cannot be asked whether it has a message) and never sent again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from gateway import outbound
from gateway.broker import setup_broker
from gateway.config import load_config
from gateway.runtime import Runtime
from tests.support.serve import clean_env, serve_process
from tests.support.smtp_sink import Received, SmtpSink
from tickets import services
from tickets.models import Outbox, OutboxState

ROWS = 6


class SlowSink(SmtpSink):
    """Keeps each message, then answers 250 only after `delay` seconds."""

    delay: float = 4.0

    def start(self) -> SlowSink:
        sink = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                with sink.lock:
                    sink.messages.append(
                        Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.content)
                    )
                await asyncio.sleep(sink.delay)
                return "250 OK queued"

        self._controller = Controller(Handler(), hostname=self.host, port=self.port)
        self._controller.start()
        return self


def message_ids(sink: SmtpSink) -> Counter[str]:
    with sink.lock:
        return Counter(str(m.message["Message-ID"]) for m in sink.messages)


def states(rt: Runtime) -> dict[int, OutboxState]:
    with rt.unit_of_work() as s:
        return {i: st for i, st in s.execute(select(Outbox.id, Outbox.state))}


@pytest.mark.slow
def test_a_worker_killed_mid_send_sends_at_most_one_email_per_row(tmp_path: Path):
    sink = SlowSink().start()
    config_file = tmp_path / "gateway.toml"
    config_file.write_text(
        f'data_dir = "{tmp_path}"\n'
        "sweep_seconds = 1.0\nworker_threads = 4\n"
        "[delivery]\nemail_grace_seconds = 0\n"
        f'[outbound]\ntransport = "smtp"\nhost = "127.0.0.1"\nport = {sink.port}\n'
        "timeout_seconds = 10\n"
        '[[apps]]\nname = "demo"\nbrand = "Demo"\n'
        '[[apps.channels]]\nname = "support"\naddresses = ["support@localhost"]\n'
    )
    config = load_config(config_file)
    setup_broker("stub://")
    rt = Runtime.create(config)
    # The rows are a minute old, so the worker's sweep takes them at once.
    minute_ago = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    rt.clock = lambda: minute_ago  # type: ignore[method-assign]
    with rt.unit_of_work() as s:
        app = services.get_app(s, "demo")
        agent = services.add_agent(s, app, "ana@localhost", "Ana", minute_ago)
        conversations = []
        for i in range(ROWS):
            customer = services.create_customer(
                s, app, minute_ago, name=f"C{i}", email=f"c{i}@example.com"
            )
            conversation, _ = services.start_conversation(
                s, app, customer, "chat", f"Question {i}", minute_ago
            )
            services.add_agent_message(s, conversation, agent, f"Answer {i}", minute_ago)
            conversations.append(conversation.id)
    for cid in conversations:
        assert outbound.deliver(rt, cid).outbox_id is not None
    rt.clock = lambda: dt.datetime.now(dt.UTC)  # type: ignore[method-assign]
    assert set(states(rt).values()) == {OutboxState.PENDING}

    env = clean_env()
    args = ["--config", str(config_file), "worker"]
    try:
        with serve_process(args, cwd=tmp_path, env=env) as worker:
            deadline = time.monotonic() + 30
            while not sink.messages and time.monotonic() < deadline:
                time.sleep(0.05)
            assert sink.messages, "the worker never sent"
            time.sleep(0.5)  # a few more sends in flight
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=10)
        mid_send = [i for i, st in states(rt).items() if st == OutboxState.SENDING]
        assert mid_send, "the kill did not land mid-send"
        received_before = message_ids(sink)

        sink.delay = 0
        with serve_process(args, cwd=tmp_path, env=env) as worker:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                left = [i for i, st in states(rt).items() if st == OutboxState.PENDING]
                if not left:
                    break
                time.sleep(0.2)
            time.sleep(3)  # more sweeps: the rows the dead worker left must not go again
            worker.send_signal(signal.SIGTERM)
            worker.communicate(timeout=30)
        after = states(rt)
        assert [i for i, st in after.items() if st == OutboxState.SENDING] == mid_send
        assert all(st in (OutboxState.SENT, OutboxState.SENDING) for st in after.values())

        # Once the claims are stale, the sweep settles them: held, not sent a second time.
        later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=16)
        rt.clock = lambda: later  # type: ignore[method-assign]
        for outbox_id in mid_send:
            assert outbound.send_outbound(rt, outbox_id) == OutboxState.HELD
    finally:
        sink.stop()

    final = states(rt)
    counts = message_ids(sink)
    with rt.unit_of_work() as s:
        headers = {i: h for i, h in s.execute(select(Outbox.id, Outbox.message_id_header))}
    assert max(counts.values()) == 1, f"a row went out twice: {counts}"
    for outbox_id, state in final.items():
        copies = counts[headers[outbox_id]]
        if state == OutboxState.SENT:
            assert copies == 1
        else:
            assert state == OutboxState.HELD and copies <= 1
    print(
        f"\n{ROWS} rows: {len(mid_send)} in flight at the kill "
        f"({sum(received_before.values())} had reached the relay), "
        f"{sum(1 for st in final.values() if st == OutboxState.SENT)} sent, "
        f"{sum(1 for st in final.values() if st == OutboxState.HELD)} held, "
        f"{sum(counts.values())} emails in all"
    )
    rt.close()
