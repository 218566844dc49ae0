"""The console's tracker form (gateway/http/console/trackers.py) through the real server: tell
every linked customer with the form's key (a double click posts once), refusals as codes for
fixed sentences on the way back; and the panel the conversation page includes."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import httpx
from starlette.requests import Request

from gateway.http.console.pages import _env
from gateway.http.console.trackers import tracker_panel
from tests.support.api_world import World
from tests.support.browser import screenshot, watch
from tests.support.console import browser_signed_in, csrf, signed_in
from tickets import services
from tickets.models import Conversation


def agent_messages(world: World, conversation_id: int) -> list[str]:
    with world.http.runtime.unit_of_work() as s:
        conversation = s.get(Conversation, conversation_id)
        assert conversation is not None
        return [m.text for m in conversation.messages if m.author_type.value == "agent"]


def make_tracker(world: World) -> int:
    runtime = world.http.runtime
    now = runtime.clock()
    with runtime.unit_of_work() as s:
        app = services.get_app(s, "demo")
        bob = services.find_agent(s, app, "bob@a.example")
        reporter = services.customer_by_address(s, app, "first@example.com", now)
        conversation, _ = services.start_conversation(s, app, reporter, "email", "Login down", now)
        services.convert(s, conversation, bob, now, type="tracker")
        for cid in (world.conv_a, world.conv_a2):
            ticket = services.convert(s, services.get_conversation(s, app, cid), bob, now)
            services.link_to_tracker(s, ticket, conversation.ticket, services.SYSTEM, now)
        return conversation.id


def post(client: httpx.Client, path: str, token: str, **fields: str) -> httpx.Response:
    return client.post(path, data={"csrf": token, **fields})


def test_tell_every_linked_customer_once_per_click(world: World) -> None:
    tracker = make_tracker(world)
    with signed_in(world.http, "bob@a.example") as client:
        token = csrf(client.get("/account").text)
        news = "The login problem is fixed, please try again."
        first = post(client, f"/conversations/{tracker}/tell-linked", token, text=news, key="abc")
        assert first.status_code == 303
        assert urlsplit(first.headers["location"]).query == "told=2.0.0"
        double = post(client, f"/conversations/{tracker}/tell-linked", token, text=news, key="abc")
        assert urlsplit(double.headers["location"]).query == "told=2.0.1"
        assert agent_messages(world, world.conv_a) == [news]
        assert agent_messages(world, world.conv_a2) == [news]
        again = post(client, f"/conversations/{tracker}/tell-linked", token, text="More.", key="d")
        assert urlsplit(again.headers["location"]).query == "told=2.0.0"
        assert agent_messages(world, world.conv_a) == [news, "More."]


def test_refusals_come_back_as_a_code_for_a_sentence(world: World) -> None:
    tracker = make_tracker(world)
    with signed_in(world.http, "bob@a.example") as client:
        token = csrf(client.get("/account").text)
        empty = post(client, f"/conversations/{tracker}/tell-linked", token, text="  ")
        assert urlsplit(empty.headers["location"]).query == "tracker_problem=empty"
        not_tracker = post(client, f"/conversations/{world.conv_a}/tell-linked", token, text="x")
        assert urlsplit(not_tracker.headers["location"]).query == "tracker_problem=not-tracker"
        other_app = post(client, f"/conversations/{world.conv_b}/tell-linked", token, text="x")
        assert other_app.status_code == 404
        forged = client.post(
            f"/conversations/{tracker}/tell-linked", data={"csrf": "nope", "text": "x"}
        )
        assert forged.status_code == 403
    assert agent_messages(world, world.conv_a) == []


def test_the_panel_lists_the_linked_and_previews_the_routes(world: World) -> None:
    tracker = make_tracker(world)
    request = Request({"type": "http", "query_string": b"told=2.0.1", "headers": []})
    with world.http.runtime.unit_of_work() as s:
        conversation = s.get(Conversation, tracker)
        assert conversation is not None
        panel = tracker_panel(s, conversation, request)
        customer = s.get(Conversation, world.conv_a)
        assert customer is not None
        assert tracker_panel(s, customer, request) is None
    viewer = SimpleNamespace(csrf="t0ken")
    html = _env().get_template("_tracker_panel.html").render(viewer=viewer, tracker_panel=panel)
    assert f'href="/conversations/{world.conv_a}"' in html
    assert f'href="/conversations/{world.conv_a2}"' in html
    # Dana has an address (email, once a channel exists: the embedded one does); Lee too.
    assert "Will tell 2 of 2 linked customers: 2 by email" in " ".join(html.split())
    assert "already sent: nothing was posted twice" in html
    assert 'name="key" value="' in html and 'name="csrf" value="t0ken"' in html
    assert _env().get_template("_tracker_panel.html").render(viewer=viewer).strip() == ""


def test_the_tell_form_in_the_browser(world: World, browser: Any) -> None:
    tracker = make_tracker(world)
    page = browser_signed_in(browser, world.http, "bob@a.example")
    problems = watch(page)
    page.goto(f"{world.http.url}/conversations/{tracker}")
    panel = page.locator("#tracker")
    assert "Will tell 2 of 2 linked customers" in " ".join(panel.inner_text().split())
    assert panel.locator(f'a[href="/conversations/{world.conv_a}"]').count() == 1
    page.get_by_label("Message (each customer").fill("The login problem is fixed.")
    page.get_by_role("button", name="Tell every linked customer").click()
    page.wait_for_url(f"**/conversations/{tracker}?told=2.0.0#tracker")
    assert "Told 2 linked customers" in page.locator("#tracker").inner_text()
    screenshot(page, "tracker-told")
    assert agent_messages(world, world.conv_a) == ["The login problem is fixed."]
    assert problems == []


def test_convert_hints_show_on_an_unconverted_conversation(world: World, browser: Any) -> None:
    with world.http.client(world.agent_a) as api:
        reply = {"text": "I'll check with the courier and get back to you tomorrow."}
        assert api.post(f"/api/v1/conversations/{world.conv_a}/replies", json=reply)
    page = browser_signed_in(browser, world.http, "bob@a.example")
    problems = watch(page)
    page.goto(f"{world.http.url}/conversations/{world.conv_a}")
    hints = page.locator(".convert-hints")
    assert "Bob promised something for another day" in hints.inner_text()
    screenshot(page, "conversation-convert-hints")
    assert problems == []
