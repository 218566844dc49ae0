"""The agent API over the running server: listings, a conversation, every team action, auth."""

from __future__ import annotations

import pytest


def test_no_token_or_a_bad_one_is_401(world):
    with world.http.client() as anon:
        r = anon.get("/api/v1/inbox")
        assert r.status_code == 401
        assert "API token" in r.json()["detail"]
    with world.http.client("gwt_not-a-real-token") as bad:
        assert bad.get("/api/v1/inbox").status_code == 401


def test_me(world):
    with world.http.client(world.agent_a) as c:
        assert c.get("/api/v1/me").json() == {
            "id": c.get("/api/v1/me").json()["id"],
            "email": "bob@a.example",
            "name": "Bob",
            "role": "agent",
            "app": "demo",
        }


def test_inbox_lists_the_apps_conversations_with_paging(world):
    with world.http.client(world.agent_a) as c:
        page = c.get("/api/v1/inbox").json()
        assert {i["id"] for i in page["items"]} == {world.conv_a, world.conv_a2}
        assert page["next_offset"] is None
        first = c.get("/api/v1/inbox", params={"limit": 1}).json()
        assert len(first["items"]) == 1 and first["next_offset"] == 1
        second = c.get("/api/v1/inbox", params={"limit": 1, "offset": 1}).json()
        assert second["next_offset"] is None
        assert {first["items"][0]["id"], second["items"][0]["id"]} == {
            world.conv_a,
            world.conv_a2,
        }


def test_convert_lists_under_tickets_and_inbox_and_filters(world):
    with world.http.client(world.agent_a) as c:
        assert c.get("/api/v1/tickets").json()["items"] == []
        r = c.post(
            f"/api/v1/conversations/{world.conv_a}/convert",
            json={"priority": "high", "assignee": "alice@a.example", "category": "hardware"},
        )
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["ticket"]["priority"] == "high"
        assert body["ticket"]["assignee"] == "alice@a.example"
        # No channel has passed a test yet: the answer says so and links to the setup page.
        assert "has not passed a test yet" in body["warning"]
        assert body["warning"].endswith("/admin/channels/email/setup)")
        assert body["ticket"]["email_check"]["ok"] is False
        tickets = c.get("/api/v1/tickets").json()["items"]
        assert [t["id"] for t in tickets] == [world.conv_a]
        assert world.conv_a in {i["id"] for i in c.get("/api/v1/inbox").json()["items"]}
        for params, expected in [
            ({"priority": "high"}, [world.conv_a]),
            ({"priority": "low"}, []),
            ({"assignee": "alice@a.example"}, [world.conv_a]),
            ({"assignee": "nobody@a.example"}, []),
            ({"unassigned": True}, []),
            ({"category": "hardware"}, [world.conv_a]),
            ({"status": "open"}, [world.conv_a]),
            ({"type": "tracker"}, []),
        ]:
            items = c.get("/api/v1/tickets", params=params).json()["items"]
            assert [i["id"] for i in items] == expected, params
        again = c.post(f"/api/v1/conversations/{world.conv_a}/convert", json={})
        assert again.status_code == 409
        assert "already converted" in again.json()["detail"]


def test_bad_filter_values_are_422_with_the_reason(world):
    with world.http.client(world.agent_a) as c:
        r = c.get("/api/v1/tickets", params={"priority": "extreme"})
        assert r.status_code == 422
        assert "priority" in r.text
        assert c.get("/api/v1/inbox", params={"limit": 0}).status_code == 422


def test_conversation_shows_messages_notes_and_ticket(world):
    with world.http.client(world.agent_a) as c:
        reply = c.post(f"/api/v1/conversations/{world.conv_a}/replies", json={"text": "On it!"})
        assert reply.status_code == 201
        note = c.post(f"/api/v1/conversations/{world.conv_a}/notes", json={"text": "call them"})
        assert note.status_code == 201 and note.json()["author"] == "bob@a.example"
        conv = c.get(f"/api/v1/conversations/{world.conv_a}").json()
    assert [m["author_type"] for m in conv["messages"]] == ["customer", "agent"]
    assert conv["messages"][1]["text"] == "On it!"
    assert [n["text"] for n in conv["notes"]] == ["call them"]
    assert conv["ticket"] is None
    assert conv["customer"]["email"] == "dana@example.com"
    assert {e["kind"] for e in conv["events"]} >= {"message.agent", "note.added"}


def test_empty_reply_is_400_or_422(world):
    with world.http.client(world.agent_a) as c:
        assert c.post(f"/api/v1/conversations/{world.conv_a}/replies", json={}).status_code == 422
        r = c.post(f"/api/v1/conversations/{world.conv_a}/replies", json={"text": "   "})
        assert r.status_code == 400
        assert r.json()["detail"] == "a reply needs text"
        nul = c.post(f"/api/v1/conversations/{world.conv_a}/notes", json={"text": "a\x00b"})
        assert nul.status_code == 422


def test_ticket_actions(world):
    url = f"/api/v1/conversations/{world.conv_a}"
    with world.http.client(world.agent_a) as c:
        not_yet = c.put(f"{url}/priority", json={"priority": "urgent"})
        assert not_yet.status_code == 409 and "not converted" in not_yet.json()["detail"]
        c.post(f"{url}/convert", json={}).raise_for_status()
        t = c.put(f"{url}/assignee", json={"assignee": "bob@a.example"}).json()["ticket"]
        assert t["assignee"] == "bob@a.example"
        unassigned = c.put(f"{url}/assignee", json={"assignee": None}).json()
        assert unassigned["ticket"]["assignee"] is None
        missing = c.put(f"{url}/assignee", json={"assignee": "eve@b.example"})
        assert missing.status_code == 404  # an agent of app B does not exist for app A
        assert (
            c.put(f"{url}/status", json={"status": "in_progress"}).json()["ticket"]["status"]
            == "in_progress"
        )
        assert (
            c.put(f"{url}/priority", json={"priority": "urgent"}).json()["ticket"]["priority"]
            == "urgent"
        )
        assert (
            c.put(f"{url}/category", json={"category": "billing"}).json()["ticket"]["category"]
            == "billing"
        )
        assert c.post(f"{url}/tags", json={"tag": "VIP"}).json()["tags"] == ["vip"]
        bad_tag = c.post(f"{url}/tags", json={"tag": "two words"})
        assert bad_tag.status_code == 400 and "not a tag" in bad_tag.json()["detail"]
        tagged = c.get("/api/v1/inbox", params={"tag": "vip"}).json()["items"]
        assert [i["id"] for i in tagged] == [world.conv_a]
        assert c.delete(f"{url}/tags/vip").json()["tags"] == []
        snoozed = c.post(f"{url}/snooze", json={"duration": "2d"}).json()
        assert snoozed["state"] == "snoozed" and snoozed["snoozed_until"]
        past = c.post(f"{url}/snooze", json={"until": "2001-01-01T00:00:00Z"})
        assert past.status_code == 400 and "future" in past.json()["detail"]
        both = c.post(f"{url}/snooze", json={"until": "2099-01-01T00:00:00", "duration": "1h"})
        assert both.status_code == 400
        resolved = c.post(f"{url}/resolve").json()
        assert resolved["state"] == "resolved" and resolved["ticket"]["status"] == "resolved"
        reopened = c.put(f"{url}/status", json={"status": "open"}).json()
        assert reopened["state"] == "open"


def test_link_to_tracker(world):
    with world.http.client(world.agent_a) as c:
        c.post(f"/api/v1/conversations/{world.conv_a}/convert", json={}).raise_for_status()
        c.post(
            f"/api/v1/conversations/{world.conv_a2}/convert", json={"type": "tracker"}
        ).raise_for_status()
        r = c.put(f"/api/v1/conversations/{world.conv_a}/tracker", json={"tracker": world.conv_a2})
        assert r.status_code == 200, r.text
        assert r.json()["ticket"]["tracker"] == world.conv_a2
        wrong = c.put(
            f"/api/v1/conversations/{world.conv_a2}/tracker", json={"tracker": world.conv_a}
        )
        assert wrong.status_code == 400
        foreign = c.put(
            f"/api/v1/conversations/{world.conv_a}/tracker", json={"tracker": world.conv_b}
        )
        assert foreign.status_code == 404
        unlinked = c.put(f"/api/v1/conversations/{world.conv_a}/tracker", json={"tracker": None})
        assert unlinked.json()["ticket"]["tracker"] is None


def test_search_by_customer_and_text(world):
    with world.http.client(world.agent_a) as c:
        by_customer = c.get("/api/v1/search", params={"customer": "LEE@example.org"}).json()
        assert [i["id"] for i in by_customer["items"]] == [world.conv_a2]
        by_text = c.get("/api/v1/search", params={"q": "printer"}).json()
        assert [i["id"] for i in by_text["items"]] == [world.conv_a]
        assert c.get("/api/v1/search", params={"q": "secret of app b"}).json()["items"] == []
        r = c.get("/api/v1/search")
        assert r.status_code == 400 and "customer address or a text" in r.json()["detail"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "", None),
        ("POST", "/convert", {}),
        ("POST", "/replies", {"text": "hi"}),
        ("POST", "/notes", {"text": "hi"}),
        ("PUT", "/assignee", {"assignee": None}),
        ("PUT", "/status", {"status": "open"}),
        ("PUT", "/priority", {"priority": "low"}),
        ("PUT", "/category", {"category": None}),
        ("POST", "/tags", {"tag": "x"}),
        ("DELETE", "/tags/x", None),
        ("POST", "/snooze", {"duration": "1h"}),
        ("POST", "/resolve", None),
        ("PUT", "/tracker", {"tracker": None}),
    ],
)
def test_app_a_cannot_reach_app_b_by_id(world, method, path, body):
    with world.http.client(world.admin_a) as c:
        r = c.request(method, f"/api/v1/conversations/{world.conv_b}{path}", json=body)
        assert r.status_code == 404, r.text
        assert r.json()["detail"] == f"no conversation {world.conv_b}"
        # ... exactly like an id that does not exist at all
        ghost = c.request(method, f"/api/v1/conversations/999999{path}", json=body)
        assert ghost.status_code == 404
    with world.http.client(world.agent_b) as b:
        conv = b.get(f"/api/v1/conversations/{world.conv_b}").json()
        assert conv["messages"][0]["text"] == "Secret of app B"  # untouched by A's attempts
        assert conv["notes"] == [] and conv["ticket"] is None and conv["state"] == "open"


def test_app_b_lists_only_its_own(world):
    with world.http.client(world.agent_b) as b:
        assert [i["id"] for i in b.get("/api/v1/inbox").json()["items"]] == [world.conv_b]
        assert (
            b.get("/api/v1/search", params={"customer": "dana@example.com"}).json()["items"] == []
        )
