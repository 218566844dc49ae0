"""Security headers on every answer of the HTTP app, and the static assets its pages load.

Every page the gateway serves is built to run under a Content-Security-Policy that allows no
inline script and no inline style: scripts and styles are files of the package under
`templates/static/`, served from `/static/` on the same origin. Pages carry `Referrer-Policy:
no-referrer` and `Cache-Control: no-store`, because a widget link from an email carries the
conversation token in its query (`?c=...`): neither a Referer header, nor a shared cache, nor
the browser's disk cache must keep it.

Only the widget page may be framed, and only by the sites its app lists in
`widget_frame_ancestors` (the team's own site embeds it); every other page, the setup page and
error answers included, refuses to be framed at all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources

from fastapi import FastAPI, Request, Response
from starlette.staticfiles import StaticFiles

from gateway.config import GatewayConfig

CSP_HEADER = "Content-Security-Policy"

_PAGE_POLICY = (
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "form-action 'self'",
    "base-uri 'none'",
)


def page_policy(ancestors: str = "'none'") -> str:
    """The policy of a page of ours: same-origin files only, framed only by `ancestors`."""
    return "; ".join((*_PAGE_POLICY, f"frame-ancestors {ancestors}"))


def frame_ancestors(config: GatewayConfig, app_name: str) -> str:
    """Who may frame an app's widget page: the gateway itself, and the sites the app lists."""
    allowed = next((a.widget_frame_ancestors for a in config.apps if a.name == app_name), [])
    return " ".join(("'self'", *allowed))


_ALWAYS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def add_security_headers(app: FastAPI) -> None:
    """Headers for every response; a route that set its own policy (the widget) keeps it."""

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        headers = response.headers
        for name, value in _ALWAYS.items():
            headers.setdefault(name, value)
        if request.url.path.startswith("/static/"):
            return response
        headers.setdefault(CSP_HEADER, page_policy())
        if "frame-ancestors 'none'" in headers[CSP_HEADER]:
            headers.setdefault("X-Frame-Options", "DENY")  # for browsers without CSP level 2
        # Pages and answers may carry tokens (in the URL, or in a widget payload).
        headers.setdefault("Cache-Control", "no-store")
        return response

    static = resources.files("templates") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")
