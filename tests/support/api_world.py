"""Two apps with agents, tokens and conversations, for tests of the HTTP API.

App A is the config's `demo` with an admin and an agent; app B (`other`) has one agent and its
own conversation, so every test can check that A's tokens see nothing of B.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from gateway.api_tokens import issue_token
from tests.support.http import RunningHttp
from tickets import services


@dataclass
class World:
    http: RunningHttp
    admin_a: str  # tokens
    agent_a: str
    agent_b: str
    conv_a: int  # customer dana@example.com, by email
    conv_a2: int  # customer lee@example.org, by chat
    conv_b: int


def build_world(http: RunningHttp) -> World:
    runtime = http.runtime
    now = runtime.clock()
    with runtime.unit_of_work() as s:
        a = services.get_app(s, "demo")
        b = services.ensure_app(s, "other", "Other", now)
        admin = services.add_agent(s, a, "alice@a.example", "Alice", now, role="admin")
        agent = services.add_agent(s, a, "bob@a.example", "Bob", now)
        eve = services.add_agent(s, b, "eve@b.example", "Eve", now, role="admin")
        dana = services.customer_by_address(s, a, "dana@example.com", now, name="Dana")
        lee = services.customer_by_address(s, a, "lee@example.org", now)
        zed = services.customer_by_address(s, b, "zed@example.net", now)
        conv_a, _ = services.start_conversation(
            s, a, dana, "email", "My printer is on fire", now, subject="Printer on fire"
        )
        conv_a2, _ = services.start_conversation(s, a, lee, "chat", "Where is my invoice?", now)
        conv_b, _ = services.start_conversation(s, b, zed, "chat", "Secret of app B", now)
        admin_a, agent_a, agent_b = (issue_token(s, x, "test", now)[1] for x in (admin, agent, eve))
        ids = conv_a.id, conv_a2.id, conv_b.id
    return World(http, admin_a, agent_a, agent_b, *ids)


@pytest.fixture
def world(http_api: RunningHttp) -> World:
    return build_world(http_api)
