"""Signing in to the console, through the real HTTP server (and `gateway serve` with the CLI's
link): links mailed or printed, passwords, sessions, CSRF and who may see what."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
from email import message_from_bytes
from email import policy as email_policy
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from gateway.http.console.session import COOKIE
from gateway.runtime import Runtime
from tests.support.api_world import World, build_world
from tests.support.browser import screenshot, watch
from tests.support.console import csrf, signed_in
from tests.support.http import RunningHttp, free_port, loopback_config, running_http
from tests.support.serve import clean_env, serve_process, stop_cleanly
from tests.support.waiting import wait_for
from tickets import sign_in
from tickets.models import Agent, Outbox


def _pre(client: httpx.Client) -> str:
    page = client.get("/signin")
    assert page.status_code == 200
    found = re.search(r'name="pre" value="([^"]+)"', page.text)
    assert found
    return found.group(1)


def _mailed_link(http: RunningHttp, to: str) -> str:
    with http.runtime.unit_of_work() as s:
        rows = s.scalars(select(Outbox).where(Outbox.kind == "agent_sign_in")).all()
        mails = [message_from_bytes(r.raw, policy=email_policy.default) for r in rows]
    [mail] = [m for m in mails if m["To"] == to]
    body = mail.get_body(("plain",))
    assert body is not None
    [link] = re.findall(r"http://\S+/signin/link\?t=[\w-]+", body.get_content())
    return link


def _use(client: httpx.Client, link: str) -> httpx.Response:
    token = link.rpartition("t=")[2]
    return client.post("/signin/link", data={"t": token})


def test_an_anonymous_browser_is_sent_to_sign_in_and_back(http_api: RunningHttp) -> None:
    client = httpx.Client(base_url=http_api.url)
    assert client.get("/").headers["location"] == "/signin"
    answer = client.get("/account?x=1", headers={"accept": "text/html"})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/signin?next=/account%3Fx%3D1"


def test_a_mailed_link_signs_in_once(world: World) -> None:
    http = world.http
    client = httpx.Client(base_url=http.url)
    answer = client.post(
        "/signin/email", data={"email": "Alice@A.example", "pre": _pre(client), "next": "/account"}
    )
    assert answer.status_code == 200
    assert "a sign-in link is on its way" in answer.text
    link = _mailed_link(http, "alice@a.example")

    # Opening the link (as a mail scanner would) changes nothing; the page's button signs in.
    assert "Sign in as Alice" in client.get("/signin/link?t=" + link.rpartition("t=")[2]).text
    signed = _use(client, link)
    assert signed.status_code == 303 and signed.headers["location"] == "/inbox"
    cookie = signed.headers["set-cookie"]
    assert f"{COOKIE}=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Secure" not in cookie  # plain http on loopback
    assert "Signed in as alice@a.example" in client.get("/account").text

    other = httpx.Client(base_url=http.url)
    again = _use(other, link)
    assert again.status_code == 410 and "already used" in again.text
    assert COOKIE not in other.cookies


def test_the_answer_is_the_same_for_an_unknown_address_and_nothing_is_mailed(world: World) -> None:
    client = httpx.Client(base_url=world.http.url)
    pre = _pre(client)
    known = client.post("/signin/email", data={"email": "bob@a.example", "pre": pre})
    unknown = client.post("/signin/email", data={"email": "mallory@a.example", "pre": pre})
    assert known.status_code == unknown.status_code == 200

    def sentence(page: str) -> str:
        found = re.search(r'role="status">If \S+ (belongs to an agent.*?)</p>', page)
        assert found
        return found.group(1)

    assert sentence(known.text) == sentence(unknown.text)
    with world.http.runtime.unit_of_work() as s:
        to = [r.recipients for r in s.scalars(select(Outbox).where(Outbox.kind == "agent_sign_in"))]
    assert to == [["bob@a.example"]]


def test_an_expired_link_does_not_sign_in(world: World) -> None:
    runtime = world.http.runtime
    with runtime.unit_of_work() as s:
        bob = s.scalars(select(Agent).where(Agent.email == "bob@a.example")).one()
        secret = sign_in.issue_link(s, bob, runtime.clock() - dt.timedelta(minutes=16))
    client = httpx.Client(base_url=world.http.url)
    answer = client.post("/signin/link", data={"t": secret})
    assert answer.status_code == 410 and "expired" in answer.text
    assert COOKIE not in client.cookies


def test_a_password_set_in_the_console_signs_in_and_sign_out_ends_the_session(
    world: World,
) -> None:
    http = world.http
    alice = signed_in(http, "alice@a.example")
    account = alice.get("/account")
    short = alice.post(
        "/account/password",
        data={"csrf": csrf(account.text), "password": "short", "again": "short"},
    )
    assert short.status_code == 400 and "10 to 1024 characters" in short.text
    good = {"csrf": csrf(account.text), "password": "correct horse", "again": "correct horse"}
    assert "Your password is set" in alice.post("/account/password", data=good).text
    with http.runtime.unit_of_work() as s:
        stored = s.scalars(select(Agent.password_hash).where(Agent.email == "alice@a.example"))
        assert "correct horse" not in (stored.one() or "")

    client = httpx.Client(base_url=http.url)
    pre = _pre(client)
    wrong = client.post(
        "/signin/password", data={"email": "alice@a.example", "password": "x" * 12, "pre": pre}
    )
    nobody = client.post(
        "/signin/password", data={"email": "zoe@a.example", "password": "x" * 12, "pre": pre}
    )
    assert wrong.status_code == nobody.status_code == 401
    assert "do not match" in wrong.text and "do not match" in nobody.text
    right = client.post(
        "/signin/password",
        data={
            "email": "alice@a.example",
            "password": "correct horse",
            "pre": pre,
            "next": "/account",
        },
    )
    assert right.status_code == 303 and right.headers["location"] == "/account"
    page = client.get("/account")
    assert page.status_code == 200

    out = client.post("/signout", data={"csrf": csrf(page.text)})
    assert out.status_code == 303 and out.headers["location"] == "/signin"
    # The old cookie is dead on the server too, not only forgotten by this browser.
    replay = httpx.Client(base_url=http.url, cookies={COOKIE: right.cookies[COOKIE]})
    assert replay.get("/account").status_code == 303


def test_forms_without_their_token_or_from_another_site_are_refused(world: World) -> None:
    alice = signed_in(world.http, "alice@a.example")
    token = csrf(alice.get("/account").text)
    form = {"password": "correct horse", "again": "correct horse"}
    assert alice.post("/account/password", data=form).status_code == 403
    assert alice.post("/account/password", data={**form, "csrf": "0" * 40}).status_code == 403
    cross = alice.post(
        "/account/password", data={**form, "csrf": token}, headers={"sec-fetch-site": "cross-site"}
    )
    assert cross.status_code == 403
    # Login CSRF: another site cannot post the sign-in form (no pre cookie of ours).
    stranger = httpx.Client(base_url=world.http.url)
    posted = stranger.post(
        "/signin/password",
        data={"email": "alice@a.example", "password": "correct horse", "pre": "anything"},
    )
    assert posted.status_code == 403


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil.example"])
def test_after_sign_in_the_browser_stays_on_our_site(world: World, target: str) -> None:
    runtime = world.http.runtime
    with runtime.unit_of_work() as s:
        alice = s.scalars(select(Agent).where(Agent.email == "alice@a.example")).one()
        sign_in.set_password(alice, "correct horse")
    client = httpx.Client(base_url=world.http.url)
    answer = client.post(
        "/signin/password",
        data={
            "email": "alice@a.example",
            "password": "correct horse",
            "pre": _pre(client),
            "next": target,
        },
    )
    assert answer.headers["location"] == "/inbox"


def test_password_guessing_is_rate_limited(world: World) -> None:
    client = httpx.Client(base_url=world.http.url)
    pre = _pre(client)
    answers = [
        client.post(
            "/signin/password",
            data={"email": "bob@a.example", "password": f"guess-{i:06}", "pre": pre},
        )
        for i in range(11)
    ]
    assert [a.status_code for a in answers[:10]] == [401] * 10
    assert answers[10].status_code == 429
    assert "too many sign-in attempts" in answers[10].text
    assert int(answers[10].headers["retry-after"]) > 0


def test_a_deactivated_agents_session_ends(world: World) -> None:
    bob = signed_in(world.http, "bob@a.example")
    assert bob.get("/account").status_code == 200
    with world.http.runtime.unit_of_work() as s:
        s.scalars(select(Agent).where(Agent.email == "bob@a.example")).one().active = False
    assert bob.get("/account").status_code == 303


def test_the_first_admin_signs_in_with_the_printed_link_in_a_real_browser(
    tmp_path: Path, browser: Any
) -> None:
    """A fresh install: `gateway agents add`, `gateway agents login-link`, then the browser."""
    http_port, smtp_port = free_port(), free_port()
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        f'database_url = "sqlite:///{tmp_path / "data" / "gw.db"}"\n'
        f'[http]\nlisten = "127.0.0.1:{http_port}"\npublic_url = "http://127.0.0.1:{http_port}"\n'
        f'[smtp]\nlisten = "127.0.0.1:{smtp_port}"\n'
        '[[apps]]\nname = "demo"\nbrand = "Demo"\ndomains = ["localhost"]\n'
        '[[apps.channels]]\nname = "support"\naddresses = ["support@localhost"]\n'
    )
    env = clean_env()

    def gateway(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway", "--config", str(config), *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    with serve_process(["--config", str(config), "serve"], cwd=tmp_path, env=env) as proc:
        url = f"http://127.0.0.1:{http_port}"
        wait_for(lambda: _up(url), timeout=90)
        added = gateway("agents", "add", "ana@example.com", "--name", "Ana", "--role", "admin")
        assert added.returncode == 0, added.stderr
        printed = gateway("agents", "login-link", "ana@example.com")
        assert printed.returncode == 0, printed.stderr
        link = printed.stdout.strip()
        assert re.fullmatch(rf"{url}/signin/link\?t=[\w-]+", link)
        assert "15 minutes" in printed.stderr
        unknown = gateway("agents", "login-link", "nobody@example.com")
        assert unknown.returncode == 1 and len(unknown.stderr.strip().splitlines()) == 1

        page = browser.new_page()
        problems = watch(page)
        page.goto(url + "/")
        assert page.url.endswith("/signin")
        screenshot(page, "signin")
        page.goto(link)
        screenshot(page, "signin-link")
        page.click("#use-link")
        page.wait_for_url(re.compile(r"/inbox$"))
        page.goto(url + "/account")
        assert "Signed in as ana@example.com" in page.inner_text("main")
        page.click("text=Sign out")
        page.wait_for_url(re.compile(r"/signin$"))
        assert problems == []
        with_link_again = browser.new_page()
        with_link_again.goto(link)
        assert "already used" in with_link_again.inner_text("main")
        stop_cleanly(proc)


def _up(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_behind_https_the_session_cookie_is_secure(tmp_path: Path) -> None:
    base = loopback_config(tmp_path)
    config = base.model_copy(
        update={"http": base.http.model_copy(update={"public_url": "https://support.example"})}
    )
    runtime = Runtime.create(config)
    try:
        with running_http(runtime) as http:
            build_world(http)
            with runtime.unit_of_work() as s:
                alice = s.scalars(select(Agent).where(Agent.email == "alice@a.example")).one()
                secret = sign_in.issue_link(s, alice, runtime.clock())
            answer = httpx.Client(base_url=http.url).post("/signin/link", data={"t": secret})
            assert answer.status_code == 303
            assert "Secure" in answer.headers["set-cookie"]
    finally:
        runtime.close()


def test_a_browser_meets_refusals_and_mistyped_addresses_as_pages(world: World) -> None:
    bob = signed_in(world.http, "bob@a.example")
    html = {"accept": "text/html"}
    refused = bob.get("/admin/agents", headers=html)
    assert refused.status_code == 403 and "This page is for the app&#39;s admins." in refused.text
    assert 'href="/inbox"' in refused.text  # the console's own navigation is still there
    mistyped = bob.get("/conversations/abc", headers=html)
    assert mistyped.status_code == 404 and "no such page" in mistyped.text
    # An API client keeps its JSON answers.
    assert bob.get("/conversations/abc").status_code == 422
    assert bob.get("/api/v1/inbox", headers=html).json()["detail"].startswith("an API token")
