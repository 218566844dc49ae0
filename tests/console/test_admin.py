"""The admin pages of the console (channels, agents, SLA) through the real HTTP server.

An admin adds a channel that reads a real Dovecot and sends through a real relay (STARTTLS and
AUTH, delivering into that Dovecot) and runs its test from the page in Chromium, watching each
step pass; an agent gets 403 on every admin page and form; a form without its CSRF token is
refused; a password given in a form is never shown back or logged. A fresh install (the
embedded default, `gateway serve` as a child process) verifies its own channel, so its first
convert carries no warning.
"""

from __future__ import annotations

import logging
import re
import smtplib
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.api_world import World, build_world
from tests.support.browser import screenshot, watch
from tests.support.certs import make_self_signed_cert
from tests.support.console import browser_signed_in, csrf, signed_in
from tests.support.dovecot import Dovecot
from tests.support.http import RunningHttp, free_port
from tests.support.relay import Relay
from tests.support.serve import clean_env, serve_process
from tickets import domains, services, sla
from tickets.models import Agent, Channel

USER = "support@example.test"
IMAP_PASSWORD = "secret"  # the throwaway Dovecot's user
RELAY_PASSWORD = "relay-pw-never-shown-7q"


def _allow(http: RunningHttp, hosts: list[str]) -> None:
    """The operator lets app demo use these hosts (as after a config reload)."""
    config = http.runtime.config
    apps = [a.model_copy(update={"allowed_hosts": hosts}) for a in config.apps]
    http.runtime.config = config.model_copy(update={"apps": apps})


def _ids(world: World) -> tuple[int, int]:
    with world.http.runtime.unit_of_work() as s:
        channel = s.query(Channel).filter_by(name="support").one()
        bob = s.query(Agent).filter_by(email="bob@a.example").one()
        return channel.id, bob.id


# --- who may use the pages ----------------------------------------------------------------


def test_an_agent_gets_403_on_every_admin_page_and_form(http_api: RunningHttp) -> None:
    world = build_world(http_api)
    channel, bob = _ids(world)
    with signed_in(http_api, "bob@a.example") as c:
        token = csrf(c.get("/account").text)
        for path in ("/admin/channels", f"/admin/channels/{channel}", "/admin/agents",
                     "/admin/sla", f"/admin/channels/{channel}/test"):  # fmt: skip
            r = c.get(path, headers={"Accept": "text/html"})
            assert r.status_code == 403, path
            assert "for the app&#39;s admins" in r.text
        forms = ["/admin/channels", f"/admin/channels/{channel}",
                 f"/admin/channels/{channel}/disable", f"/admin/channels/{channel}/enable",
                 f"/admin/channels/{channel}/test", "/admin/agents",
                 f"/admin/agents/{bob}/role", f"/admin/agents/{bob}/deactivate",
                 f"/admin/agents/{bob}/activate", f"/admin/agents/{bob}/addresses",
                 f"/admin/agents/{bob}/addresses/remove",
                 f"/admin/agents/{bob}/notifications"]  # fmt: skip
        for path in forms:
            body = {"csrf": token, "name": "x", "addresses": "x@a.example", "role": "admin",
                    "email": "mallory@a.example", "address": "m@a.example"}  # fmt: skip
            assert c.post(path, data=body).status_code == 403, path
    with http_api.runtime.unit_of_work() as s:
        agent = s.get(Agent, bob)
        assert agent is not None and agent.role.value == "agent" and agent.active
        assert s.query(Agent).filter_by(email="mallory@a.example").count() == 0


def test_a_form_without_its_csrf_token_is_403(http_api: RunningHttp) -> None:
    build_world(http_api)
    with signed_in(http_api, "alice@a.example") as c:
        body = {"name": "sales", "addresses": "sales@localhost"}
        assert c.post("/admin/channels", data=body).status_code == 403
        assert c.post("/admin/channels", data={**body, "csrf": "forged"}).status_code == 403
        cross = c.post(
            "/admin/agents",
            data={"csrf": csrf(c.get("/admin/agents").text), "name": "M", "email": "m@x.example"},
            headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
        )
        assert cross.status_code == 403
        assert "sales" not in c.get("/admin/channels").text
        assert "m@x.example" not in c.get("/admin/agents").text


def test_the_setup_link_leads_admins_to_the_channels_page_and_agents_to_an_admin(
    http_api: RunningHttp,
) -> None:
    build_world(http_api)
    with signed_in(http_api, "alice@a.example") as c:
        r = c.get("/admin/channels/email/setup")
        assert r.status_code == 303 and r.headers["location"].startswith("/admin/channels")
        page = c.get("/admin/channels").text
        for words in ("How to connect a mailbox", "MX record", "IMAP", "support@localhost"):
            assert words in page
    # An agent follows the convert warning's link too: no 403, but who can set email up.
    with signed_in(http_api, "bob@a.example") as c:
        r = c.get("/admin/channels/email/setup")
        assert r.status_code == 200
        assert "Email is not ready yet" in r.text and "alice@a.example" in r.text
        assert c.get("/admin/channels").status_code == 403


# --- channels -----------------------------------------------------------------------------


@pytest.fixture
def relay(tmp_path: Path, dovecot: Dovecot, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A relay with STARTTLS and AUTH that delivers into the Dovecot; both certificates are
    trusted the way an operator's system would trust them (SSL_CERT_FILE)."""
    cert = make_self_signed_cert(tmp_path / "relay-tls", name="relay")
    bundle = tmp_path / "ca.pem"
    bundle.write_text(dovecot.cert_path.read_text() + cert.cert_path.read_text())
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    started = Relay(cert, {"gateway": RELAY_PASSWORD}, deliver=dovecot.deliver).start()
    yield started
    started.stop()


def test_an_admin_adds_a_channel_and_runs_its_test_from_the_page(
    http_api: RunningHttp,
    dovecot: Dovecot,
    relay: Relay,
    browser: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    build_world(http_api)
    runtime = http_api.runtime
    with runtime.unit_of_work() as s:  # the operator grants the domain and the hosts
        domains.grant(s, services.get_app(s, "demo"), "example.test", runtime.clock())
    _allow(http_api, [f"127.0.0.1:{dovecot.port}", f"127.0.0.1:{relay.port}"])

    page = browser_signed_in(browser, http_api, "alice@a.example")
    problems = watch(page)
    page.goto(f"{http_api.url}/admin/channels")
    screenshot(page, "admin-channels-empty-form")
    page.get_by_label("Name", exact=True).fill("mailbox")
    page.get_by_label("Addresses").fill(USER)
    page.get_by_label("IMAP server").fill("127.0.0.1")
    page.locator("#imap_port").fill(str(dovecot.port))
    page.locator("#imap_security").select_option("starttls")
    page.locator("#imap_username").fill(USER)
    page.locator("#imap_password").fill(IMAP_PASSWORD)
    page.get_by_label("SMTP relay").fill("127.0.0.1")
    page.locator("#smtp_port").fill(str(relay.port))
    page.locator("#smtp_security").select_option("starttls")
    page.locator("#smtp_username").fill("gateway")
    page.locator("#smtp_password").fill(RELAY_PASSWORD)
    page.get_by_role("button", name="Add channel").click()
    page.wait_for_url(re.compile(r"/admin/channels/\d+\?done=added"))
    assert "The channel is added" in page.content()

    page.get_by_role("button", name="Run test").click()
    page.locator(".result.ok").wait_for(timeout=45_000)
    names = page.locator(".step.passed .step-name").all_inner_texts()
    assert names == [
        "IMAP connect", "IMAP TLS", "IMAP login", "IMAP folder",
        "SMTP connect", "SMTP TLS", "SMTP auth", "Round trip",
    ]  # fmt: skip
    assert page.locator(".step.failed").count() == 0
    page.locator('[data-live="channel-state"] .pill.good').wait_for()  # now verified
    screenshot(page, "admin-channel-tested")
    assert problems == []

    page.goto(f"{http_api.url}/admin/channels")
    assert "Verified" in page.locator("table").inner_text()
    screenshot(page, "admin-channels")
    html = page.content()
    with signed_in(http_api, "alice@a.example") as c:
        cid = int(re.findall(r"/admin/channels/(\d+)", html)[-1])
        seen = [html, c.get(f"/admin/channels/{cid}").text]
        seen.append(c.get(f"/admin/channels/{cid}/test").text)
    for text in [*seen, caplog.text]:
        assert RELAY_PASSWORD not in text
    assert len(relay.handler.received) == 1  # the check mail, through the relay


def test_a_refused_host_and_a_bad_port_show_as_sentences(http_api: RunningHttp) -> None:
    build_world(http_api)
    with signed_in(http_api, "alice@a.example") as c:
        token = csrf(c.get("/admin/channels").text)
        body = {"csrf": token, "name": "evil", "addresses": "evil@localhost",
                "smtp_host": "10.0.0.8", "smtp_port": "25", "smtp_password": "pw-zz-1"}  # fmt: skip
        r = c.post("/admin/channels", data=body)
        assert r.status_code == 400 and "text/html" in r.headers["content-type"]
        assert "smtp.host:" in r.text and "pw-zz-1" not in r.text
        assert 'value="10.0.0.8"' in r.text  # what was typed stays, the password does not
        imap = {"smtp_host": "", "imap_host": "x", "imap_port": "99999"}
        r = c.post("/admin/channels", data={**body, **imap})
        assert r.status_code == 400 and "IMAP port" in r.text
        r = c.post("/admin/channels", data={**body, "smtp_host": "", "smtp_port": "",
                                            "imap_password_env": "GATEWAY_SECRET_KEY"})  # fmt: skip
        # A field the form does not have is not read at all: no server secret can be named.
        assert r.status_code == 303
    with http_api.runtime.unit_of_work() as s:
        assert "password_env" not in str(s.query(Channel).filter_by(name="evil").one().settings)


# --- agents and SLA -------------------------------------------------------------------------


def test_an_admin_manages_agents_in_the_browser(http_api: RunningHttp, browser: Any) -> None:
    build_world(http_api)
    page = browser_signed_in(browser, http_api, "alice@a.example")
    problems = watch(page)
    page.goto(f"{http_api.url}/admin/agents")
    page.get_by_label("Name", exact=True).fill("Cleo")
    page.locator("#invite-email").fill("cleo@a.example")
    page.get_by_role("button", name="Send invitation").click()
    page.wait_for_url(re.compile(r"done=invited"))
    assert "The agent is added and a sign-in link is on its way" in page.content()
    with http_api.runtime.unit_of_work() as s:
        cleo = s.query(Agent).filter_by(email="cleo@a.example").one()
        cid, bob = cleo.id, s.query(Agent).filter_by(email="bob@a.example").one().id
        from tickets.models import Outbox

        mails = s.query(Outbox).all()
        assert any("cleo@a.example" in str(m.recipients) for m in mails)

    card = page.locator(f"#agent-{bob}")
    card.get_by_label("Role").select_option("admin")
    card.get_by_role("button", name="Change role").click()
    page.wait_for_url(re.compile(r"done=role"))
    card = page.locator(f"#agent-{bob}")
    card.get_by_label("Add a verified address").fill("bob@home.example")
    card.get_by_role("button", name="Add", exact=True).click()
    page.wait_for_url(re.compile(r"done=address-added"))
    card = page.locator(f"#agent-{bob}")
    card.get_by_label("SLA breached").uncheck()
    card.get_by_label("When").select_option("digest")
    card.get_by_label("Digest hour (UTC)").fill("7")
    card.get_by_role("button", name="Save").click()
    page.wait_for_url(re.compile(r"done=notifications"))
    page.locator(f"#agent-{cid}").get_by_role("button", name="Deactivate").click()
    page.wait_for_url(re.compile(r"done=deactivated"))
    screenshot(page, "admin-agents")
    assert problems == []
    with http_api.runtime.unit_of_work() as s:
        b, c = s.get(Agent, bob), s.get(Agent, cid)
        assert b is not None and c is not None
        assert b.role.value == "admin" and not c.active
        verified = {a.address for a in b.addresses if a.verified}
        assert verified == {"bob@a.example", "bob@home.example"}
        assert b.notify_prefs["digest"] is True and b.notify_prefs["digest_hour"] == 7
        assert "sla_breach" not in b.notify_prefs["events"]


def test_an_admin_cannot_lock_themself_out(http_api: RunningHttp) -> None:
    build_world(http_api)
    with http_api.runtime.unit_of_work() as s:
        alice = s.query(Agent).filter_by(email="alice@a.example").one().id
    with signed_in(http_api, "alice@a.example") as c:
        token = csrf(c.get("/admin/agents").text)
        r = c.post(f"/admin/agents/{alice}/deactivate", data={"csrf": token})
        assert r.status_code == 400 and "cannot deactivate yourself" in r.text
        r = c.post(f"/admin/agents/{alice}/role", data={"csrf": token, "role": "agent"})
        assert r.status_code == 400 and "cannot change your own role" in r.text


def test_the_sla_page_shows_policies_and_calendars(http_api: RunningHttp, browser: Any) -> None:
    build_world(http_api)
    office = {"name": "office", "timezone": "Europe/Berlin", "holidays": ["2026-12-25"],
              "hours": {d: "09:00-17:00" for d in ("mon", "tue", "wed", "thu", "fri")}}  # fmt: skip
    urgent = sla.policy_json(
        "urgent", priorities=["urgent"], categories=["billing"], calendar=office, warn_at=0.5,
        durations={"first_response": "30m", "next_response": None, "resolution": "1d"},
    )  # fmt: skip
    with http_api.runtime.unit_of_work() as s:
        app = services.get_app(s, "demo")
        app.sla_policies = [urgent, *app.sla_policies]
    page = browser_signed_in(browser, http_api, "alice@a.example")
    problems = watch(page)
    page.goto(f"{http_api.url}/admin/sla")
    text = page.locator("main").inner_text()
    assert "default" in text and "First response" in text and "1h" in text and "3d" in text
    assert "Round the clock" in text
    assert "1.\nurgent" in text or "1. urgent" in text
    assert "Europe/Berlin" in text and "09:00–17:00" in text and "2026-12-25" in text
    screenshot(page, "admin-sla")
    assert problems == []


# --- a fresh install verifies its own channel ----------------------------------------------


def _wait_for(url: str, proc: subprocess.Popen[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not come up")


def test_a_fresh_install_verifies_its_channel_so_the_first_convert_has_no_warning(
    tmp_path: Path,
) -> None:
    """The embedded default (transport `file`, no relay), on ports of its own: the channel
    test goes through the gateway's own SMTP server, and passes."""
    smtp_port, http_port = free_port(), free_port()
    url = f"http://127.0.0.1:{http_port}"
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[smtp]\nlisten = "127.0.0.1:{smtp_port}"\n'
        f'[http]\nlisten = "127.0.0.1:{http_port}"\npublic_url = "{url}"\n'
        '[[apps]]\nname = "demo"\nbrand = "Demo"\ndomains = ["localhost"]\n'
        '[[apps.sla_policies]]\nname = "default"\nfirst_response = "1h"\n'
        '[[apps.channels]]\nname = "support"\naddresses = ["support@localhost"]\n'
    )
    env = clean_env(GATEWAY_CONFIG=str(config))

    def gateway(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "gateway", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    with serve_process(["serve"], cwd=tmp_path, env=env) as proc:
        _wait_for(url, proc)
        gateway("agents", "add", "ana@example.com", "--name", "Ana", "--role", "admin")
        token = gateway("agents", "token", "ana@example.com").splitlines()[-1]
        api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        [channel] = api.get("/api/v1/admin/channels").json()
        result = api.post(f"/api/v1/admin/channels/{channel['id']}/test", json={"timeout": 15})
        assert result.json()["ok"] is True, result.text
        assert [s["name"] for s in result.json()["steps"]] == [
            "outbound", "smtp connect", "smtp auth", "round trip"
        ]  # fmt: skip
        assert "gateway's own SMTP server" in result.json()["steps"][0]["detail"]

        mail = EmailMessage()
        mail["From"], mail["To"], mail["Subject"] = "dana@example.com", "support@localhost", "Hi"
        mail["Message-ID"] = "<first@example.com>"
        mail.set_content("My order never came.")
        with smtplib.SMTP("127.0.0.1", smtp_port) as smtp:
            smtp.send_message(mail)
        conversation = _first_conversation(api)
        api.post(f"/api/v1/conversations/{conversation}/convert", json={}).raise_for_status()
        check = _email_check(api, conversation)
        assert check["ok"] is True, check
        api.close()


def _first_conversation(api: httpx.Client) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        items = api.get("/api/v1/inbox").json()["items"]
        if items:
            return int(items[0]["id"])
        time.sleep(0.2)
    raise AssertionError("the mail did not become a conversation")


def _email_check(api: httpx.Client, conversation: int) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ticket = api.get(f"/api/v1/conversations/{conversation}").json()["ticket"]
        if ticket and ticket.get("email_check"):
            return dict(ticket["email_check"])
        time.sleep(0.2)
    raise AssertionError("the convert-time check did not run")
