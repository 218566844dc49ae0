"""Stored XSS in the console: what customers, mail and admins type, shown to agents.

Customer names, subjects, message text, HTML bodies, attachment file names (plain and RFC 2047
/ RFC 2231 encoded) arrive by real SMTP and by the widget API; tag, channel and agent names
through the console's own forms. Then Chromium opens the lists, every conversation and the
admin pages as an admin: no dialog opens, the flag each payload would set stays unset, the
page reports no CSP violation or error, no element carries an event handler or a javascript:
link, and the payloads are there as text.
"""

from __future__ import annotations

import base64
import smtplib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from gateway.server import Services
from tests.support.browser import screenshot, watch
from tests.support.console import browser_signed_in, csrf, signed_in
from tests.support.gateway_e2e import whole_gateway
from tests.support.http import RunningHttp
from tickets.models import Agent, Conversation

ALICE = "alice@localhost"
SCRIPT = "<script>window.xssed=1;alert(1)</script>"
IMG = '"><img src=x onerror="window.xssed=2;alert(2)">'
JS = "javascript:window.xssed=3;alert(3)"
SVG = "<svg/onload=window.xssed=4;alert(4)>"
TAGS = ('"><svg/onload=window.xssed=10;alert(10)>', "<script>window.xssed=11</script>")  # one word


def encoded(text: str) -> str:
    return "=?utf-8?b?" + base64.b64encode(text.encode()).decode() + "?="


def raw_mails() -> list[bytes]:
    """A multipart mail with payloads in every part, and an HTML-only one, RFC 2047 headers."""
    quoted = IMG.replace('"', '\\"')  # a quoted-string display name
    plain = f"""From: "{quoted}" <mallory@example.com>
To: support@localhost
Subject: {SCRIPT} printer
Message-ID: <xss-1@example.com>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="b1"

--b1
Content-Type: multipart/alternative; boundary="b2"

--b2
Content-Type: text/plain; charset=utf-8

Hello {SCRIPT} and {IMG} and {SVG} see {JS}
--b2
Content-Type: text/html; charset=utf-8

<p>Hello</p><script>window.xssed=5;alert(5)</script><img src=x onerror="window.xssed=6">
<a href="{JS}">click me</a><iframe src="{JS}"></iframe>
--b2--
--b1
Content-Type: application/pdf
Content-Disposition: attachment; filename="{IMG.replace('"', "'")}.pdf"
Content-Transfer-Encoding: base64

JVBERi0xLjQK
--b1
Content-Type: text/plain
Content-Disposition: attachment; filename*=utf-8''%3Cscript%3Ewindow.xssed%3D7%3C%2Fscript%3E.txt

hello
--b1--
"""
    html_only = f"""From: {encoded(SCRIPT)} <trudy@example.com>
To: support@localhost
Subject: {encoded(IMG + " encoded")}
Message-ID: <xss-2@example.com>
MIME-Version: 1.0
Content-Type: text/html; charset=utf-8

<html><body onload="window.xssed=8"><p>Hi {SVG.replace("<", "&lt;")}</p>
<script>window.xssed=9;alert(9)</script><a href="{JS}">{SCRIPT.replace("<", "&lt;")}</a>
</body></html>
"""
    return [m.replace("\n", "\r\n").encode() for m in (plain, html_only)]


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[Services, RunningHttp]]:
    with whole_gateway(tmp_path, ALICE, "Alice", role="admin") as running:
        yield running


def conversations(http: RunningHttp) -> list[int]:
    with http.runtime.reading() as s:
        return list(s.scalars(select(Conversation.id).order_by(Conversation.id)))


def arrive(running: Services, http: RunningHttp) -> list[str]:
    """Everything with a payload, by SMTP, the widget API and the console's forms; the pages
    that show them (the conversations and the new channel's)."""
    port = int(running.runtime.config.smtp.listen.rpartition(":")[2])
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        for mail in raw_mails():
            client.sendmail("mallory@example.com", ["support@localhost"], mail)
    api = httpx.Client(base_url=http.url, timeout=30)
    visitor = api.post("/widget/api/demo/visitors", json={"name": IMG})
    assert visitor.status_code == 201
    bearer = {"Authorization": f"Bearer {visitor.json()['visitor_token']}"}
    chat = api.post(
        "/widget/api/demo/conversations", json={"text": f"{SCRIPT} {JS} {SVG}"}, headers=bearer
    )
    assert chat.status_code == 201
    deadline = time.monotonic() + 30
    while len(conversations(http)) < 3:
        assert time.monotonic() < deadline, "the mails did not arrive"
        time.sleep(0.2)
    ids = conversations(http)

    alice = signed_in(http, ALICE)
    token = csrf(alice.get("/account").text)
    for conversation_id in ids:
        page = f"/conversations/{conversation_id}"
        assert alice.post(f"{page}/convert", data={"csrf": token}).status_code == 303
        for tag in TAGS:
            assert alice.post(f"{page}/tags", data={"csrf": token, "tag": tag}).status_code == 303
        note = {"csrf": token, "kind": "note", "text": f"{SCRIPT} {JS}"}
        assert alice.post(f"{page}/messages", data=note).status_code == 303
    channel = {"csrf": token, "name": SCRIPT, "addresses": "xss@localhost"}
    added = alice.post("/admin/channels", data=channel)
    assert added.status_code == 303, added.text
    invite = {"csrf": token, "email": "new@localhost", "name": IMG, "role": "agent"}
    assert alice.post("/admin/agents", data=invite).status_code == 303
    return [*(f"/conversations/{c}" for c in ids), added.headers["location"].split("?")[0]]


# In the page: what a payload that ran, or markup that let one in, would leave behind.
INJECTED = """() => {
  const all = [...document.querySelectorAll('*')];
  return {
    flag: window.xssed === undefined ? null : window.xssed,
    handlers: all.filter(e => [...e.attributes].some(a => a.name.startsWith('on')))
                 .map(e => e.outerHTML.slice(0, 80)),
    jsLinks: [...document.querySelectorAll('[href],[src],[action]')]
                 .filter(e => /^\\s*javascript:/i.test(e.getAttribute('href') ||
                              e.getAttribute('src') || e.getAttribute('action')))
                 .map(e => e.outerHTML.slice(0, 80)),
    scripts: [...document.scripts].map(s => s.getAttribute('src'))
                 .filter(src => !src || !src.startsWith('/static/')),
    frames: document.querySelectorAll('iframe, object, embed, svg').length,
    text: document.body.innerText,
  };
}"""


def test_payloads_from_customers_mail_and_forms_are_shown_as_text(
    gateway: tuple[Services, RunningHttp], browser: Any
) -> None:
    running, http = gateway
    shown = arrive(running, http)
    with http.runtime.reading() as s:
        assert s.scalar(select(func.count()).select_from(Agent).where(Agent.name == IMG)) == 1
    pages = ["/inbox", "/tickets", "/admin/channels", "/admin/agents", *shown]
    page = browser_signed_in(browser, http, ALICE)
    dialogs: list[str] = []

    def dialog(d: Any) -> None:
        dialogs.append(d.message)
        d.dismiss()

    page.on("dialog", dialog)
    problems = watch(page)
    seen = ""
    for path in pages:
        page.goto(http.url + path)
        page.wait_for_load_state("load")
        page.wait_for_timeout(300)  # an onerror of a broken image would have fired by now
        found = page.evaluate(INJECTED)
        assert found["flag"] is None, (path, found["flag"])
        assert found["handlers"] == [] and found["jsLinks"] == [], (path, found)
        assert found["scripts"] == [] and found["frames"] == 0, (path, found)
        seen += found["text"]
        screenshot(page, "xss" + path.replace("/", "-"))
    assert dialogs == []
    assert problems == []
    # What was written is on the pages, as text.
    for payload in (SCRIPT, IMG, JS, SVG, *TAGS, f"{SCRIPT} printer", IMG + " encoded"):
        assert payload in seen, payload
