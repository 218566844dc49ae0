"""Mail bombing agents: an anonymous widget visitor or a flood of inbound mail must not turn
into a flood of notification mail to the team.

Through real servers (`gateway.server.start`: its HTTP app, aiosmtpd inbound server, workers
and scheduler; an aiosmtpd relay as the agents' mail server), on SQLite and PostgreSQL:

- notifications are coalesced per agent and conversation: the first of a quiet conversation
  goes out at once, then one mail per `[notifications] coalesce_seconds` with everything new;
- at most `[notifications] max_per_hour` notification mails per agent per hour; what is over is
  folded into the next mail, never lost;
- and the notification rows do not multiply with the events: one pending row per agent and
  conversation collects them.

Each mail lists the new messages of its window; the test reads them back from the relay and
checks that every posted message was listed exactly once.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import smtplib
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from gateway.config import (
    AppConfig,
    ChannelConfig,
    GatewayConfig,
    NotificationsConfig,
    RateLimitsConfig,
)
from gateway.db import utcnow
from gateway.server import Services, start
from tests.support.bursts import thread_mail
from tests.support.http import loopback_config
from tests.support.smtp_sink import Received, SmtpSink
from tests.support.waiting import wait_for
from tickets import services
from tickets.models import AgentNotification, Message

SUPPORT = "support@acme.test"
WINDOW = 3  # coalesce_seconds
PER_HOUR = 6  # max_per_hour
AGENTS = ("ana@agents.test", "bob@agents.test")
# Every listed new message is marked so in the text part: ">> NEW << author (via, when):".
NEW = re.compile(r">> NEW << [^\n]*\n\s*(bomb \d+-\d+)\b")


def make_config(
    tmp_path: Path, relay: SmtpSink, database_url: str, limits: tuple[int, int]
) -> GatewayConfig:
    base = loopback_config(tmp_path)
    return base.model_copy(
        update={
            "database_url": database_url,
            "outbound": base.outbound.model_copy(
                update={"transport": "smtp", "host": relay.host, "port": relay.port}
            ),
            # The widget's own rate limits (tests/security for visitors) are off here: what is
            # proven is that messages it does accept cannot bomb the team.
            "rate_limits": RateLimitsConfig(
                new_visitors_per_ip="off", messages_per_ip="off", messages_per_conversation="off"
            ),
            "notifications": NotificationsConfig(
                coalesce_seconds=limits[0], max_per_hour=limits[1]
            ),
            "sweep_seconds": 0.2,
            "worker_threads": 2,
            "apps": [
                AppConfig(
                    name="acme",
                    brand="Acme",
                    channels=[ChannelConfig(name="support", addresses=[SUPPORT])],
                )
            ],
        }
    )


class Clock:
    """The gateway's clock, which the test can move an hour on (the hourly limit)."""

    def __init__(self) -> None:
        self.offset = dt.timedelta()

    def __call__(self) -> dt.datetime:
        return utcnow() + self.offset


@pytest.fixture
def limits() -> tuple[int, int]:
    """(coalesce_seconds, max_per_hour)"""
    return WINDOW, PER_HOUR


@pytest.fixture
def gateway(
    tmp_path: Path,
    relay: SmtpSink,
    database_url: str,
    limits: tuple[int, int],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[Services, Clock]]:
    monkeypatch.delenv("GATEWAY_SECRET_KEY", raising=False)
    running = start(make_config(tmp_path, relay, database_url, limits), "all")
    clock = Clock()
    running.runtime.clock = clock  # type: ignore[method-assign]
    rt = running.runtime
    with rt.unit_of_work() as s:
        app = services.get_app(s, "acme")
        for email in AGENTS:
            services.add_agent(s, app, email, email.split("@")[0].title(), rt.clock())
    yield running, clock
    running.stop()


def http_url(gateway: Services) -> str:
    [url] = [
        entry.removeprefix("http: ") for entry in gateway.listening if entry.startswith("http")
    ]
    return url


def smtp_port(gateway: Services) -> int:
    return int(gateway.runtime.config.smtp.listen.rpartition(":")[2])


def mails_to(relay: SmtpSink, address: str) -> list[Received]:
    with relay.lock:
        return [m for m in relay.messages if address in m.rcpt_tos]


def body(mail: Received) -> str:
    text = mail.message.get_body(("plain",))
    assert text is not None
    return str(text.get_content())


def listed(mails: list[Received]) -> Counter[str]:
    """How often each posted message was listed as new, over all the mails."""
    seen: Counter[str] = Counter()
    for mail in mails:
        seen.update(NEW.findall(body(mail)))
    return seen


def settle(relay: SmtpSink, posted: set[str]) -> dict[str, list[Received]]:
    """Wait until every posted message was listed to every agent, then one more window and a few
    sweeps, so that a mail too many would have arrived too: each agent's mails."""
    wait_for(
        lambda: all(set(listed(mails_to(relay, agent))) >= posted for agent in AGENTS), timeout=60
    )
    time.sleep(WINDOW + 1.5)
    return {agent: mails_to(relay, agent) for agent in AGENTS}


def rows(gateway: Services) -> int:
    with gateway.runtime.unit_of_work() as s:
        return int(s.scalar(select(func.count()).select_from(AgentNotification)) or 0)


# Here the window is what bounds the mails: an hourly limit above what the burst could reach.
@pytest.mark.parametrize("limits", [(WINDOW, 100)])
def test_two_hundred_widget_posts_make_a_few_mails_listing_every_post(gateway, relay, limits):
    running, _clock = gateway
    started = time.monotonic()
    with httpx.Client(base_url=http_url(running), timeout=30) as client:
        visitor = client.post("/widget/api/acme/visitors", json={"name": "Anon"})
        assert visitor.status_code == 201, visitor.text
        auth = {"Authorization": f"Bearer {visitor.json()['visitor_token']}"}
        first = client.post(
            "/widget/api/acme/conversations", json={"text": "bomb 0-0"}, headers=auth
        )
        assert first.status_code == 201, first.text
        token = first.json()["conversation"]
        posted = {"bomb 0-0"}
        for i in range(1, 200):
            answer = client.post(
                f"/widget/api/acme/conversations/{token}/messages", json={"text": f"bomb 0-{i}"}
            )
            assert answer.status_code == 201, answer.text
            posted.add(f"bomb 0-{i}")
    burst = time.monotonic() - started

    for agent, mails in settle(relay, posted).items():
        # A prompt first mail, then at most one per window while the posts went on.
        bound = 2 + math.ceil(burst / WINDOW)
        assert 1 <= len(mails) <= bound, (agent, len(mails), bound, burst)
        seen = listed(mails)
        assert set(seen) == posted and max(seen.values()) == 1  # every post, each once
        # Each mail answers into the conversation: its Reply-To names it.
        assert all(str(m.message["Reply-To"]).startswith("support+") for m in mails)
    with running.runtime.unit_of_work() as s:
        assert s.scalar(select(func.count()).select_from(Message)) == 200
    # One row per mail, not one per post and agent.
    assert rows(running) <= len(AGENTS) * bound


def send_burst(running: Services, senders: int, per_sender: int) -> set[str]:
    posted = set()
    with smtplib.SMTP("127.0.0.1", smtp_port(running), timeout=30) as client:
        for n in range(per_sender):
            for s in range(senders):
                msg = thread_mail(s, n, SUPPORT, f"bomb {s}-{n}\n\nSent from my phone")
                client.send_message(msg, to_addrs=[SUPPORT])
                posted.add(f"bomb {s}-{n}")
    return posted


def test_an_inbound_burst_stays_within_the_hourly_limit_and_nothing_is_lost(gateway, relay):
    """30 senders, 5 mails each: 30 conversations, 150 messages, two agents told of each."""
    running, clock = gateway
    started = time.monotonic()
    posted = send_burst(running, senders=30, per_sender=5)
    burst = time.monotonic() - started

    # Within the hour: at most PER_HOUR mails each; the last one folds in what is over.
    def all_at_limit() -> bool:
        return all(len(mails_to(relay, agent)) >= PER_HOUR for agent in AGENTS)

    wait_for(all_at_limit, timeout=60)
    time.sleep(WINDOW + 1.5)
    for agent in AGENTS:
        mails = mails_to(relay, agent)
        assert len(mails) == PER_HOUR
        # The hour's last one says so (and folds in what is over, if anything already is).
        last = f"the last of the {PER_HOUR} notification emails an hour"
        assert sum(last in body(m) for m in mails) == 1
    # Nobody is lost: the hour after, the rest arrives, again within the limit.
    clock.offset = dt.timedelta(hours=1, seconds=1)
    for mails in settle(relay, posted).values():
        assert PER_HOUR < len(mails) <= 2 * PER_HOUR
        seen = listed(mails)
        assert set(seen) == posted and max(seen.values()) == 1
    # Rows collect events: at most one per agent, conversation and window of the burst, far
    # fewer than the 300 (event, agent) pairs.
    assert rows(running) <= len(AGENTS) * 30 * (1 + math.ceil(burst / WINDOW))
