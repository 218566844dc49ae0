"""`/docs` (Swagger UI) and `/redoc` (ReDoc), served whole by the gateway: no CDN, so they work
on a machine without internet and under the pages' Content-Security-Policy.

The viewers' own scripts and styles are package data of `fastapi-offline` (a dependency that
ships current Swagger UI and ReDoc builds; we use its files, not its app factory). The pages
are templates/docs/*.html and their start-up code is a static file (templates/static/docs.js),
because the policy allows no inline script. ReDoc styles itself with `<style>` elements it
writes at run time, so its page alone allows inline style (never inline script).
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

import jinja2
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse

from gateway.http.security_headers import CSP_HEADER, page_policy

router = APIRouter(include_in_schema=False)

ASSETS_PATH = "/docs/assets"
# Only these files of the package are served: nothing else of site-packages is reachable.
_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}


def _assets_dir() -> Path:
    return Path(str(resources.files("fastapi_offline") / "static"))


@cache
def _template(name: str) -> jinja2.Template:
    source = (resources.files("templates") / "docs" / name).read_text(encoding="utf-8")
    return jinja2.Environment(autoescape=True).from_string(source)


def _page(request: Request, name: str, policy: str) -> HTMLResponse:
    app = request.app
    html = _template(name).render(title=app.title, openapi_url=app.openapi_url, assets=ASSETS_PATH)
    return HTMLResponse(html, headers={CSP_HEADER: policy})


@router.get("/docs", response_class=HTMLResponse)
def swagger_ui(request: Request) -> HTMLResponse:
    return _page(request, "swagger.html", page_policy())


# ReDoc writes its styles as <style> elements, and runs its search index in a Worker it makes
# from a Blob: both are allowed on this page only. Scripts stay same-origin files.
_REDOC_POLICY = (
    page_policy().replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")
    + "; worker-src blob:"
)


@router.get("/redoc", response_class=HTMLResponse)
def redoc(request: Request) -> HTMLResponse:
    return _page(request, "redoc.html", _REDOC_POLICY)


@router.get(ASSETS_PATH + "/{name}")
def asset(name: str) -> FileResponse:
    media_type = _ASSETS.get(name)
    if media_type is None:
        raise HTTPException(404, "no such file")
    # Large and the same for everyone until the package is upgraded: let browsers keep them.
    return FileResponse(
        _assets_dir() / name,
        media_type=media_type,
        headers={"Cache-Control": "public, max-age=86400"},
    )
