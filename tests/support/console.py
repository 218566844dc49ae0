"""Signed-in console clients for tests of the pages: an httpx client or a browser context
carrying a real session cookie of an agent, and the CSRF token a page's forms carry.

Sign-in itself is tested through its pages (tests/integration/test_console_sign_in.py); other
page tests start from a session made the same way the sign-in does (`tickets.sign_in`).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import select

from gateway.http.console.session import COOKIE
from tests.support.http import RunningHttp
from tickets import sign_in
from tickets.models import Agent


def session_secret(http: RunningHttp, email: str) -> str:
    runtime = http.runtime
    with runtime.unit_of_work() as session:
        agent = session.scalars(select(Agent).where(Agent.email == email)).one()
        return sign_in.start_session(session, agent, runtime.clock())


def signed_in(http: RunningHttp, email: str) -> httpx.Client:
    """An httpx client signed in as agent `email` (it does not follow redirects)."""
    client = httpx.Client(base_url=http.url, timeout=30)
    client.cookies.set(
        COOKIE, session_secret(http, email), domain=urlsplit(http.url).hostname or ""
    )
    return client


def browser_signed_in(browser: Any, http: RunningHttp, email: str) -> Any:
    """A Playwright page in a fresh browser context signed in as agent `email`."""
    context = browser.new_context()
    context.add_cookies([{"name": COOKIE, "value": session_secret(http, email), "url": http.url}])
    return context.new_page()


def csrf(html: str) -> str:
    """The CSRF token of the first console form on a page."""
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "the page has no console form"
    return found.group(1)
