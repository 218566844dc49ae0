"""The chat widget's HTTP API over the running server: a visitor chats, sees only their own
conversations, marks them read, gives an email address; nothing of the ticket layer shows."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from tests.support.http import RunningHttp
from tickets import services
from tickets.models import Conversation, Message

pytestmark = pytest.mark.usefixtures("http_api")


def visitor(http: RunningHttp, **body: str) -> str:
    with http.client() as c:
        r = c.post("/widget/api/demo/visitors", json=body)
        assert r.status_code == 201, r.text
        return r.json()["visitor_token"]


def start(http: RunningHttp, token: str, text: str) -> dict:
    with http.client(token) as c:
        r = c.post("/widget/api/demo/conversations", json={"text": text})
        assert r.status_code == 201, r.text
        return r.json()


def reply_as_agent(http: RunningHttp, subject: str, text: str, note: str | None = None) -> None:
    rt = http.runtime
    with rt.unit_of_work() as s:
        app = services.get_app(s, "demo")
        conversation = s.scalar(select(Conversation).where(Conversation.subject == subject))
        try:
            agent = services.find_agent(s, app, "ana@localhost")
        except services.NotFound:
            agent = services.add_agent(s, app, "ana@localhost", "Ana", rt.clock())
        if conversation.ticket is None:
            ticket = services.convert(s, conversation, agent, rt.clock(), priority="urgent")
            ticket.title = "GENERATED TITLE"
        if note:
            services.add_note(s, conversation, agent, note, rt.clock())
        services.add_agent_message(s, conversation, agent, text, rt.clock())


def test_a_visitor_chats_and_sees_the_agents_answer_without_the_ticket_layer(http_api):
    token = visitor(http_api, locale="de-DE")
    data = start(http_api, token, "Mein Paket ist beschädigt angekommen")
    handle = data["conversation"]
    assert data["subject"] == "Mein Paket ist beschädigt angekommen"
    assert [m["author"] for m in data["messages"]] == ["customer"]
    reply_as_agent(http_api, data["subject"], "Wir schicken ein neues.", note="Kulanz, intern")
    with http_api.client() as c:
        r = c.get(f"/widget/api/demo/conversations/{handle}")
        assert r.status_code == 200
        body = r.json()
        assert [m["text"] for m in body["messages"]] == [
            "Mein Paket ist beschädigt angekommen",
            "Wir schicken ein neues.",
        ]
        assert body["messages"][1]["author_name"] == "Ana"
        assert body["unread"] == 1
        raw = r.text.lower()
        for leak in ("ticket", "urgent", "priority", "generated title", "kulanz", "status"):
            assert leak not in raw
        assert c.post(f"/widget/api/demo/conversations/{handle}/read").status_code == 204
        assert c.get(f"/widget/api/demo/conversations/{handle}").json()["unread"] == 0
        r = c.post(f"/widget/api/demo/conversations/{handle}/messages", json={"text": "Danke!"})
        assert r.status_code == 201
        assert r.json()["messages"][-1] == {
            **r.json()["messages"][-1],
            "author": "customer",
            "text": "Danke!",
        }
    with http_api.runtime.unit_of_work() as s:
        conversation = s.scalar(select(Conversation).where(Conversation.subject.like("Mein%")))
        assert conversation.customer.locale == "de-DE"
        assert conversation.customer_last_read_at is not None


def test_a_visitor_reaches_only_their_own_conversations(http_api):
    alice, bob = visitor(http_api), visitor(http_api)
    mine = start(http_api, alice, "Alice here")["conversation"]
    theirs = start(http_api, bob, "Bob here")["conversation"]
    with http_api.client(alice) as c:
        listed = c.get("/widget/api/demo/conversations").json()["conversations"]
        assert [i["conversation"] for i in listed] == [mine]
        assert "Bob" not in json.dumps(listed)
    with http_api.client() as c:
        # A forged or altered handle is a 404, never someone else's conversation.
        flipped = theirs[:-1] + ("a" if theirs[-1] != "a" else "b")
        assert c.get(f"/widget/api/demo/conversations/{flipped}").status_code == 404
        for path in ("", "/read", "/heartbeat"):
            url = f"/widget/api/demo/conversations/{flipped}{path}"
            r = c.get(url) if not path else c.post(url)
            assert r.status_code == 404
        # A valid handle of another app is not found in this one.
        with http_api.runtime.unit_of_work() as s:
            services.ensure_app(s, "other", "Other", http_api.runtime.clock())
        assert c.get(f"/widget/api/other/conversations/{mine}").status_code == 404
        # Without or with a wrong visitor token: no listing, no new conversation.
        assert c.get("/widget/api/demo/conversations").status_code == 401
    with http_api.client("not-a-visitor") as c:
        assert c.get("/widget/api/demo/conversations").status_code == 404
        r = c.post("/widget/api/demo/conversations", json={"text": "x"})
        assert r.status_code == 404


def test_heartbeat_keeps_email_away_and_read_settles_waiting_messages(http_api):
    token = visitor(http_api)
    data = start(http_api, token, "Heartbeat test")
    handle = data["conversation"]
    reply_as_agent(http_api, "Heartbeat test", "Answer one")
    rt = http_api.runtime
    with http_api.client() as c:
        assert c.post(f"/widget/api/demo/conversations/{handle}/heartbeat").status_code == 204
        with rt.unit_of_work() as s:
            conversation = s.scalar(
                select(Conversation).where(Conversation.subject == "Heartbeat test")
            )
            assert conversation.customer.last_seen_at is not None
            assert conversation.email_pending_since is not None  # seen, not yet read
        assert c.post(f"/widget/api/demo/conversations/{handle}/read").status_code == 204
    with rt.unit_of_work() as s:
        conversation = s.scalar(
            select(Conversation).where(Conversation.subject == "Heartbeat test")
        )
        assert conversation.email_pending_since is None
        states = s.scalars(
            select(Message.delivery_state).where(
                Message.conversation_id == conversation.id, Message.author_type == "agent"
            )
        ).all()
        assert states == ["read"]


def test_giving_an_email_address(http_api):
    token = visitor(http_api)
    handle = start(http_api, token, "Reach me later")["conversation"]
    with http_api.client() as c:
        url = f"/widget/api/demo/conversations/{handle}/email"
        bad = c.post(url, json={"email": "not an address"})
        assert bad.status_code == 400 and "valid email" in bad.json()["detail"]
        r = c.post(url, json={"email": "Reach@Example.com"})
        assert r.status_code == 202 and "link" in r.json()["message"]
        data = c.get(f"/widget/api/demo/conversations/{handle}").json()
        # Not known until the mailed link is followed (tests/security/test_visitors.py).
        assert data["email_known"] is False and data["email_pending"] is True
    other = start(http_api, visitor(http_api), "Someone else")["conversation"]
    with http_api.client() as c:
        again = c.post(
            f"/widget/api/demo/conversations/{other}/email", json={"email": "reach@example.com"}
        )
        assert (again.status_code, again.json()) == (r.status_code, r.json())


def test_bad_input_is_a_clear_4xx(http_api):
    token = visitor(http_api)
    with http_api.client(token) as c:
        assert c.post("/widget/api/demo/conversations", json={"text": ""}).status_code == 422
        assert (
            c.post("/widget/api/demo/conversations", json={"text": "x" * 20001}).status_code == 422
        )
        assert c.post("/widget/api/demo/conversations", json={"text": "a\x00b"}).status_code == 422
        r = c.post("/widget/api/demo/conversations", json={"text": "   "})
        assert r.status_code == 400 and "needs text" in r.json()["detail"]
        assert c.post("/widget/api/nope/conversations", json={"text": "hi"}).status_code == 404
        assert c.post("/widget/api/demo/visitors", json={"locale": "<script>"}).status_code == 400


def test_the_demo_page(http_api):
    with http_api.client() as c:
        r = c.get("/widget/demo")
        assert r.status_code == 200
        assert "text/html" in r.headers["content-type"]
        assert "Chat with Demo" in r.text and 'src="/static/widget.js"' in r.text
        assert "/widget/api/" in c.get("/static/widget.js").text
        assert c.get("/widget/nope").status_code == 404
