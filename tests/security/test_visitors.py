"""Attacks of anonymous widget visitors, replayed through the real HTTP server (and real mail).

- A visitor who gives someone else's address gets nothing of theirs: mail the owner writes
  (SMTP, then the gateway's own processing) stays on the owner's record, the visitor's chat is
  never emailed there, and the visitor cannot post as the owner. The answer is the same for a
  known and an unknown address. The address counts once the link mailed to it is followed, and
  then the conversation moves to the owner, never the owner's history to the visitor.
- Every HTML page the gateway serves carries a Content-Security-Policy without inline script,
  frame-ancestors (the app's own list for the widget page), nosniff, no-referrer and no-store.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import smtplib
import time
from collections.abc import Iterator
from email import message_from_bytes
from email import policy as email_policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import select

from channels.email.confirm import CONFIRM_TEMPLATE
from channels.email.render import EmailContent, EmailTemplates, render_checked
from gateway.config import embedded_default
from gateway.http.app import create_app
from gateway.runtime import Runtime
from gateway.server import Services, start
from tests.support.http import RunningHttp, loopback_config, running_http
from tests.support.smtp_sink import Received, SmtpSink
from tests.support.waiting import wait_for
from tickets import services
from tickets.customer_view import CustomerView
from tickets.errors import NotFound
from tickets.models import AddressClaim, Conversation, Message, Outbox
from tickets.vocabulary import find_internal_words

TOKEN_QUERY = "?c=" + "a" * 40


def html_routes(http: RunningHttp) -> list[str]:
    """Every GET route the app answers with HTML (as its OpenAPI says), parameters filled in."""
    paths = []
    for path, operations in create_app(http.runtime).openapi()["paths"].items():
        ok = operations.get("get", {}).get("responses", {}).get("200", {})
        if "text/html" in ok.get("content", {}):
            paths.append(re.sub(r"\{[a-z_]+\}", "demo", path))
    return paths


def csp_directives(response: httpx.Response) -> dict[str, str]:
    policy = response.headers.get("content-security-policy", "")
    pairs = (d.strip().partition(" ") for d in policy.split(";") if d.strip())
    return {name: value.strip() for name, _, value in pairs}


def assert_safe_page(response: httpx.Response, *, ancestors: str = "'none'") -> None:
    where = f"{response.request.method} {response.request.url.path}"
    csp = csp_directives(response)
    assert csp, f"{where}: no Content-Security-Policy"
    script = csp.get("script-src", csp.get("default-src", ""))
    assert script and "'unsafe-inline'" not in script and "'unsafe-eval'" not in script, where
    assert "'unsafe-inline'" not in csp.get("style-src", csp.get("default-src", "")), where
    assert csp.get("frame-ancestors") == ancestors, (where, csp.get("frame-ancestors"))
    assert csp.get("base-uri") == "'none'", where
    assert response.headers.get("x-content-type-options") == "nosniff", where
    assert response.headers.get("referrer-policy") == "no-referrer", where
    assert "no-store" in response.headers.get("cache-control", ""), where
    if "text/html" in response.headers.get("content-type", ""):
        # The policy is only worth something if the page needs no inline script or style.
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", response.text), where
        assert "<style" not in response.text and " style=" not in response.text, where
        assert not re.search(r"\son[a-z]+=", response.text), where


def test_every_html_page_carries_the_security_headers(http_api: RunningHttp) -> None:
    paths = html_routes(http_api)
    assert "/widget/demo" in paths
    with http_api.client() as c:
        for path in paths:
            for url in (path, path + TOKEN_QUERY):
                r = c.get(url)
                # The confirmation page without a live link says so, as a 404 page.
                assert r.status_code == (404 if "/confirm" in path else 200), (url, r.status_code)
                assert_safe_page(r, ancestors="'self'" if path == "/widget/demo" else "'none'")
        # Error answers too: an unknown app's widget page, an unknown path.
        for url in ("/widget/nope" + TOKEN_QUERY, "/no/such/page"):
            r = c.get(url)
            assert r.status_code == 404
            assert_safe_page(r)


def test_the_pages_assets_are_served_by_the_gateway_itself(http_api: RunningHttp) -> None:
    with http_api.client() as c:
        page = c.get("/widget/demo")
        found = re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', page.text)
        sources = [s for s in found if s != "data:,"]  # the empty favicon: no request at all
        assert any(s.endswith(".js") for s in sources) and any(s.endswith(".css") for s in sources)
        for src in sources:
            assert src.startswith("/static/"), src  # same origin: 'self' in the policy
            asset = c.get(src)
            assert asset.status_code == 200, src
            assert asset.headers["x-content-type-options"] == "nosniff"
            kind = "javascript" if src.endswith(".js") else "css"
            assert kind in asset.headers["content-type"], src
        for probe in ("/static/../gateway/config.py", "/static/%2e%2e/pyproject.toml"):
            assert c.get(probe).status_code == 404


def test_an_app_chooses_which_sites_may_embed_its_widget(http_api: RunningHttp) -> None:
    from gateway.http.security_headers import frame_ancestors

    config = http_api.runtime.config
    [demo] = config.apps
    embedded = demo.model_copy(
        update={"widget_frame_ancestors": ["https://www.shop.example", "https://*.shop.example"]}
    )
    http_api.runtime.config = config.model_copy(update={"apps": [embedded]})
    assert frame_ancestors(http_api.runtime.config, "demo") == (
        "'self' https://www.shop.example https://*.shop.example"
    )
    with http_api.client() as c:
        r = c.get("/widget/demo")
        assert_safe_page(r, ancestors="'self' https://www.shop.example https://*.shop.example")
        # The console is never framed, whatever an app allows for its widget.
        assert_safe_page(c.get("/signin"))


@pytest.mark.parametrize(
    "source",
    [
        "https://shop.example; script-src *",
        "https://shop.example 'unsafe-inline'",
        "*",
        "x\r\nY: z",
    ],
)
def test_a_frame_ancestor_cannot_smuggle_policy(source: str) -> None:
    base = embedded_default()
    [demo] = base.apps
    with pytest.raises(ValidationError, match="expected sites like"):
        demo.model_validate({**demo.model_dump(), "widget_frame_ancestors": [source]})


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def test_the_widget_works_in_a_real_browser_under_its_policy(http_api: RunningHttp) -> None:
    """Chromium loads the page, the visitor chats; the browser reports no CSP violation."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            console: list[str] = []
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
            page.goto(f"{http_api.url}/widget/demo")
            page.evaluate(
                "document.addEventListener('securitypolicyviolation',"
                " e => console.error('CSP violation: ' + e.violatedDirective))"
            )
            page.fill("#text", "Hello from a real browser")
            page.click("#send button")
            page.wait_for_selector("#log .m.customer")
            assert "Hello from a real browser" in page.inner_text("#log")
            assert page.is_visible("#email")  # asks for an address: none is known yet
            assert page.evaluate("getComputedStyle(document.body).margin") == "0px"  # CSS loaded
            page.reload()  # the conversation comes back from storage, through the API
            page.wait_for_selector("#log .m.customer")
            # The visitor gives an address and follows the mailed link in the same browser.
            page.fill("#email", "browser@example.com")
            page.click("#reach button")
            page.wait_for_selector("#pending", state="visible")
            with http_api.runtime.unit_of_work() as s:
                raw = s.scalars(select(Outbox.raw).where(Outbox.kind == "address_confirmation"))
                mail = message_from_bytes(raw.one(), policy=email_policy.default)
            assert isinstance(mail, EmailMessage)
            [link] = re.findall(r"https?://\S+/widget/demo/confirm\?t=[\w-]+", plain(mail))
            page.goto(http_api.url + "/widget/demo/confirm?t=" + link.rpartition("t=")[2])
            page.click("#confirm button")
            page.wait_for_url(re.compile(r"/widget/demo$"))  # the token left the address bar
            page.wait_for_selector("#log .m.customer")
            assert page.is_hidden("#reach") and page.is_hidden("#pending")
        finally:
            browser.close()
    violations = [m for m in console if "Content Security Policy" in m or "CSP" in m]
    assert violations == [] and not [m for m in console if m.startswith(("error", "pageerror"))]


# --- identity: an address counts once the mailbox owner follows the link ------------------------

OWNER = "olivia@victim.example"
OWNER_SECRET = "My new card number is 4929 0000 1111 2222, please update it"
VISITOR_TEXT = "Hi, I am Olivia, please send everything to this address"


@pytest.fixture
def served(tmp_path: Path, relay: SmtpSink, database_url: str) -> Iterator[Services]:
    """`gateway serve` as one process: SMTP, HTTP, workers and sweeps; mail leaves to `relay`."""
    base = loopback_config(tmp_path)
    config = base.model_copy(
        update={
            "database_url": database_url,
            "sweep_seconds": 0.3,
            "worker_threads": 2,
            "delivery": base.delivery.model_copy(
                update={"email_grace_seconds": 1, "widget_online_seconds": 1}
            ),
            "outbound": base.outbound.model_copy(
                update={"transport": "smtp", "host": relay.host, "port": relay.port}
            ),
        }
    )
    running = start(config)
    yield running
    running.stop()


class Widget:
    """A visitor's browser: its visitor token and the conversation link it holds."""

    def __init__(self, served: Services) -> None:
        [line] = [x for x in served.listening if x.startswith("http: ")]
        self.http = httpx.Client(base_url=line.removeprefix("http: "), timeout=30)
        r = self.http.post("/widget/api/demo/visitors", json={"name": "Olivia (bank)"})
        assert r.status_code == 201, r.text
        self.visitor = r.json()["visitor_token"]
        self.conversation = ""

    def chat(self, text: str) -> dict[str, Any]:
        auth = {"Authorization": f"Bearer {self.visitor}"}
        r = self.http.post("/widget/api/demo/conversations", json={"text": text}, headers=auth)
        assert r.status_code == 201, r.text
        self.conversation = r.json()["conversation"]
        return dict(r.json())

    def give_email(self, address: str) -> httpx.Response:
        url = f"/widget/api/demo/conversations/{self.conversation}/email"
        return self.http.post(url, json={"email": address})

    def everything_visible(self) -> str:
        """All this browser can read: its conversation list and each conversation."""
        auth = {"Authorization": f"Bearer {self.visitor}"}
        listed = self.http.get("/widget/api/demo/conversations", headers=auth).json()
        seen = [json.dumps(listed)]
        for item in listed["conversations"]:
            seen.append(
                self.http.get(f"/widget/api/demo/conversations/{item['conversation']}").text
            )
        seen.append(self.http.get(f"/widget/api/demo/conversations/{self.conversation}").text)
        return "\n".join(seen)


def send_mail(served: Services, sender: str, subject: str, text: str) -> None:
    msg = EmailMessage()
    msg["From"] = f"Olivia <{sender}>"
    msg["To"] = "support@localhost"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{abs(hash(subject))}@victim.example>"
    msg.set_content(text)
    port = int(served.runtime.config.smtp.listen.rpartition(":")[2])
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.send_message(msg)


def conversation_with(served: Services, text: str) -> Conversation:
    found = find_conversation(served, text)
    assert found is not None, text
    return found


def find_conversation(served: Services, text: str) -> Conversation | None:
    with served.runtime.unit_of_work() as s:
        message = s.scalar(select(Message).where(Message.text.contains(text[:30])))
        if message is None:
            return None
        conversation = message.conversation
        _ = conversation.customer.addresses  # loaded for the caller
        return conversation


def mails_to(relay: SmtpSink, address: str) -> list[Received]:
    return [m for m in relay.messages if address in m.rcpt_tos]


def plain(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


def confirm_link(mail: Received) -> str:
    text = plain(mail.message)
    [link] = re.findall(r"https?://\S+/widget/demo/confirm\?t=[\w-]+", text)
    return str(link)


def agent_replies(served: Services, conversation_id: int, text: str) -> None:
    rt = served.runtime
    with rt.unit_of_work() as s:
        app = services.get_app(s, "demo")
        try:
            agent = services.find_agent(s, app, "ana@localhost")
        except NotFound:
            agent = services.add_agent(s, app, "ana@localhost", "Ana", rt.clock())
        conversation = services.get_conversation(s, app, conversation_id)
        services.add_agent_message(s, conversation, agent, text, rt.clock())


def test_a_visitor_who_claims_someone_elses_address_gets_nothing_of_theirs(
    served: Services, relay: SmtpSink
) -> None:
    # The real owner has written to the team before.
    send_mail(served, OWNER, "Card renewal", "When does my new card arrive?")
    before = wait_for(lambda: find_conversation(served, "When does my new card"))
    assert [a.address for a in before.customer.addresses] == [OWNER]

    mallory = Widget(served)
    mallory.chat(VISITOR_TEXT)
    r = mallory.give_email(OWNER)
    assert r.status_code == 202, r.text

    # The owner writes again, a new mail: it goes to the owner's record, not the visitor's.
    send_mail(served, OWNER, "Lost card", OWNER_SECRET)
    landed = wait_for(lambda: find_conversation(served, OWNER_SECRET))
    assert landed.customer_id == before.customer_id
    visible = mallory.everything_visible()
    assert "4929" not in visible and "When does my new card" not in visible
    assert "Card renewal" not in visible and "Lost card" not in visible

    # What the visitor writes stays theirs: never posted on the owner's record.
    r = mallory.http.post(
        f"/widget/api/demo/conversations/{mallory.conversation}/messages",
        json={"text": "Also cancel my card please"},
    )
    assert r.status_code == 201
    theirs = conversation_with(served, VISITOR_TEXT)
    assert theirs.customer_id != before.customer_id and theirs.customer.addresses == []

    # The visitor's chat is never emailed to the claimed address, not even after an answer.
    agent_replies(served, theirs.id, "We will send the new card to the address on file.")

    def warned() -> str | None:
        with served.runtime.unit_of_work() as s:
            conversation = s.get(Conversation, theirs.id)
            return conversation.delivery_warning if conversation else None

    # Once the grace (1 s) is over the sweep decides not to email and warns; under load that
    # can take longer than any fixed sleep, so wait for the decision itself.
    warning = wait_for(warned)
    assert "no email address" in warning
    time.sleep(1)  # a few more sweeps: still nothing goes to the claimed address
    to_owner = mails_to(relay, OWNER)
    assert len(to_owner) == 1  # the confirmation, nothing else
    [confirmation] = to_owner
    body = plain(confirmation.message)
    everything = str(confirmation.message) + body
    for typed in ("Olivia (bank)", VISITOR_TEXT[:20], "cancel my card", "address on file"):
        assert typed not in everything, typed
    assert confirmation.message["Reply-To"] is None

    # An answer to the confirmation mail does not thread into the visitor's conversation.
    reply = EmailMessage()
    reply["From"] = OWNER
    reply["To"] = "support@localhost"
    reply["Subject"] = "Re: " + str(confirmation.message["Subject"])
    reply["In-Reply-To"] = confirmation.message["Message-ID"]
    reply["References"] = confirmation.message["Message-ID"]
    reply["Message-ID"] = "<answer-to-confirmation@victim.example>"
    reply.set_content("What is this? I did not ask for anything.")
    port = int(served.runtime.config.smtp.listen.rpartition(":")[2])
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.send_message(reply)
    answered = wait_for(lambda: find_conversation(served, "What is this? I did not ask"))
    assert answered.customer_id == before.customer_id and answered.id != theirs.id
    assert "did not ask" not in mallory.everything_visible()


def test_a_visitor_who_claims_an_address_first_does_not_get_its_future_mail(
    served: Services, relay: SmtpSink
) -> None:
    """As reproduced: claim an address nobody used yet, then wait for its owner to write."""
    mallory = Widget(served)
    mallory.chat(VISITOR_TEXT)
    assert mallory.give_email("newcomer@victim.example").status_code == 202
    send_mail(served, "newcomer@victim.example", "First contact", OWNER_SECRET)
    landed = wait_for(lambda: find_conversation(served, OWNER_SECRET))
    theirs = conversation_with(served, VISITOR_TEXT)
    assert landed.customer_id != theirs.customer_id
    assert [a.address for a in landed.customer.addresses] == ["newcomer@victim.example"]
    assert "4929" not in mallory.everything_visible()
    assert "First contact" not in mallory.everything_visible()


def test_the_answer_is_the_same_for_a_known_and_an_unknown_address(
    served: Services, relay: SmtpSink
) -> None:
    send_mail(served, OWNER, "Hello", "I am a known customer")
    wait_for(lambda: find_conversation(served, "I am a known customer"))
    answers = []
    timings: dict[str, list[float]] = {"known": [], "unknown": []}
    for round_ in range(4):
        for kind, address in (("known", OWNER), ("unknown", f"nobody{round_}@nowhere.example")):
            visitor = Widget(served)
            visitor.chat(f"Round {round_} as {kind}")
            began = time.perf_counter()
            r = visitor.give_email(address)
            timings[kind].append(time.perf_counter() - began)
            answers.append((r.status_code, r.json(), sorted(r.headers.keys())))
    first = answers[0]
    assert first[0] == 202
    assert all(a == first for a in answers), answers
    # Both do the same work (a claim and a mail), so neither is measurably slower.
    known, unknown = (sorted(t)[len(t) // 2] for t in timings.values())
    assert abs(known - unknown) < max(known, unknown) * 0.5 + 0.02, timings


def test_following_the_link_makes_the_address_count(served: Services, relay: SmtpSink) -> None:
    chris = Widget(served)
    chris.chat("Hello, the lamp I ordered arrived broken")
    old_link = chris.conversation
    assert chris.give_email("Chris@Example.com").status_code == 202
    data = chris.http.get(f"/widget/api/demo/conversations/{old_link}").json()
    assert data["email_pending"] is True and data["email_known"] is False
    [mail] = wait_for(lambda: mails_to(relay, "chris@example.com"))
    link = confirm_link(mail)
    path = link.split("://", 1)[1].partition("/")[2]
    secret = link.rpartition("t=")[2]

    # Opening the link (as a mail scanner would) changes nothing; the page carries the headers.
    for _ in range(2):
        page = chris.http.get("/" + path)
        assert page.status_code == 200 and "chris@example.com" in page.text
        assert_safe_page(page)
    assert conversation_with(served, "the lamp I ordered").customer.addresses == []

    # Another site cannot post the link from someone's browser (login CSRF).
    for header in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        forged = chris.http.post(
            "/widget/demo/confirm", data={"t": secret}, headers=header, follow_redirects=False
        )
        assert forged.status_code == 403, header

    # Confirming does: on to the chat, which now goes on by email as well.
    r = chris.http.post("/widget/demo/confirm", data={"t": secret}, follow_redirects=False)
    assert r.status_code == 303, r.text
    location = r.headers["location"]
    assert location.startswith("/widget/demo?c=")
    new_link = location.partition("?c=")[2]
    data = chris.http.get(f"/widget/api/demo/conversations/{new_link}").json()
    assert data["email_known"] is True and data["email_pending"] is False
    conversation = conversation_with(served, "the lamp I ordered")
    assert [a.address for a in conversation.customer.addresses] == ["chris@example.com"]
    agent_replies(served, conversation.id, "A new lamp is on its way.")
    wait_for(lambda: len(mails_to(relay, "chris@example.com")) == 2)
    answer = mails_to(relay, "chris@example.com")[1].message
    assert "A new lamp is on its way." in plain(answer)

    # The link works once.
    again = chris.http.post("/widget/demo/confirm", data={"t": secret}, follow_redirects=False)
    assert again.status_code == 404 and "already used" in again.text
    assert chris.http.get("/" + path).status_code == 404


def test_a_link_expires(served: Services, relay: SmtpSink) -> None:
    visitor = Widget(served)
    visitor.chat("Expiring link")
    visitor.give_email("late@example.com")
    [mail] = wait_for(lambda: mails_to(relay, "late@example.com"))
    secret = confirm_link(mail).rpartition("t=")[2]
    with served.runtime.unit_of_work() as s:
        for claim in s.scalars(select(AddressClaim)):
            claim.expires_at = served.runtime.clock() - dt.timedelta(seconds=1)
    r = visitor.http.post("/widget/demo/confirm", data={"t": secret}, follow_redirects=False)
    assert r.status_code == 404 and "expired" in r.text
    assert conversation_with(served, "Expiring link").customer.addresses == []


def test_when_the_owner_confirms_their_history_stays_out_of_the_visitors_browser(
    served: Services, relay: SmtpSink
) -> None:
    """The owner follows a link a stranger asked for: the stranger's conversation moves to the
    owner's record; the stranger's browser gets neither the owner's history nor the chat."""
    send_mail(served, OWNER, "Card renewal", OWNER_SECRET)
    history = wait_for(lambda: find_conversation(served, OWNER_SECRET))
    mallory = Widget(served)
    mallory.chat(VISITOR_TEXT)
    mallory.give_email(OWNER)
    [mail] = wait_for(lambda: mails_to(relay, OWNER))
    owners_browser = httpx.Client(base_url=mallory.http.base_url, timeout=30)
    secret = confirm_link(mail).rpartition("t=")[2]
    confirmed = owners_browser.post(
        "/widget/demo/confirm", data={"t": secret}, follow_redirects=False
    )
    assert confirmed.status_code == 303
    moved = conversation_with(served, VISITOR_TEXT)
    assert moved.customer_id == history.customer_id  # one customer now, as the team sees it
    # The visitor's browser: its old link is dead, its list holds nothing of the owner's.
    r = mallory.http.get(f"/widget/api/demo/conversations/{mallory.conversation}")
    assert r.status_code == 404
    assert "4929" not in mallory.everything_visible()
    auth = {"Authorization": f"Bearer {mallory.visitor}"}
    listed = mallory.http.get("/widget/api/demo/conversations", headers=auth).json()
    assert listed["conversations"] == []
    # The browser that followed the link continues the chat there.
    new_link = confirmed.headers["location"].partition("?c=")[2]
    r = owners_browser.get(f"/widget/api/demo/conversations/{new_link}")
    assert r.status_code == 200 and VISITOR_TEXT in r.text and "4929" not in r.text


def test_the_owner_confirming_in_the_browser_they_chatted_in_gets_their_history(
    served: Services, relay: SmtpSink
) -> None:
    """That browser proved both: it is the visitor, and it reads the mailbox. One person."""
    send_mail(served, OWNER, "Card renewal", OWNER_SECRET)
    history = wait_for(lambda: find_conversation(served, OWNER_SECRET))
    olivia = Widget(served)
    olivia.chat("It's me again, from the website")
    olivia.give_email(OWNER)
    [mail] = wait_for(lambda: mails_to(relay, OWNER))
    secret = confirm_link(mail).rpartition("t=")[2]
    page = olivia.http.get(f"/widget/demo/confirm?t={secret}")
    assert 'name="v"' in page.text and "/static/confirm.js" in page.text  # the script fills it
    r = olivia.http.post(
        "/widget/demo/confirm", data={"t": secret, "v": olivia.visitor}, follow_redirects=False
    )
    assert r.status_code == 303
    assert conversation_with(served, "It's me again").customer_id == history.customer_id
    visible = olivia.everything_visible()
    assert "Card renewal" in visible and "It's me again" in visible
    # A visitor token that is not the claimant's proves nothing.
    mallory = Widget(served)
    mallory.chat(VISITOR_TEXT)
    mallory.give_email(OWNER)
    [_, mail] = wait_for(lambda: mails_to(relay, OWNER)[1:] and mails_to(relay, OWNER))
    secret = confirm_link(mail).rpartition("t=")[2]
    r = mallory.http.post(
        "/widget/demo/confirm", data={"t": secret, "v": olivia.visitor}, follow_redirects=False
    )
    assert r.status_code == 303
    assert "Card renewal" not in mallory.everything_visible()


@pytest.mark.parametrize("locale", EmailTemplates().locales())
def test_the_confirmation_mail_exists_in_every_locale_and_passes_the_guard(locale: str) -> None:
    assert {"en", "de", "es", "fr"} <= set(EmailTemplates().locales())
    content = EmailContent(
        view=CustomerView(brand="Demo", subject="", customer_name="", messages=()),
        chat_url="https://help.example/widget/demo/confirm?t=abc",
        sender_name=None,
        extra={"hours": "24"},
    )
    rendered = render_checked(EmailTemplates(), CONFIRM_TEMPLATE, locale, content)
    for part in (rendered.text, rendered.html):
        assert "https://help.example/widget/demo/confirm?t=abc" in part and "24" in part
    assert "Demo" in rendered.subject and rendered.from_name == "Demo"
    # (render_checked ran the guard on the HTML, its inline colours aside.)
    assert find_internal_words(rendered.subject + "\n" + rendered.text) == []


# --- rate limits: what anonymous visitors can make the gateway do --------------------------------


def limit(http: RunningHttp, **limits: str) -> None:
    config = http.runtime.config
    http.runtime.config = config.model_copy(
        update={"rate_limits": config.rate_limits.model_copy(update=limits)}
    )


def assert_limited(r: httpx.Response, period_seconds: int) -> None:
    assert r.status_code == 429, r.text
    assert 1 <= int(r.headers["retry-after"]) <= period_seconds
    assert "too many" in r.json()["detail"] and r.headers["retry-after"] in r.json()["detail"]


def test_new_visitors_per_address_are_limited_and_a_forged_forwarded_for_does_not_help(
    http_api: RunningHttp,
) -> None:
    limit(http_api, new_visitors_per_ip="3/1h")
    now = http_api.runtime.clock()  # one fixed hour's window (see the next test)
    http_api.runtime.clock = lambda: now  # type: ignore[method-assign]
    with http_api.client() as c:
        for _ in range(3):
            assert c.post("/widget/api/demo/visitors", json={}).status_code == 201
        assert_limited(c.post("/widget/api/demo/visitors", json={}), 3600)
        # Nobody configured a trusted proxy: the header is the client's word, and ignored.
        spoofed = {"X-Forwarded-For": "203.0.113.7"}
        assert_limited(c.post("/widget/api/demo/visitors", json={}, headers=spoofed), 3600)


def test_behind_a_trusted_proxy_each_client_has_its_own_budget(http_api: RunningHttp) -> None:
    limit(http_api, new_visitors_per_ip="1/1h")
    # The windows are fixed hours: a run across the hour would start a fresh budget midway.
    now = http_api.runtime.clock()
    http_api.runtime.clock = lambda: now  # type: ignore[method-assign]
    config = http_api.runtime.config
    http_api.runtime.config = config.model_copy(
        update={"http": config.http.model_copy(update={"trusted_proxies": ["127.0.0.0/8"]})}
    )
    with http_api.client() as c:

        def new_visitor(forwarded: str) -> int:
            headers = {"X-Forwarded-For": forwarded}
            return c.post("/widget/api/demo/visitors", json={}, headers=headers).status_code

        assert new_visitor("198.51.100.1") == 201
        assert new_visitor("198.51.100.2") == 201
        assert new_visitor("198.51.100.1") == 429
        # A client cannot prepend its way out: the proxy appends the real peer on the right.
        assert new_visitor("192.0.2.99, 198.51.100.1") == 429
        assert new_visitor("198.51.100.1, 127.0.0.1") == 429  # the proxy itself is skipped


def test_messages_and_email_links_are_limited_per_conversation(http_api: RunningHttp) -> None:
    limit(http_api, messages_per_conversation="3/1m", email_links_per_conversation="1/1h")
    with http_api.client() as c:
        visitor = c.post("/widget/api/demo/visitors", json={}).json()["visitor_token"]
        auth = {"Authorization": f"Bearer {visitor}"}
        r = c.post("/widget/api/demo/conversations", json={"text": "one"}, headers=auth)
        handle = r.json()["conversation"]
        messages = f"/widget/api/demo/conversations/{handle}/messages"
        for text in ("two", "three", "four"):
            assert c.post(messages, json={"text": text}).status_code == 201
        assert_limited(c.post(messages, json={"text": "five"}), 60)
        email = f"/widget/api/demo/conversations/{handle}/email"
        assert c.post(email, json={"email": "a@example.com"}).status_code == 202
        assert_limited(c.post(email, json={"email": "b@example.com"}), 3600)
        # Another conversation has its own budget.
        r = c.post("/widget/api/demo/conversations", json={"text": "other"}, headers=auth)
        other = r.json()["conversation"]
        url = f"/widget/api/demo/conversations/{other}/email"
        assert c.post(url, json={"email": "b@example.com"}).status_code == 202
    with http_api.runtime.unit_of_work() as s:
        mailed = s.scalars(select(Outbox.recipients).where(Outbox.kind == "address_confirmation"))
        assert sorted(r[0] for r in mailed) == ["a@example.com", "b@example.com"]


def test_the_limits_hold_across_gateway_processes(http_api: RunningHttp) -> None:
    """Two gateways on one database (as behind a load balancer) share one budget."""
    limit(http_api, messages_per_ip="4/1h")
    second = Runtime.create(http_api.runtime.config)
    try:
        with running_http(second) as other, http_api.client() as a, other.client() as b:
            visitor = a.post("/widget/api/demo/visitors", json={}).json()["visitor_token"]
            auth = {"Authorization": f"Bearer {visitor}"}
            answers = [
                client.post("/widget/api/demo/conversations", json={"text": "hi"}, headers=auth)
                for client in (a, b, a, b, a, b)
            ]
            assert [r.status_code for r in answers] == [201, 201, 201, 201, 429, 429]
    finally:
        second.close()
