"""Attacks on the agent console through the real HTTP server.

The route lists are read from the app itself (`create_app(...).routes`), so a console route
added later is attacked too: every state-changing form without its token, with a wrong one
and from another site; every console route of app A asked for by an agent of app B; every
admin route asked for by a plain agent. "Changes nothing" is checked on the whole database:
every row of every table is the same before and after.

Sessions: the cookie's flags, signing out on one device, deactivation, a used sign-in link in
another browser, and sign-in answers that do not tell whether an address is an agent's.
Stored XSS from customers and mail is in test_console_xss.py (a real browser).
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.routing import iter_route_contexts
from sqlalchemy import select

from gateway.http.app import create_app
from gateway.http.console.session import COOKIE
from tests.support.api_world import World, build_world
from tests.support.console import csrf, signed_in
from tests.support.http import RunningHttp
from tickets import services, sign_in
from tickets.email_check import SETUP_PATH
from tickets.models import Agent, Base, Channel

STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
TOKEN_APIS = ("/api/", "/widget/api/")  # bearer tokens, not cookies: no CSRF to forge

# What a forged form carries: enough that each console action would do something if its
# checks let the post through (and the database comparison would see it).
FORGED = {
    "text": "forged",
    "kind": "note",
    "status": "resolved",
    "priority": "urgent",
    "tag": "forged",
    "role": "admin",
    "email": "alice@a.example",
    "name": "Mallory",
    "address": "mallory@a.example",
    "addresses": "mallory@localhost",
    "password": "forged password 1",
    "again": "forged password 1",
    "events": "new_message",
    "category": "forged",
    "assignee": "alice@a.example",
    "when": "tomorrow 9:00",
    "type": "customer",
}
PASSWORD = "correct horse battery"


# --- the app's routes and the database -------------------------------------------------


def routes(http: RunningHttp) -> list[tuple[str, str, str]]:
    """(method, path, endpoint module) of every route of the app, API routes left out."""
    found = []
    for route in iter_route_contexts(create_app(http.runtime).routes):
        path, endpoint = route.path, route.endpoint
        if not path or path.startswith(TOKEN_APIS) or endpoint is None:
            continue
        for method in sorted(route.methods or ()):
            found.append((method, path, endpoint.__module__))
    return found


def console_routes(http: RunningHttp, methods: set[str]) -> list[tuple[str, str]]:
    return [
        (m, p)
        for m, p, module in routes(http)
        if m in methods and module.startswith("gateway.http.console")
    ]


def snapshot(http: RunningHttp) -> dict[str, list[str]]:
    """Every row of every table, to compare before and after an attack."""
    with http.runtime.reading() as s:
        return {
            t.name: sorted(repr(tuple(row)) for row in s.execute(select(t)))
            for t in Base.metadata.sorted_tables
        }


def changed(before: dict[str, list[str]], after: dict[str, list[str]]) -> dict[str, Any]:
    return {
        name: (sorted(set(after[name]) - set(rows)), sorted(set(rows) - set(after[name])))
        for name, rows in before.items()
        if after[name] != rows
    }


def fill(path: str, ids: dict[str, Any]) -> str:
    params = re.findall(r"{(\w+)(?::\w+)?}", path)
    unknown = [p for p in params if p not in ids]
    assert not unknown, f"{path}: add an id of app A for {unknown} to this test"
    return re.sub(r"{(\w+)(?::\w+)?}", lambda m: str(ids[m.group(1)]), path)


# --- app A's things -------------------------------------------------------------------


def agent_id(http: RunningHttp, email: str) -> int:
    with http.runtime.reading() as s:
        return s.scalars(select(Agent.id).where(Agent.email == email)).one()


def a_things(world: World) -> dict[str, Any]:
    """App A with a channel, a ticket, a tag and alice's password; the ids of its things."""
    http = world.http
    runtime = http.runtime
    now = runtime.clock()
    with runtime.unit_of_work() as s:
        app = services.get_app(s, "demo")
        alice = s.scalars(select(Agent).where(Agent.email == "alice@a.example")).one()
        sign_in.set_password(alice, PASSWORD)
        conv = services.get_conversation(s, app, world.conv_a)
        services.convert(s, conv, alice, now, type="customer", priority="normal")
        services.add_tag(s, conv, "vip-a", services.Actor.agent(alice), now)
        channel = s.scalars(select(Channel).where(Channel.app_id == app.id)).first()
        assert channel is not None  # the demo app's channel
        channel.name = "Secret A desk"
        channel_id = channel.id
    return {
        "conversation_id": world.conv_a,
        "channel_id": channel_id,
        "agent_id": agent_id(http, "bob@a.example"),
        "app_name": "demo",
        "name": "console.js",
    }


@pytest.fixture
def world_a(http_api: RunningHttp) -> Iterator[tuple[World, dict[str, Any]]]:
    world = build_world(http_api)
    yield world, a_things(world)


def pre_token(client: httpx.Client) -> str:
    found = re.search(r'name="pre" value="([^"]+)"', client.get("/signin").text)
    assert found
    return found.group(1)


def link_secret(http: RunningHttp, email: str) -> str:
    with http.runtime.unit_of_work() as s:
        agent = s.scalars(select(Agent).where(Agent.email == email)).one()
        return sign_in.issue_link(s, agent, http.runtime.clock())


# --- 1. CSRF ---------------------------------------------------------------------------


def test_every_state_changing_route_refuses_a_forged_form(
    world_a: tuple[World, dict[str, Any]],
) -> None:
    world, ids = world_a
    http = world.http
    alice = signed_in(http, "alice@a.example")
    good = {"csrf": csrf(alice.get("/account").text), "pre": pre_token(alice)}
    forms = [(m, p) for m, p, _ in routes(http) if m in STATE_CHANGING]
    assert ("POST", "/signout") in forms and len(forms) > 20
    # The links' own secret is their token: only the cross-site post is a forgery to refuse;
    # a wrong or missing secret is a dead link (404/410/422) that changes nothing either.
    link_routes = {"/signin/link": "t", "/widget/{app_name}/confirm": "t"}
    pre_routes = {"/signin/password", "/signin/email"}
    before = snapshot(http)
    wrong: list[str] = []
    for method, path in forms:
        url = fill(path, ids)
        field = link_routes.get(path) or ("pre" if path in pre_routes else "csrf")
        token = link_secret(http, "alice@a.example") if field == "t" else good[field]
        form = {**FORGED, "password": PASSWORD, "t": "", "pre": "", "csrf": ""}
        form.pop(field)
        before = snapshot(http)  # the link secret was just stored
        tries = [
            ("no token", form, {}),
            ("wrong token", {**form, field: "0" * 40}, {}),
            ("cross-site", {**form, field: token}, {"sec-fetch-site": "cross-site"}),
            ("foreign origin", {**form, field: token}, {"origin": "https://evil.example"}),
        ]
        for what, data, headers in tries:
            answer = alice.request(method, url, data=data, headers=headers)
            dead_link = field == "t" and what in ("no token", "wrong token")
            allowed = {403, 404, 410, 422} if dead_link else {403}
            if answer.status_code not in allowed or "set-cookie" in answer.headers:
                wrong.append(f"{method} {path} {what}: {answer.status_code} {answer.text[:80]}")
        diff = changed(before, snapshot(http))
        if diff:
            wrong.append(f"{method} {path} changed {diff}")
    assert wrong == [], "\n".join(wrong)
    assert alice.get("/account").status_code == 200  # and she is still signed in


# --- 2. App vs app ---------------------------------------------------------------------

A_SECRETS = ("Printer on fire", "My printer", "dana@example.com", "@a.example", "Secret A desk")


def leaks(text: str, extra: tuple[str, ...] = ()) -> list[str]:
    return [s for s in (*A_SECRETS, *extra) if s in text]


def test_an_agent_of_another_app_gets_nothing_of_app_a(
    world_a: tuple[World, dict[str, Any]],
) -> None:
    world, ids = world_a
    http = world.http
    eve = signed_in(http, "eve@b.example")  # an admin of app B
    token = csrf(eve.get("/account").text)
    with http.runtime.reading() as s:
        channel_name = s.get(Channel, ids["channel_id"]).name  # type: ignore[union-attr]
    secrets = (channel_name, "vip-a")
    wrong: list[str] = []

    gets = [p for _, p in console_routes(http, {"GET"}) if "{" in p]
    assert {"/conversations/{conversation_id}", "/admin/channels/{channel_id}"} <= set(gets)
    for path in gets:
        answer = eve.get(fill(path, ids), headers={"accept": "text/html"})
        if answer.status_code not in (403, 404) or leaks(answer.text, secrets):
            wrong.append(f"GET {path}: {answer.status_code} {leaks(answer.text, secrets)}")

    # Lists and pages without ids, asked about A's things by value.
    # (The search box shows what was searched for: only the rest of the page may not.)
    for url, asked in (
        ("/inbox?q=dana@example.com", "dana@example.com"),
        ("/inbox?q=printer", "printer"),
        ("/tickets?tag=vip-a", "vip-a"),
        ("/inbox?tag=vip-a&assignee=nobody", "vip-a"),
        ("/admin/channels", ""),
        ("/admin/agents", ""),
        ("/admin/sla", ""),
        ("/account", ""),
    ):
        answer = eve.get(url, headers={"accept": "text/html"})
        text = answer.text
        for echo in (f'value="{asked}"', f">{asked}<"):
            text = text.replace(echo, "") if asked else text
        if answer.status_code != 200 or leaks(text, secrets) or "/conversations/" in text:
            wrong.append(f"GET {url}: {answer.status_code} {leaks(text, secrets)}")

    before = snapshot(http)
    for method, path in console_routes(http, STATE_CHANGING):
        if "{" not in path:
            continue
        answer = eve.request(method, fill(path, ids), data={**FORGED, "csrf": token})
        if answer.status_code not in (403, 404) or leaks(answer.text, secrets):
            wrong.append(f"{method} {path}: {answer.status_code} {leaks(answer.text, secrets)}")

    # Her own conversation, pointed at A's things by the form's fields.
    own = f"/conversations/{world.conv_b}"
    for action, data in (
        ("convert", {"assignee": "bob@a.example"}),
        ("convert", {"assignee": str(ids["agent_id"])}),
    ):
        answer = eve.post(f"{own}/{action}", data={**data, "csrf": token})
        if answer.status_code < 400:
            wrong.append(f"POST {own}/{action} {data}: {answer.status_code}")
    assert eve.post(f"{own}/convert", data={"csrf": token}).status_code == 303
    NOBODY = "nobody@nowhere.example"
    # A's agent is refused in the same words as an address nobody has.
    stranger = eve.post(f"{own}/assignee", data={"assignee": NOBODY, "csrf": token})
    for action, data in (
        ("assignee", {"assignee": "bob@a.example"}),
        ("assignee", {"assignee": str(ids["agent_id"])}),
        ("tracker", {"tracker": str(ids["conversation_id"])}),
    ):
        answer = eve.post(f"{own}/{action}", data={**data, "csrf": token})
        text = answer.text.replace(data.get("assignee", "-"), NOBODY)
        if "@" in data.get("assignee", "") and text != stranger.text:
            wrong.append(f"POST {own}/{action} {data}: answered unlike a stranger")
        if answer.status_code < 400 or leaks(text, (*secrets, "bob@")):
            wrong.append(f"POST {own}/{action} {data}: {answer.status_code}")
    diff = changed(before, snapshot(http))
    # The one change is her own convert above.
    assert set(diff) <= {"tickets", "events", "conversations", "ticket_history"}, diff
    assert wrong == [], "\n".join(wrong)


def test_every_console_page_refuses_framing_and_caching(
    world_a: tuple[World, dict[str, Any]],
) -> None:
    """Clickjacking a console form, or a shared cache keeping a page of the team's: every
    console GET (enumerated), its refusals too, answers with the policy that forbids both."""
    world, ids = world_a
    alice = signed_in(world.http, "alice@a.example")
    wrong = []
    for _, path in console_routes(world.http, {"GET"}):
        for url in (fill(path, ids), fill(path, {k: 2**31 - 1 for k in ids})):
            with alice.stream("GET", url, headers={"accept": "text/html"}) as answer:
                h = answer.headers
                csp = h.get("content-security-policy", "")
                if not (
                    "frame-ancestors 'none'" in csp
                    and "script-src 'self'" in csp
                    and h.get("x-frame-options") == "DENY"
                    and "no-store" in h.get("cache-control", "")
                    and h.get("x-content-type-options") == "nosniff"
                ):
                    wrong.append(f"{url} {answer.status_code}: {dict(h)}")
    assert wrong == [], "\n".join(wrong)


# --- 3. Agent vs admin -----------------------------------------------------------------

# Under /admin/ but meant for agents too: the convert warning's link, where an agent learns
# which admins can set up email (commit f7a4a4e).
FOR_AGENTS = {SETUP_PATH}


def test_every_admin_route_is_refused_to_a_plain_agent(
    world_a: tuple[World, dict[str, Any]],
) -> None:
    world, ids = world_a
    http = world.http
    bob = signed_in(http, "bob@a.example")
    token = csrf(bob.get("/account").text)
    admin = [(m, p) for m, p, _ in routes(http) if p.startswith("/admin/") and p not in FOR_AGENTS]
    assert len(admin) >= 10
    before = snapshot(http)
    wrong = []
    for method, path in admin:
        url = fill(path, {**ids, "agent_id": agent_id(http, "alice@a.example")})
        data = {**FORGED, "csrf": token} if method != "GET" else None
        answer = bob.request(method, url, data=data, headers={"accept": "text/html"})
        if answer.status_code == 303 and method == "GET":  # a redirect: where it leads
            answer = bob.get(answer.headers["location"], headers={"accept": "text/html"})
        if answer.status_code != 403:
            wrong.append(f"{method} {path}: {answer.status_code}")
    assert wrong == [], "\n".join(wrong)
    assert changed(before, snapshot(http)) == {}
    # Nor does the navigation offer him the admin pages, nor the page meant for him a form.
    assert "/admin/" not in bob.get("/inbox").text
    for path in FOR_AGENTS:
        page = bob.get(path, headers={"accept": "text/html"})
        assert page.status_code == 200 and 'action="/admin/' not in page.text


# --- 5. Sessions -----------------------------------------------------------------------


def sign_in_by_password(http: RunningHttp, email: str, password: str) -> httpx.Response:
    client = httpx.Client(base_url=http.url, timeout=30)
    data = {"email": email, "password": password, "pre": pre_token(client)}
    return client.post("/signin/password", data=data)


def test_the_session_cookie_is_httponly_and_lax_and_ends_per_device(
    world_a: tuple[World, dict[str, Any]],
) -> None:
    world, _ = world_a
    http = world.http
    answer = sign_in_by_password(http, "alice@a.example", PASSWORD)
    assert answer.status_code == 303
    [cookie] = [c for c in answer.headers.get_list("set-cookie") if c.startswith(COOKIE + "=")]
    flags = {f.strip().lower() for f in cookie.split(";")[1:]}
    assert {"httponly", "samesite=lax", "path=/"} <= flags

    laptop, phone = signed_in(http, "alice@a.example"), signed_in(http, "alice@a.example")
    out = laptop.post("/signout", data={"csrf": csrf(laptop.get("/account").text)})
    assert out.status_code == 303
    assert laptop.get("/account").status_code == 303  # this device is out
    assert phone.get("/account").status_code == 200  # the other one is not
    # The ended cookie, replayed, is out too (not merely deleted from the browser).
    replay = httpx.Client(base_url=http.url, cookies={COOKIE: laptop.cookies.get(COOKIE) or ""})
    assert replay.get("/account").status_code == 303


def test_a_deactivated_agent_is_out_at_the_next_request(
    world_a: tuple[World, dict[str, Any]],
) -> None:
    world, ids = world_a
    http = world.http
    bob = signed_in(http, "bob@a.example")
    bob_token = csrf(bob.get("/inbox").text)
    alice = signed_in(http, "alice@a.example")
    token = csrf(alice.get("/admin/agents").text)
    done = alice.post(f"/admin/agents/{ids['agent_id']}/deactivate", data={"csrf": token})
    assert done.status_code == 303
    assert bob.get("/inbox").status_code == 303
    assert bob.get("/console/events").status_code == 303
    note = bob.post(f"/conversations/{world.conv_a}/messages", data={"csrf": bob_token, **FORGED})
    assert note.status_code == 303 and note.headers["location"].startswith("/signin")


def test_reactivating_an_agent_does_not_revive_what_they_held(
    world_a: tuple[World, dict[str, Any]],
) -> None:
    """Deactivation is how an admin locks out a lost laptop: when the agent is let back in,
    the old cookie and a link mailed before stay dead; they sign in afresh."""
    world, ids = world_a
    http = world.http
    bob = signed_in(http, "bob@a.example")
    link = link_secret(http, "bob@a.example")
    alice = signed_in(http, "alice@a.example")
    token = csrf(alice.get("/admin/agents").text)
    for change in ("deactivate", "activate"):
        url = f"/admin/agents/{ids['agent_id']}/{change}"
        assert alice.post(url, data={"csrf": token}).status_code == 303
    assert bob.get("/inbox").status_code == 303
    stranger = httpx.Client(base_url=http.url, timeout=30)
    assert stranger.post("/signin/link", data={"t": link}).status_code == 410
    fresh = link_secret(http, "bob@a.example")
    assert stranger.post("/signin/link", data={"t": fresh}).status_code == 303


def test_a_new_password_ends_the_agents_other_sessions(
    world_a: tuple[World, dict[str, Any]],
) -> None:
    world, _ = world_a
    here, elsewhere = (signed_in(world.http, "bob@a.example") for _ in range(2))
    form = {"csrf": csrf(here.get("/account").text), "password": PASSWORD, "again": PASSWORD}
    assert here.post("/account/password", data=form).status_code == 200
    assert here.get("/account").status_code == 200
    assert elsewhere.get("/account").status_code == 303


def test_an_open_live_stream_ends_with_its_session(
    world_a: tuple[World, dict[str, Any]],
) -> None:
    """A page left open keeps /console/events running: deactivating the agent (or signing
    out elsewhere) ends it before it tells of the next change in the app."""
    world, ids = world_a
    http = world.http
    bob = signed_in(http, "bob@a.example")
    alice = signed_in(http, "alice@a.example")
    token = csrf(alice.get("/admin/agents").text)
    lines: list[str] = []
    started = time.monotonic()
    with bob.stream("GET", "/console/events", timeout=20) as stream:
        for line in stream.iter_lines():
            lines.append(line)
            if line.startswith("event: hello"):
                url = f"/admin/agents/{ids['agent_id']}/deactivate"
                assert alice.post(url, data={"csrf": token}).status_code == 303
                note = {"csrf": token, "kind": "note", "text": "while bob is out"}
                assert alice.post(f"/conversations/{world.conv_a}/messages", data=note)
    assert time.monotonic() - started < 10  # it ended rather than running its 55 s
    assert "event: change" not in lines


def test_a_used_sign_in_link_does_not_sign_in_another_browser(
    world_a: tuple[World, dict[str, Any]],
) -> None:
    world, _ = world_a
    http = world.http
    secret = link_secret(http, "bob@a.example")
    first = httpx.Client(base_url=http.url, timeout=30)
    used = first.post("/signin/link", data={"t": secret})
    assert used.status_code == 303 and COOKIE in used.cookies
    second = httpx.Client(base_url=http.url, timeout=30)
    again = second.post("/signin/link", data={"t": secret})
    assert again.status_code == 410 and COOKIE not in again.cookies
    assert "already used" in again.text
    assert second.get(f"/signin/link?t={secret}").status_code == 410
    assert second.get("/inbox").status_code == 303


def _median_seconds(send: Any, n: int = 5) -> float:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        send()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def test_sign_in_answers_do_not_tell_whether_an_address_is_an_agent(
    world_a: tuple[World, dict[str, Any]],
) -> None:
    world, _ = world_a
    http = world.http
    client = httpx.Client(base_url=http.url, timeout=30)
    pre = pre_token(client)

    def password(email: str) -> httpx.Response:
        return client.post(
            "/signin/password", data={"email": email, "password": "not it 123", "pre": pre}
        )

    def link(email: str) -> httpx.Response:
        return client.post("/signin/email", data={"email": email, "pre": pre})

    def same(a: httpx.Response, b: httpx.Response, a_addr: str, b_addr: str) -> None:
        assert a.status_code == b.status_code
        assert a.text.replace(a_addr, "ADDRESS") == b.text.replace(b_addr, "ADDRESS")

    agent, nobody = "alice@a.example", "nobody@a.example"
    same(password(agent), password(nobody), agent, nobody)
    same(link(agent), link(nobody), agent, nobody)
    # An agent without a password (bob) is refused like a stranger.
    same(password("bob@a.example"), password(nobody), "bob@a.example", nobody)

    # Timing: the same order of magnitude (a password check for a stranger hashes a decoy).
    # Separate addresses so the per-address rate limit does not answer first.
    for ask, known in ((password, agent), (link, "bob@a.example")):
        slow = _median_seconds(lambda: ask(known))  # noqa: B023 (called at once)
        fast = _median_seconds(lambda: ask(f"stranger-{ask.__name__}@b.example"))  # noqa: B023
        assert max(slow, fast) / min(slow, fast) < 5, (ask.__name__, slow, fast)
