"""/docs and /redoc in Debian's chromium with every request recorded: both viewers render the
API from files the gateway serves itself, and nothing is fetched from anywhere else (a machine
without internet sees the same pages)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from tests.support.browser import watch
from tests.support.http import RunningHttp


def open_offline(browser: Any, http: RunningHttp, path: str) -> tuple[Any, list[str], list[str]]:
    """The page at `path`; every URL it asked for, and its console errors and CSP violations.
    A request for another host is recorded and refused, as it would fail without internet."""
    context = browser.new_context()
    requested: list[str] = []

    def gate(route: Any) -> None:
        url = route.request.url
        requested.append(url)
        if urlsplit(url).hostname == "127.0.0.1" or url.startswith("data:"):
            route.continue_()
        else:
            route.abort()

    context.route("**/*", gate)
    page = context.new_page()
    problems = watch(page)
    page.goto(http.url + path)
    return page, requested, problems


def elsewhere(requested: list[str], http: RunningHttp) -> list[str]:
    ours = urlsplit(http.url).netloc
    return [u for u in requested if urlsplit(u).netloc != ours and not u.startswith("data:")]


def test_swagger_ui_lists_the_operations_offline(browser, http_api):
    page, requested, problems = open_offline(browser, http_api, "/docs")
    page.wait_for_selector(".opblock-summary-path")
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert len(paths) > 20 and any("/api/v1/inbox" in p.replace("\u200b", "") for p in paths)
    assert page.inner_text(".info .title").startswith("Support email gateway")
    page.locator(".opblock-summary").first.click()  # an operation opens, with its parameters
    page.wait_for_selector(".opblock-body")
    assert elsewhere(requested, http_api) == [], requested
    assert any(u.endswith("/openapi.json") for u in requested)
    assert problems == []


def test_redoc_renders_the_reference_offline(browser, http_api):
    page, requested, problems = open_offline(browser, http_api, "/redoc")
    page.wait_for_selector("h1:has-text('Support email gateway')")
    page.wait_for_selector("[data-section-id^='tag/']")  # the operations, grouped by tag
    assert page.locator("[data-section-id^='operation/']").count() > 20
    assert "/api/v1/inbox" in page.inner_text("body")
    assert elsewhere(requested, http_api) == [], requested
    # ReDoc's "API docs by Redocly" line hard-codes a logo on Redocly's CDN: the page's policy
    # (img-src 'self') stops it before any request (none is recorded above), and ReDoc hides
    # the image that failed. Everything else must run clean.
    logo = "https://cdn.redoc.ly/redoc/logo-mini.svg"
    # (watch() reports each violation twice: the browser's message, naming the URL, and the
    # page's event, naming only the directive; any other blocked image has a message of its own.)
    rest = [p for p in problems if logo not in p and p != "console error: CSP violation: img-src"]
    assert rest == [], problems


def test_only_the_viewers_files_are_served(http_api):
    with http_api.client() as client:
        ok = client.get("/docs/assets/swagger-ui.css")
        assert ok.status_code == 200 and ok.headers["content-type"].startswith("text/css")
        for name in ("__init__.py", "..%2Fcore.py", "../core.py"):
            assert client.get(f"/docs/assets/{name}").status_code == 404
