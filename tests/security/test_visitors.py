"""Attacks of anonymous widget visitors, replayed through the real HTTP server (and real mail).

- Every HTML page the gateway serves carries a Content-Security-Policy without inline script,
  frame-ancestors (the app's own list for the widget page), nosniff, no-referrer and no-store.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from gateway.config import embedded_default
from gateway.http.app import create_app
from tests.support.http import RunningHttp

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
    assert "/widget/demo" in paths and "/admin/channels/email/setup" in paths
    with http_api.client() as c:
        for path in paths:
            for url in (path, path + TOKEN_QUERY):
                r = c.get(url)
                assert r.status_code == 200, (url, r.status_code)
                assert_safe_page(r, ancestors="'self'" if path.startswith("/widget/") else "'none'")
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
        # The setup page is never framed, whatever an app allows for its widget.
        assert_safe_page(c.get("/admin/channels/email/setup"))


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
        finally:
            browser.close()
    violations = [m for m in console if "Content Security Policy" in m or "CSP" in m]
    assert violations == [] and not [m for m in console if m.startswith(("error", "pageerror"))]
