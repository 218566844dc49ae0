"""The conversation page (`/conversations/{id}`) over the real HTTP server and in a real browser:
the transcript with each message's origin and delivery, notes on the team-only yellow, what
stripping cut and why a mail is threaded here, the reply box reaching the customer by email at a
real relay, convert with the soft warning, every ticket panel action, app scoping and CSRF.
"""

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

from gateway.inbound import process_inbound, store_batch
from gateway.outbound import deliver, send_outbound
from gateway.server import Services, start
from tests.integration.test_scenario import http_url, scenario_config
from tests.support.api_world import World, build_world
from tests.support.browser import SHOTS, screenshot, watch
from tests.support.console import browser_signed_in, csrf, signed_in
from tests.support.http import RunningHttp
from tests.support.smtp_sink import SmtpSink
from tests.support.waiting import wait_for
from tickets import reads, services
from tickets.customer_view import customer_view
from tickets.email_check import SETUP_PATH
from tickets.inbound import IncomingMail
from tickets.models import Conversation, Ticket

NOTE = "Refund approved by finance, do not mention it yet"
DANA_MAIL = """\
From: Dana <dana@example.com>
To: support@localhost
Subject: Re: Printer on fire
Message-ID: <dana-2@example.com>
Date: Thu, 03 Dec 2026 09:00:00 +0000
Content-Type: text/plain; charset=utf-8

It is still smoking, what do I do now?

--
Dana Scully
Head of Printing

On Wed, Dec 2, 2026 at 10:00 AM Demo <support@localhost> wrote:
> Have you tried turning it off and on again?
"""


@pytest.fixture
def world(http_api: RunningHttp) -> World:
    return build_world(http_api)


def _conversation(runtime: Any, cid: int) -> Conversation:
    """A detached copy for assertions (expire_on_commit is off in the runtime's sessions)."""
    with runtime.unit_of_work() as s:
        c = s.get(Conversation, cid)
        assert c is not None
        _ = (c.ticket, c.tags, c.notes, c.messages)
        if c.ticket is not None:
            _ = (c.ticket.assignee, c.ticket.tracker)
        return c


def _mail_in(runtime: Any, raw: str) -> None:
    [row] = store_batch(
        runtime,
        [
            IncomingMail(
                raw=raw.encode(),
                source="smtp",
                envelope_from="dana@example.com",
                envelope_to=("support@localhost",),
                peer="127.0.0.1",
            )
        ],
    )
    process_inbound(runtime, row)


def _reply(runtime: Any, cid: int, text: str) -> int:
    with runtime.unit_of_work() as s:
        c = s.get(Conversation, cid)
        bob = services.find_agent(s, services.get_app(s, "demo"), "bob@a.example")
        return services.add_agent_message(s, c, bob, text, runtime.clock()).id


def test_the_transcript_shows_chat_and_email_with_origin_delivery_cut_text_and_why(world):
    runtime = world.http.runtime
    cid = world.conv_a
    _mail_in(runtime, DANA_MAIL)
    with runtime.unit_of_work() as s:
        c = s.get(Conversation, cid)
        services.add_customer_message(s, c, "Also, the chat: hello!", "chat", runtime.clock())
    sent = _reply(runtime, cid, "Please unplug it and step away.")
    with runtime.unit_of_work() as s:  # the grace period has passed, the customer is away
        c = s.get(Conversation, cid)
        c.email_pending_since = runtime.clock() - dt.timedelta(hours=1)
    outcome = deliver(runtime, cid)
    assert outcome.outbox_id is not None, outcome
    send_outbound(runtime, outcome.outbox_id)  # the file transport: accepted at once
    waiting = _reply(runtime, cid, "Are you safe?")

    client = signed_in(world.http, "bob@a.example")
    page = client.get(f"/conversations/{cid}")
    assert page.status_code == 200
    html = page.text
    # Where each came from: the first email, the mail that threaded in, the chat line.
    assert "Email from dana@example.com" in html
    assert re.search(r'class="origin origin-chat">Chat</span>', html)
    assert "It is still smoking, what do I do now?" in html
    # Ours: delivered by email (to whom), waiting; in transcript order.
    delivered = rf'id="message-{sent}".*?Delivered by email to dana@example.com'
    assert re.search(delivered, html, re.S)
    assert re.search(rf'id="message-{waiting}".*?Waiting: in the chat, emailed', html, re.S)
    assert (
        html.index("It is still smoking")
        < html.index("Also, the chat")
        < html.index("Please unplug it")
        < html.index("Are you safe?")
    )
    # What stripping cut, and why it is here (the lines `gateway explain` prints).
    assert "Show what was cut" in html and "Have you tried turning it off and on again?" in html
    assert "Head of Printing" in html
    assert "Why is this here" in html
    assert "threading rule: same sender and subject" in html
    assert "Received by SMTP from 127.0.0.1" in html
    assert 'data-live="transcript"' in html and 'data-live="panel"' in html
    # Opening the page marks it read for this agent (the Inbox's unread marks), not for others.
    with runtime.unit_of_work() as s:
        bob = services.find_agent(s, services.get_app(s, "demo"), "bob@a.example")
        alice = services.find_agent(s, services.get_app(s, "demo"), "alice@a.example")
        assert reads.unread_ids(s, bob.id, [cid]) == set()
        assert reads.unread_ids(s, alice.id, [cid]) == {cid}


def test_a_bounced_reply_says_so(world):
    runtime = world.http.runtime
    mid = _reply(runtime, world.conv_a, "This one will bounce.")
    with runtime.unit_of_work() as s:
        c = s.get(Conversation, world.conv_a)
        [m] = [m for m in c.messages if m.id == mid]
        m.delivery_state, m.delivery_error = "bounced", "550 5.1.1 no such user"
    html = signed_in(world.http, "bob@a.example").get(f"/conversations/{world.conv_a}").text
    assert re.search(r'delivery tone-bad">.*?Bounced.*?550 5.1.1 no such user', html, re.S)


def test_a_note_is_yellow_team_only_and_never_in_the_customer_view(world, browser):
    page = browser_signed_in(browser, world.http, "bob@a.example")
    problems = watch(page)
    page.goto(f"{world.http.url}/conversations/{world.conv_a2}")
    page.get_by_text("Internal note", exact=True).click()
    composer_bg = page.eval_on_selector("#composer", "e => getComputedStyle(e).backgroundColor")
    assert composer_bg == "rgb(255, 244, 194)"  # the note mode is the team-only yellow
    page.fill("#composer-text", NOTE)
    page.keyboard.press("Control+Enter")
    page.wait_for_url(re.compile(r"done=note"))
    note = page.locator(".entry.is-note .bubble").last
    assert NOTE in note.inner_text() and "team only" in note.inner_text().lower()
    assert note.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(255, 244, 194)"
    screenshot(page, "conversation-with-note")
    assert problems == []

    runtime = world.http.runtime
    with runtime.unit_of_work() as s:
        c = s.get(Conversation, world.conv_a2)
        assert [n.text for n in c.notes] == [NOTE]
        view = customer_view(services.get_app(s, "demo"), c)
        assert NOTE not in repr(view)
        assert all(m.delivery_state is None or m.author_type != "agent" for m in c.messages)
        assert len(c.messages) == 1  # a note is no message: nothing goes to the widget


def test_the_reply_box_is_keyboard_friendly(world, browser):
    page = browser_signed_in(browser, world.http, "bob@a.example")
    page.goto(f"{world.http.url}/conversations/{world.conv_a2}")
    page.focus("#mode-reply")
    page.keyboard.press("ArrowRight")  # radio buttons: arrows switch the mode
    assert page.is_checked("#mode-note")
    assert page.locator("label[for=composer-text]").inner_text().startswith("Your note")
    page.keyboard.press("ArrowLeft")
    assert page.is_checked("#mode-reply")


@pytest.fixture
def served(tmp_path: Path, relay: SmtpSink) -> Iterator[Services]:
    running = start(scenario_config(tmp_path, relay))
    yield running
    running.stop()


def test_a_reply_typed_in_the_page_reaches_the_customer_by_email(served, relay, browser):
    runtime = served.runtime
    with runtime.unit_of_work() as s:
        app = services.get_app(s, "demo")
        services.add_agent(s, app, "bob@a.example", "Bob", runtime.clock())
    mail = EmailMessage()
    mail["From"] = "Dana <dana@example.com>"
    mail["To"] = "support@localhost"
    mail["Subject"] = "Printer on fire"
    mail["Message-ID"] = "<dana-1@example.com>"
    mail.set_content("Hello, my printer is on fire.")
    smtp_port = int(runtime.config.smtp.listen.rpartition(":")[2])
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as smtp:
        smtp.send_message(mail)

    def conversation_id() -> int | None:
        with runtime.unit_of_work() as s:
            return s.scalar(select(Conversation.id))

    cid = wait_for(conversation_id)
    http = RunningHttp(runtime, http_url(served))
    page = browser_signed_in(browser, http, "bob@a.example")
    problems = watch(page)
    page.goto(f"{http.url}/conversations/{cid}")
    answer = "So sorry! Please unplug it, a new one is on its way."
    page.fill("#composer-text", answer)
    page.click("#composer button[type=submit]")
    page.wait_for_url(re.compile(r"done=reply"))

    def to_dana() -> list[Any]:
        return [m for m in relay.messages if m.rcpt_tos == ["dana@example.com"]]

    [got] = wait_for(to_dana)
    assert answer in got.message.get_body(("plain",)).get_content()
    assert got.message["From"].addresses[0].display_name == "Bob from Demo"
    # The page learns of the delivery without a reload (its transcript is a live region).
    page.locator(".delivery", has_text="Delivered by email").wait_for(timeout=30_000)
    screenshot(page, "conversation-email-delivered")
    assert problems == []


def test_convert_shows_the_soft_warning_with_its_link_and_still_converts(world, browser):
    page = browser_signed_in(browser, world.http, "bob@a.example")
    problems = watch(page)
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{world.http.url}/conversations/{world.conv_a2}")
    before = page.locator("#panel .warning")
    assert "Converting still works" in before.inner_text()
    assert before.locator("a").get_attribute("href") == SETUP_PATH
    screenshot(page, "conversation-before-convert")
    page.select_option("#convert-priority", "high")
    page.select_option("#convert-assignee", "bob@a.example")
    page.fill("#convert-category", "billing")
    page.click("#panel form[action$='/convert'] button[type=submit]")
    page.wait_for_url(re.compile(r"done=converted"))
    warning = page.locator(".ticket-card .warning")
    assert "has not passed a test yet" in warning.inner_text()
    assert warning.locator("a").get_attribute("href") == SETUP_PATH
    screenshot(page, "conversation-after-convert")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.locator("#panel").screenshot(path=str(SHOTS / "conversation-warning.png"))
    assert problems == []
    ticket = _conversation(world.http.runtime, world.conv_a2).ticket
    assert ticket is not None and ticket.priority == "high" and ticket.category == "billing"
    assert ticket.assignee.email == "bob@a.example"
    assert ticket.email_check is not None and not ticket.email_check["ok"]


def test_the_warnings_link_leads_an_admin_to_the_channel_setup(world):
    client = signed_in(world.http, "alice@a.example")
    html = client.get(f"/conversations/{world.conv_a2}").text
    assert f'<a href="{SETUP_PATH}">Set up the email channel</a>' in html
    page = client.get(SETUP_PATH, follow_redirects=True)
    assert page.status_code == 200 and page.url.path == "/admin/channels"


def test_each_panel_action_changes_the_ticket(world):
    runtime = world.http.runtime
    client = signed_in(world.http, "bob@a.example")
    cid, base = world.conv_a2, f"/conversations/{world.conv_a2}"
    token = csrf(client.get(base).text)

    def post(action: str, **data: str) -> Conversation:
        r = client.post(f"{base}/{action}", data={"csrf": token, **data})
        assert r.status_code == 303, (action, r.status_code, r.text[:500])
        assert r.headers["location"].startswith(base)
        return _conversation(runtime, cid)

    c = post("convert", type="customer", priority="low")
    assert c.ticket is not None and c.ticket.priority == "low"
    assert post("status", status="in_progress").ticket.status == "in_progress"
    assert post("priority", priority="urgent").ticket.priority == "urgent"
    assert post("category", category="shipping").ticket.category == "shipping"
    assert post("category", category="").ticket.category is None
    assert post("assignee", assignee="alice@a.example").ticket.assignee.email == "alice@a.example"
    assert post("assignee", assignee="").ticket.assignee is None
    assert [t.name for t in post("tags", tag="Refund").tags] == ["refund"]
    assert post("tags/remove", tag="refund").tags == []

    now = runtime.clock()
    c = post("snooze", when="tomorrow 9:00")
    assert c.state == "snoozed" and c.snoozed_until.date() == (now + dt.timedelta(days=1)).date()
    assert c.snoozed_until.astimezone(dt.UTC).hour == 9  # the app's zone: UTC here
    assert post("unsnooze").state == "open"
    c = post("snooze", when="monday 9:00")
    assert c.snoozed_until.weekday() == 0 and c.snoozed_until > now
    post("unsnooze")
    later = (now + dt.timedelta(days=3)).replace(second=0, microsecond=0)
    c = post("snooze", when="custom", until=later.strftime("%Y-%m-%dT%H:%M"))
    assert c.snoozed_until == later
    post("unsnooze")

    c = post("resolve")
    assert c.state == "resolved" and c.ticket.status == "resolved"
    c = post("reopen")
    assert c.state == "open" and c.ticket.status == "open"

    # The tracker it belongs to: conv_a becomes a tracker, conv_a2 is linked, the panel links it.
    tracker_base = f"/conversations/{world.conv_a}"
    r = client.post(f"{tracker_base}/convert", data={"csrf": token, "type": "tracker"})
    assert r.status_code == 303
    c = post("tracker", tracker=str(world.conv_a))
    assert c.ticket.tracker is not None and c.ticket.tracker.conversation_id == world.conv_a
    html = client.get(base).text
    assert f'href="/conversations/{world.conv_a}"' in html
    assert post("tracker", tracker="").ticket.tracker is None


def test_a_refusal_is_a_sentence_on_the_page_and_changes_nothing(world):
    client = signed_in(world.http, "bob@a.example")
    base = f"/conversations/{world.conv_a2}"
    token = csrf(client.get(base).text)
    r = client.post(f"{base}/status", data={"csrf": token, "status": "open"})
    assert r.status_code == 409 and "is not converted" in r.text and "Traceback" not in r.text
    assert 'class="problem banner" role="alert"' in r.text
    r = client.post(f"{base}/snooze", data={"csrf": token, "when": "someday"})
    assert r.status_code == 400 and "Cannot read" in r.text
    r = client.post(f"{base}/messages", data={"csrf": token, "kind": "reply", "text": "x\x00"})
    assert r.status_code == 422 and "NUL" in r.text
    assert "x\x00" not in r.text
    assert _conversation(world.http.runtime, world.conv_a2).ticket is None
    assert len(_conversation(world.http.runtime, world.conv_a2).messages) == 1


def test_another_apps_conversation_is_404(world):
    client = signed_in(world.http, "bob@a.example")
    token = csrf(client.get(f"/conversations/{world.conv_a}").text)
    page = client.get(f"/conversations/{world.conv_b}", headers={"Accept": "text/html"})
    assert page.status_code == 404 and "Secret of app B" not in page.text
    assert client.get("/conversations/999999").status_code == 404
    for action, data in (("messages", {"text": "hi"}), ("convert", {}), ("resolve", {})):
        r = client.post(f"/conversations/{world.conv_b}/{action}", data={"csrf": token, **data})
        assert r.status_code == 404, action
    c = _conversation(world.http.runtime, world.conv_b)
    assert c.ticket is None and len(c.messages) == 1 and c.state == "open"


def test_posts_without_csrf_are_403(world):
    client = signed_in(world.http, "bob@a.example")
    base = f"/conversations/{world.conv_a2}"
    for action, data in (
        ("messages", {"kind": "note", "text": "sneaky"}),
        ("convert", {"type": "customer"}),
        ("resolve", {}),
        ("snooze", {"when": "tomorrow 9:00"}),
    ):
        assert client.post(f"{base}/{action}", data=data).status_code == 403, action
        r = client.post(f"{base}/{action}", data={"csrf": "wrong", **data})
        assert r.status_code == 403, action
    c = _conversation(world.http.runtime, world.conv_a2)
    assert c.ticket is None and c.notes == [] and c.state == "open"
    anonymous = httpx.Client(base_url=world.http.url)
    r = anonymous.get(base)
    assert r.status_code == 303 and r.headers["location"].startswith("/signin")


def test_the_tracker_panel_is_left_to_its_partial(world):
    client = signed_in(world.http, "bob@a.example")
    base = f"/conversations/{world.conv_a}"
    token = csrf(client.get(base).text)
    client.post(f"{base}/convert", data={"csrf": token, "type": "tracker"})
    html = client.get(base).text
    assert "Linked customers" in html
    with world.http.runtime.unit_of_work() as s:
        assert s.scalar(select(Ticket.type).where(Ticket.conversation_id == world.conv_a)) == (
            "tracker"
        )
