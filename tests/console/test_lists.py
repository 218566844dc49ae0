"""The Inbox and Tickets tabs (gateway/http/console/lists.py) over a real HTTP server: what
each filter narrows to, a converted conversation under both tabs, nothing of another app,
unread counts per agent, an anonymous browser sent to sign in, and, in a real browser, a
customer's email arriving through the gateway's SMTP server and showing without a reload."""

from __future__ import annotations

import datetime as dt
import re
import smtplib
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from gateway.server import Services
from tests.support.api_world import World
from tests.support.browser import screenshot, watch
from tests.support.console import browser_signed_in, signed_in
from tests.support.gateway_e2e import whole_gateway
from tests.support.http import RunningHttp
from tickets import reads, services
from tickets.models import Agent

ALICE, BOB, EVE = "alice@a.example", "bob@a.example", "eve@b.example"


def listed(html: str) -> list[int]:
    return [int(x) for x in re.findall(r'data-conversation="(\d+)"', html)]


def unread_counts(html: str) -> tuple[int, int]:
    def one(key: str) -> int:
        found = re.search(rf'data-live="{key}">(.*?)</span></span>|data-live="{key}"></span>', html)
        assert found, key
        number = re.search(r'class="count">(\d+)', found.group(0))
        return int(number.group(1)) if number else 0

    return one("unread-inbox"), one("unread-tickets")


def agent(s: Any, email: str) -> Agent:
    return s.scalars(select(Agent).where(Agent.email == email)).one()


def get(client: httpx.Client, path: str, **params: str) -> str:
    r = client.get(path, params=params) if params else client.get(path)
    assert r.status_code == 200, (r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("text/html")
    return r.text


def test_an_anonymous_browser_is_sent_to_sign_in(world: World) -> None:
    with httpx.Client(base_url=world.http.url) as anonymous:
        for path in ("/inbox", "/tickets?state=open"):
            r = anonymous.get(path, headers={"Accept": "text/html"})
            assert r.status_code == 303
            assert r.headers["location"].startswith("/signin?next=/")
            assert "conversation" not in r.text.lower()


def test_converted_is_under_both_tabs_and_another_app_never_shows(world: World) -> None:
    runtime = world.http.runtime
    with runtime.unit_of_work() as s:
        app = services.get_app(s, "demo")
        conv = services.get_conversation(s, app, world.conv_a)
        services.convert(
            s, conv, agent(s, ALICE), runtime.clock(), priority="high", assignee=agent(s, BOB)
        )
    with signed_in(world.http, ALICE) as alice:
        inbox = get(alice, "/inbox")
        assert set(listed(inbox)) == {world.conv_a, world.conv_a2}
        assert "Dana" in inbox and "lee@example.org" in inbox and "Printer on fire" in inbox
        assert f'href="/conversations/{world.conv_a}"' in inbox
        assert "Ticket #" in inbox  # the converted row says so under the Inbox
        tickets = get(alice, "/tickets")
        assert listed(tickets) == [world.conv_a]
        for shown in ("High", "Bob", "Open", "first response"):
            assert shown in tickets
        for page in (inbox, tickets, get(alice, "/inbox", q="Secret")):
            assert world.conv_b not in listed(page)
            assert "Secret of app B" not in page and "zed@example.net" not in page
    with signed_in(world.http, EVE) as eve:
        assert listed(get(eve, "/inbox")) == [world.conv_b]
        assert listed(get(eve, "/tickets")) == []
        # Another app's id in a filter value finds nothing of it either.
        assert listed(get(eve, "/inbox", q="Printer")) == []


@pytest.fixture
def varied(world: World) -> dict[str, int]:
    """Conversations of app demo that differ in one thing each."""
    runtime = world.http.runtime
    now = runtime.clock()
    with runtime.unit_of_work() as s:
        app = services.get_app(s, "demo")
        alice = agent(s, ALICE)
        by = services.Actor.agent(alice)
        a = services.get_conversation(s, app, world.conv_a)  # email, Dana
        a2 = services.get_conversation(s, app, world.conv_a2)  # chat, lee
        services.convert(s, a, alice, now, priority="high", assignee=alice)
        services.add_tag(s, a2, "billing", by, now)
        services.resolve(s, a2, by, now)
        kim = services.customer_by_address(s, app, "kim@example.com", now, name="Kim")
        c3, _ = services.start_conversation(
            s, app, kim, "email", "Refund please", now, subject="Refund for order 77"
        )
        ticket = services.convert(s, c3, alice, now, priority="low")
        services.set_status(s, ticket, "in_progress", by, now)
        return {"a": a.id, "a2": a2.id, "c3": c3.id}


FILTER_CASES = [
    ("inbox", {}, {"a", "a2", "c3"}),
    ("tickets", {}, {"a", "c3"}),
    ("inbox", {"channel": "email"}, {"a", "c3"}),
    ("inbox", {"channel": "chat"}, {"a2"}),
    ("inbox", {"state": "resolved"}, {"a2"}),
    ("inbox", {"state": "open"}, {"a", "c3"}),
    ("tickets", {"status": "in_progress"}, {"c3"}),
    ("tickets", {"status": "open"}, {"a"}),
    ("tickets", {"priority": "high"}, {"a"}),
    ("inbox", {"priority": "urgent"}, set()),
    ("tickets", {"assignee": "me"}, {"a"}),
    ("tickets", {"assignee": "nobody"}, {"c3"}),
    ("tickets", {"assignee": ""}, {"a", "c3"}),
    ("inbox", {"tag": "billing"}, {"a2"}),
    ("inbox", {"tag": "Billing"}, {"a2"}),
    ("tickets", {"tag": "billing"}, set()),
    ("inbox", {"q": "printer"}, {"a"}),
    ("inbox", {"q": "refund"}, {"c3"}),
    ("inbox", {"q": "lee@example.org"}, {"a2"}),
    ("inbox", {"channel": "email", "priority": "low"}, {"c3"}),
]


def test_each_filter_narrows(world: World, varied: dict[str, int]) -> None:
    with signed_in(world.http, ALICE) as alice:
        for tab, params, expected in FILTER_CASES:
            html = get(alice, "/" + tab, **params)
            assert set(listed(html)) == {varied[k] for k in expected}, (tab, params)
            for name, value in params.items():
                if name != "q" and value:  # the form shows what is applied
                    assert re.search(rf'value="{value.lower()}" selected', html), (tab, name)
            if not expected:
                assert "Nothing matches these filters" in html


def test_assignee_me_is_the_viewer(world: World, varied: dict[str, int]) -> None:
    with signed_in(world.http, BOB) as bob:
        assert listed(get(bob, "/tickets", assignee="me")) == []


def test_a_value_the_form_does_not_offer_is_left_out_with_a_note(world: World) -> None:
    with signed_in(world.http, ALICE) as alice:
        html = get(alice, "/inbox", state="weird", channel="fax", page="x")
    assert set(listed(html)) == {world.conv_a, world.conv_a2}
    assert "is not a state this list offers" in html
    assert "is not a channel this list offers" in html


def test_pages_of_fifty(world: World) -> None:
    runtime = world.http.runtime
    start_at = runtime.clock()
    with runtime.unit_of_work() as s:
        app = services.get_app(s, "demo")
        for i in range(55):
            c = services.customer_by_address(s, app, f"c{i}@example.com", start_at)
            services.start_conversation(
                s, app, c, "email", "hello", start_at + dt.timedelta(seconds=i), subject=f"n{i}"
            )
    with signed_in(world.http, ALICE) as alice:
        first = get(alice, "/inbox", channel="email")
        assert len(listed(first)) == 50
        older = re.search(r'href="([^"]+)" rel="next"', first)
        assert older and "channel=email" in older.group(1) and "page=2" in older.group(1)
        second = get(alice, older.group(1).replace("&amp;", "&"))
        assert len(listed(second)) == 6  # 55 + Dana's
        assert not set(listed(first)) & set(listed(second))
        assert 'rel="prev"' in second and 'rel="next"' not in second


def test_unread_counts_follow_customer_messages_and_opening(world: World) -> None:
    runtime = world.http.runtime
    now = runtime.clock()
    with signed_in(world.http, BOB) as bob, signed_in(world.http, ALICE) as alice:
        html = get(bob, "/inbox")
        assert unread_counts(html) == (2, 0)
        assert len(re.findall(r'class="row is-unread"', html)) == 2

        # Bob opens Dana's conversation (as the conversation page does).
        with runtime.unit_of_work() as s:
            reads.mark_read(s, agent(s, BOB).id, world.conv_a, now)
            reads.mark_read(s, agent(s, BOB).id, world.conv_a, now - dt.timedelta(hours=1))
        html = get(bob, "/inbox")
        assert unread_counts(html) == (1, 0)
        unread_rows = re.findall(r'class="row is-unread" data-conversation="(\d+)"', html)
        assert unread_rows == [str(world.conv_a2)]
        assert unread_counts(get(alice, "/inbox")) == (2, 0)  # markers are per agent

        # Dana writes again, and the conversation is converted: unread under both tabs.
        with runtime.unit_of_work() as s:
            app = services.get_app(s, "demo")
            conv = services.get_conversation(s, app, world.conv_a)
            later = now + dt.timedelta(minutes=5)
            services.add_customer_message(s, conv, "Still burning!", "email", later)
            services.convert(s, conv, agent(s, ALICE), later)
        assert unread_counts(get(bob, "/tickets")) == (2, 1)

        # An auto-reply does not count as the customer writing.
        with runtime.unit_of_work() as s:
            reads.mark_read(s, agent(s, BOB).id, world.conv_a, now + dt.timedelta(minutes=6))
            conv = services.get_conversation(s, services.get_app(s, "demo"), world.conv_a)
            services.add_customer_message(
                s, conv, "I am away", "email", now + dt.timedelta(minutes=7), is_auto_reply=True
            )
        assert unread_counts(get(bob, "/tickets")) == (1, 0)


# --- in a real browser, against the whole gateway ---------------------------------------------


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[Services, RunningHttp]]:
    with whole_gateway(tmp_path, BOB, "Bob") as running:
        yield running


def customer_mail(subject: str, body: str, message_id: str, **headers: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Chris Ortega <chris@example.com>"
    msg["To"] = "support@localhost"
    msg["Subject"] = subject
    msg["Message-ID"] = message_id
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg


def test_new_mail_and_replies_appear_in_the_open_inbox_without_a_reload(
    gateway: tuple[Services, RunningHttp], browser: Any
) -> None:
    running, http = gateway
    runtime = running.runtime
    port = int(runtime.config.smtp.listen.rpartition(":")[2])
    page = browser_signed_in(browser, http, BOB)
    problems = watch(page)
    page.goto(f"{http.url}/inbox")
    page.wait_for_selector("text=No conversations yet")
    # Mark the document (a reload would lose the mark) and give the event stream time to
    # connect and take its baseline.
    page.evaluate("window.notReloaded = true")
    page.wait_for_timeout(1500)

    first = "<order-4417@example.com>"
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.send_message(customer_mail("Order 4417 never arrived", "Where is my parcel?", first))

    row = page.locator("tr.row", has_text="Order 4417 never arrived")
    row.wait_for(timeout=30_000)
    assert page.evaluate("window.notReloaded") is True
    assert "Chris Ortega" in row.inner_text()
    assert "is-unread" in (row.get_attribute("class") or "")
    count = page.locator('[data-live="unread-inbox"]')
    count.locator(".count").wait_for(timeout=10_000)
    assert count.inner_text().strip().startswith("1")
    href = row.locator("a.row-link").get_attribute("href") or ""
    assert href.startswith("/conversations/")

    # Bob reads it (as the conversation page does); the next change in the app refreshes the
    # list, and Chris's reply in the same thread makes it unread again with the new text.
    with runtime.unit_of_work() as s:
        bob = s.scalars(select(Agent).where(Agent.email == BOB)).one()
        reads.mark_read(s, bob.id, int(href.rpartition("/")[2]), runtime.clock())
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.send_message(
            customer_mail(
                "Re: Order 4417 never arrived",
                "The tracking page says returned to sender.",
                "<order-4417-2@example.com>",
                In_Reply_To=first,
                References=first,
            )
        )
    row.locator(".preview", has_text="returned to sender").wait_for(timeout=30_000)
    assert "is-unread" in (row.get_attribute("class") or "")
    assert page.locator("tr.row").count() == 1  # the reply joined the conversation
    assert count.inner_text().strip().startswith("1")
    assert page.evaluate("window.notReloaded") is True
    assert problems == []


def test_both_tabs_in_a_browser_with_the_keyboard(
    world: World, varied: dict[str, int], browser: Any
) -> None:
    runtime = world.http.runtime
    now = runtime.clock()
    with runtime.unit_of_work() as s:
        app = services.get_app(s, "demo")
        alice, bob = agent(s, ALICE), agent(s, BOB)
        for i, (name, addr, subject, text, via) in enumerate(
            [
                (
                    "Priya Natarajan",
                    "priya@example.in",
                    "Cannot log in after password reset",
                    "I reset my password twice and the login page still says invalid.",
                    "email",
                ),
                (None, "tom@example.co.uk", "", "Hi! Do you ship to Northern Ireland?", "chat"),
                (
                    "Jonas Berg",
                    "jonas@example.se",
                    "Invoice shows the wrong VAT number",
                    "Our VAT number changed in October; the last invoice has the old one.",
                    "email",
                ),
            ]
        ):
            customer = services.customer_by_address(s, app, addr, now, name=name)
            conv, _ = services.start_conversation(
                s, app, customer, via, text, now + dt.timedelta(minutes=i), subject=subject or None
            )
            if i != 1:
                services.convert(
                    s,
                    conv,
                    alice,
                    now,
                    priority="urgent" if i == 0 else "normal",
                    assignee=bob if i == 0 else None,
                )
        reads.mark_read(s, alice.id, varied["c3"], now + dt.timedelta(hours=1))
    page = browser_signed_in(browser, world.http, ALICE)
    problems = watch(page)
    page.set_viewport_size({"width": 1360, "height": 820})
    page.goto(f"{world.http.url}/inbox")
    assert page.locator("tr.row").count() == 6
    screenshot(page, "inbox")

    # Keyboard only: choose a channel in the filter form and submit it with Enter.
    page.focus("#f-channel")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")  # Any channel -> Chat -> Email
    page.locator("#f-q").focus()
    page.keyboard.press("Enter")
    page.wait_for_url("**/inbox?*channel=email*")
    assert page.locator("tr.row").count() == 4
    assert page.locator("#f-channel").input_value() == "email"

    page.goto(f"{world.http.url}/tickets")
    assert page.locator("tr.row").count() == 4
    screenshot(page, "tickets")
    page.locator("a.row-link").first.focus()
    assert page.evaluate("document.activeElement.getAttribute('href')").startswith(
        "/conversations/"
    )
    assert problems == []
