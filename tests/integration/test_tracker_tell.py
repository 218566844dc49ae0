"""From a tracker, "tell every linked customer" through the real HTTP server, and the email a
linked customer then gets through a real SMTP relay (aiosmtpd): their own thread, the agent's
words, no internal vocabulary."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.api_tokens import issue_token
from tests.integration.test_outbound import deliver_and_send
from tests.support.http import RunningHttp, loopback_config, serving
from tests.support.smtp_sink import SmtpSink
from tickets import services
from tickets.vocabulary import find_internal_words

NEWS = "Good news: the login problem is fixed. Please sign in again and tell us how it goes."


@pytest.fixture
def gateway(tmp_path: Path, relay: SmtpSink) -> Iterator[RunningHttp]:
    base = loopback_config(tmp_path)
    config = base.model_copy(
        update={
            "outbound": base.outbound.model_copy(
                update={"transport": "smtp", "host": relay.host, "port": relay.port}
            ),
            "delivery": base.delivery.model_copy(update={"email_grace_seconds": 0}),
        }
    )
    with serving(config) as running:
        yield running


def test_an_email_customer_gets_the_trackers_news_as_email(
    gateway: RunningHttp, relay: SmtpSink
) -> None:
    runtime = gateway.runtime
    now = runtime.clock()
    with runtime.unit_of_work() as s:
        app = services.get_app(s, "demo")
        bob = services.add_agent(s, app, "bob@a.example", "Bob", now)
        token = issue_token(s, bob, "test", now)[1]
        conversations = []
        for address, text in [
            ("first@example.com", "Login is broken for everyone here"),
            ("dana@example.com", "I cannot log in since this morning"),
            ("gone@example.com", "Login fails"),
        ]:
            customer = services.customer_by_address(s, app, address, now)
            conversation, _ = services.start_conversation(
                s, app, customer, "email", text, now, subject=text
            )
            conversations.append(conversation.id)
        gone = services.find_customer_by_address(s, app, "gone@example.com")
        assert gone is not None
        gone.addresses[0].bounced_at = now
    tracker, dana, bounced = conversations
    with gateway.client(token) as api:
        assert api.post(f"/api/v1/conversations/{tracker}/convert", json={"type": "tracker"})
        for linked in (dana, bounced):
            assert api.post(f"/api/v1/conversations/{linked}/convert", json={}).status_code == 201
            answer = api.put(f"/api/v1/conversations/{linked}/tracker", json={"tracker": tracker})
            assert answer.status_code == 200, answer.text
        told = api.post(
            f"/api/v1/conversations/{tracker}/tell-linked", json={"text": NEWS, "key": "k"}
        )
        assert told.status_code == 200, told.text
        assert told.json() == {
            "told": [{"conversation": dana, "customer": "<dana@example.com>", "route": "email"}],
            "not_told": [
                {
                    "conversation": bounced,
                    "customer": "<gone@example.com>",
                    "reason": "their email address bounced",
                }
            ],
            "repeated": False,
        }
        again = api.post(
            f"/api/v1/conversations/{tracker}/tell-linked", json={"text": NEWS, "key": "k"}
        )
        assert again.json()["repeated"] is True
        refused = api.post(f"/api/v1/conversations/{dana}/tell-linked", json={"text": NEWS})
        assert refused.status_code == 400
        assert "not a tracker" in refused.json()["detail"]
        detail = api.get(f"/api/v1/conversations/{tracker}").json()
        assert detail["notes"][-1]["text"].startswith("Told 1 linked customer.")
        assert "tracker.broadcast" in [e["kind"] for e in detail["events"]]
        dana_events = api.get(f"/api/v1/conversations/{dana}").json()["events"]
        assert [e["data"]["route"] for e in dana_events if e["kind"] == "tracker.told"] == ["email"]

    deliver_and_send(runtime)
    [got] = relay.wait_for(1)
    assert got.rcpt_tos == ["dana@example.com"]
    message = got.message
    body = message.get_body(("plain",)).get_content()
    assert NEWS in body
    assert message["Subject"] == "Re: I cannot log in since this morning"
    written_by_us = "\n".join(
        [str(message["Subject"]), str(message["From"]), body.replace(NEWS, "")]
    )
    assert find_internal_words(written_by_us) == []
    assert "tracker" not in got.raw.decode("utf-8", "replace").lower()
