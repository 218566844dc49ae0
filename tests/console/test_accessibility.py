"""Every console page, in Chromium, as an admin: each field has an accessible name, each piece
of text has a contrast of at least 4.5:1 against what is really behind it, and the keyboard
reaches every link, button and field in document order with a visible focus mark.

The checks run in the page (tests/console/a11y.js): contrast from getComputedStyle, with the
background composited from the root down to the text's element; the keyboard walk presses Tab
and records where focus lands.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.support.api_world import World
from tests.support.browser import screenshot, watch
from tests.support.console import browser_signed_in
from tickets import services, sign_in
from tickets.models import Agent, Channel

CHECKS = (Path(__file__).parent / "a11y.js").read_text(encoding="utf-8")


def _pages(world: World) -> list[str]:
    runtime = world.http.runtime
    with runtime.unit_of_work() as s:
        app = services.get_app(s, "demo")
        alice = s.scalars(select(Agent).where(Agent.email == "alice@a.example")).one()
        conversation = services.get_conversation(s, app, world.conv_a)
        services.convert(s, conversation, alice, runtime.clock(), type="customer")
        other = services.get_conversation(s, app, world.conv_a2)
        services.convert(s, other, alice, runtime.clock(), type="tracker")
        channel = s.scalars(select(Channel.id).where(Channel.app_id == app.id)).first()
    return [
        "/conversations/2147483647",  # the refusal page
        "/inbox",
        "/tickets",
        f"/conversations/{world.conv_a}",
        f"/conversations/{world.conv_a2}",
        "/admin/channels",
        f"/admin/channels/{channel}",
        "/admin/agents",
        "/admin/sla",
        "/account",
    ]


def check(page: Any, url: str) -> dict[str, list[str]]:
    page.goto(url)
    page.wait_for_load_state("load")
    found: dict[str, list[str]] = page.evaluate(CHECKS + "\nchecks()")
    reachable = page.evaluate("markFocusable()")
    order: list[int] = []
    unmarked: list[str] = []
    for _ in range(3 * reachable + 10):
        page.keyboard.press("Tab")
        stop = page.evaluate("focusStop()")
        if stop is None:
            break
        index, problem = stop
        if order and index == order[-1]:
            continue  # a date field's parts are stops of one field
        if index in order:
            break  # round again
        order.append(index)
        if problem:
            where = page.evaluate("describe(document.activeElement)")
            unmarked.append(f"{where}: {problem}")
    missed = page.evaluate(f"missed({order})")
    found["unreached by Tab"] = missed
    found["Tab order not document order"] = (
        [str(order)] if [i for i in order if i >= 0] != sorted(i for i in order if i >= 0) else []
    )
    found["no visible focus"] = unmarked
    return {k: v for k, v in found.items() if v}


@pytest.mark.parametrize("who", ["anonymous", "admin"])
def test_console_pages_are_labelled_legible_and_keyboard_operable(
    world: World, browser: Any, who: str
) -> None:
    http = world.http
    if who == "anonymous":
        page = browser.new_context().new_page()
        with http.runtime.unit_of_work() as s:
            bob = s.scalars(select(Agent).where(Agent.email == "bob@a.example")).one()
            link = sign_in.issue_link(s, bob, http.runtime.clock())
        urls = ["/signin", f"/signin/link?t={link}", "/signin/link?t=used-or-wrong"]
    else:
        page = browser_signed_in(browser, http, "alice@a.example")
        urls = _pages(world)
    problems = watch(page)
    failures = {}
    for url in urls:
        found = check(page, http.url + url)
        if found:
            failures[url] = found
        screenshot(page, "a11y" + re.sub(r"[^\w]+", "-", url.split("?t=")[0]))
    assert failures == {}, json.dumps(failures, indent=1)
    # The refusal pages themselves are logged as a failed load (410, 404), nothing else.
    refused = [p for p in problems if re.search(r"status of (404|410)\b", p)]
    assert len(refused) == sum(1 for u in urls if "wrong" in u or "2147483647" in u)
    assert [p for p in problems if p not in refused] == []
