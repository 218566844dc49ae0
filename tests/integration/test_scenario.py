"""The whole story through real servers: a customer chats in the widget (HTTP), an agent
converts, notes and answers through the agent API while the customer is away, the email reaches
a real relay (aiosmtpd), the customer answers it by SMTP to its Reply-To, the answer lands in the
same conversation, and the widget then shows all of it. Everything the customer received, mail
and widget payloads alike, is scanned for the ticket layer."""

from __future__ import annotations

import json
import re
import smtplib
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest

from gateway.api_tokens import issue_token
from gateway.config import GatewayConfig, embedded_default
from gateway.server import Services, start
from tests.support.smtp_sink import SmtpSink, free_port
from tests.support.waiting import wait_for
from tickets import services
from tickets.vocabulary import find_internal_words

NOTE = "Finance approved a goodwill refund, keep it quiet for now"
TITLE = "Damaged lamp, refund case"


def scenario_config(tmp_path: Path, relay: SmtpSink) -> GatewayConfig:
    base = embedded_default()
    return base.model_copy(
        update={
            "database_url": f"sqlite:///{tmp_path / 'gw.db'}",
            "data_dir": str(tmp_path),
            "sweep_seconds": 0.3,
            "worker_threads": 2,
            "smtp": base.smtp.model_copy(update={"listen": f"127.0.0.1:{free_port()}"}),
            "http": base.http.model_copy(
                update={"listen": "127.0.0.1:0", "public_url": "https://help.example"}
            ),
            "delivery": base.delivery.model_copy(
                update={"email_grace_seconds": 1, "widget_online_seconds": 1}
            ),
            "outbound": base.outbound.model_copy(
                update={"transport": "smtp", "host": relay.host, "port": relay.port}
            ),
        }
    )


@pytest.fixture
def gateway(tmp_path: Path, relay: SmtpSink) -> Iterator[Services]:
    running = start(scenario_config(tmp_path, relay))
    yield running
    running.stop()


def http_url(running: Services) -> str:
    [line] = [x for x in running.listening if x.startswith("http: ")]
    return line.removeprefix("http: ")


class Customer:
    """The customer's side: everything they receive is kept, to be scanned at the end."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url + "/widget/api/demo", timeout=30)
        self.received: list[str] = []
        self.conversation = ""

    def call(self, method: str, path: str, **kw) -> httpx.Response:
        r = self.http.request(method, path, **kw)
        assert r.status_code < 300, r.text
        self.received.append(r.text)
        return r


def test_chat_then_email_then_chat_again_without_a_trace_of_the_ticket_layer(gateway, relay):
    base = http_url(gateway)
    customer = Customer(base)
    visitor = customer.call("POST", "/visitors", json={"locale": "en-GB"}).json()["visitor_token"]
    auth = {"Authorization": f"Bearer {visitor}"}
    first = "Hello, the lamp I ordered arrived with a cracked shade. What can you do?"
    started = customer.call("POST", "/conversations", json={"text": first}, headers=auth).json()
    customer.conversation = started["conversation"]
    path = f"/conversations/{customer.conversation}"
    customer.call("POST", f"{path}/email", json={"email": "chris@example.com"})
    # The address counts once Chris follows the link mailed to it, and confirms.
    [confirmation] = wait_for(
        lambda: [m for m in relay.messages if m.rcpt_tos == ["chris@example.com"]]
    )
    body = confirmation.message.get_body(("plain",)).get_content()
    customer.received.append(body)
    secret = re.search(r"/widget/demo/confirm\?t=([\w-]+)", body).group(1)
    confirmed = customer.http.post(
        base + "/widget/demo/confirm",
        data={"t": secret, "v": visitor},  # the same browser (its script adds its token)
        follow_redirects=False,
    )
    assert confirmed.status_code == 303
    customer.conversation = confirmed.headers["location"].partition("?c=")[2]
    path = f"/conversations/{customer.conversation}"
    customer.call("POST", f"{path}/read")
    # The customer closes the tab: no more heartbeats from here on.

    rt = gateway.runtime
    with rt.unit_of_work() as s:
        app = services.get_app(s, "demo")
        agent = services.add_agent(s, app, "ana@help.example", "Ana", rt.clock())
        _, api_token = issue_token(s, agent, "scenario", rt.clock())
    team = httpx.Client(
        base_url=base + "/api/v1", headers={"Authorization": f"Bearer {api_token}"}, timeout=30
    )
    [item] = team.get("/inbox").json()["items"]
    cid = item["id"]
    converted = team.post(
        f"/conversations/{cid}/convert",
        json={"priority": "urgent", "assignee": "ana@help.example"},
    )
    assert converted.status_code == 201, converted.text
    number = converted.json()["ticket"]["number"]
    with rt.unit_of_work() as s:
        services.get_conversation(s, services.get_app(s, "demo"), cid).ticket.title = TITLE
    assert team.post(f"/conversations/{cid}/notes", json={"text": NOTE}).status_code == 201
    answer = "So sorry about that! A new shade is on its way, it should arrive on Friday."
    assert team.post(f"/conversations/{cid}/replies", json={"text": answer}).status_code == 201

    # Away from the widget: after the grace period the answer arrives by email.
    def to_customer():
        return [m for m in relay.messages if m.rcpt_tos == ["chris@example.com"]][1:]

    [mail] = wait_for(to_customer)
    msg = mail.message
    assert mail.rcpt_tos == ["chris@example.com"]
    assert msg["From"].addresses[0].display_name == "Ana from Demo"
    assert msg["Subject"].strip() == f"Re: {first}"  # (folded: a leading space is legal)
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert answer in text and answer in html and first in text
    assert f"https://help.example/widget/demo?c={customer.conversation}" in text

    # The customer answers from their mail client, to the Reply-To, quoting the email.
    reply = EmailMessage()
    reply["From"] = "Chris <chris@example.com>"
    reply["To"] = str(msg["Reply-To"])
    reply["Subject"] = f"Re: {msg['Subject'].strip()}"
    reply["Message-ID"] = "<chris-reply-1@example.com>"
    reply["In-Reply-To"] = msg["Message-ID"]
    reply["References"] = msg["Message-ID"]
    quoted = "\n".join("> " + line for line in text.splitlines())
    reply.set_content(
        "Thank you, Friday is fine. I'm home all day.\n\n"
        "On Mon, Nov 24, 2026 at 10:02 AM Ana from Demo <support@localhost> wrote:\n"
        f"{quoted}\n"
    )
    smtp_port = int(rt.config.smtp.listen.rpartition(":")[2])
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as smtp:
        smtp.send_message(reply, to_addrs=[msg["Reply-To"].addresses[0].addr_spec])

    # It lands in the same conversation, and the widget shows all of it.
    def three_messages() -> dict | None:
        data = customer.call("GET", path).json()
        return data if len(data["messages"]) == 3 else None

    data = wait_for(three_messages)
    assert [m["author"] for m in data["messages"]] == ["customer", "team", "customer"]
    assert data["messages"][1]["text"] == answer
    assert data["messages"][2]["text"].strip() == "Thank you, Friday is fine. I'm home all day."
    assert data["messages"][2]["via"] == "email"
    listed = customer.call("GET", "/conversations", headers=auth).json()["conversations"]
    assert [c["conversation"] for c in listed] == [customer.conversation]
    team_view = team.get(f"/conversations/{cid}").json()
    assert len(team_view["messages"]) == 3 and team_view["messages"][1]["delivery_state"] == "sent"

    # The team was told by email too (issue 6's notifications), never the customer.
    assert all(
        m.rcpt_tos != ["chris@example.com"] or m in (confirmation, mail) for m in relay.messages
    )
    # Every byte the customer received: decoded headers and bodies of every mail, every payload.
    received = list(customer.received)
    for got in [confirmation, *to_customer()]:
        m = got.message
        received += [f"{k}: {v}" for k, v in m.items()]
        received.append(m.get_body(("plain",)).get_content())
        received.append(re.sub(r"<[^>]*>", " ", m.get_body(("html",)).get_content()))
    everything = "\n".join(received)
    assert NOTE not in everything and TITLE not in everything
    assert "urgent" not in everything.lower()
    assert not re.search(rf"#\s*{number}(?!\d)", everything)
    assert not re.search(r"(?i)\b(ticket|tickets|priority|sla|status|assignee)\b", everything)
    # And the guard itself, on all of it (the customer's own words here are harmless).
    assert find_internal_words(everything) == []
    assert json.loads(customer.received[-1])  # the widget spoke JSON throughout
