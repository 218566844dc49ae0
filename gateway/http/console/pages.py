"""Rendering of the console's pages: one Jinja2 environment over `templates/console/`.

Every page extends `base.html`, which loads `/static/console.css` and `/static/console.js` (no
inline script or style: the pages run under the policy of gateway/http/security_headers.py).
Text is autoescaped; what people wrote is shown as text, never as HTML.
"""

from __future__ import annotations

import datetime as dt
from functools import cache
from importlib import resources
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse

from gateway.http.console.session import Viewer


@cache
def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resources.files("templates") / "console")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = when
    return env


def when(value: dt.datetime | None) -> str:
    """A time as agents read it in lists: UTC, to the minute."""
    if value is None:
        return ""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def render(
    request: Request,
    template: str,
    viewer: Viewer | None,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    html = _env().get_template(template).render(viewer=viewer, path=request.url.path, **context)
    return HTMLResponse(html, status_code=status)
