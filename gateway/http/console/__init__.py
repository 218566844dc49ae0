"""The agent console: server-rendered pages for signing in, the Inbox and Tickets tabs, a
conversation, and the admin pages. `install(app)` adds its routes and the answers a browser
understands (a redirect to sign in, an HTML page for a refusal).

Each area is a module with an `APIRouter` named `router`; adding one is a line in `_AREAS`.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import HTTPException as FastAPIHTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException

from gateway.http.console import (
    admin_agents,
    admin_channels,
    admin_sla,
    conversation,
    conversation_actions,
    lists,
    live,
    sign_in_pages,
    trackers,
)
from gateway.http.console.pages import render
from gateway.http.console.session import SignInRequired, optional_viewer

_AREAS = (
    sign_in_pages,
    live,
    lists,
    admin_channels,
    admin_agents,
    admin_sla,
    conversation,
    conversation_actions,
    trackers,
)


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "") and not request.url.path.startswith(
        ("/api/", "/widget/api/")
    )


def install(app: FastAPI) -> None:
    for area in _AREAS:
        app.include_router(area.router)

    async def sign_in_required(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignInRequired)
        return RedirectResponse(exc.location, status_code=303)

    app.add_exception_handler(SignInRequired, sign_in_required)

    # A browser gets a page it can read, with the console around it when signed in; an API
    # client keeps its JSON.
    async def error_page(request: Request, status: int, detail: str) -> Response:
        runtime = request.app.state.runtime
        viewer = await optional_viewer(request, runtime)
        detail = detail[:1].upper() + detail[1:]
        if not detail.endswith((".", "!", "?")):
            detail += "."
        return render(
            request, "error.html", viewer, status=status, status_code=status, detail=detail
        )

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if not _wants_html(request):
            return JSONResponse(
                {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
            )
        page = await error_page(request, exc.status_code, str(exc.detail))
        page.headers.update(exc.headers or {})
        return page

    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(FastAPIHTTPException, http_error)

    as_json = app.exception_handlers[RequestValidationError]

    async def invalid_request(request: Request, exc: Exception) -> Response:
        if not _wants_html(request):
            answer = as_json(request, exc)
            return answer if isinstance(answer, Response) else await answer
        # A mistyped address (/conversations/abc) is "not found" to a person.
        return await error_page(request, 404, "there is no such page in the console")

    app.add_exception_handler(RequestValidationError, invalid_request)
