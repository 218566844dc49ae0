"""The HTTP application: `create_app(runtime)` builds the FastAPI app `gateway serve` runs.

Each area keeps its routes in its own module with an `APIRouter` named `router`; adding an area
is one import and one `include_router` line below. Handlers are thin: they take the runtime from
`deps`, open a unit of work, call a service and shape the answer with `gateway.views`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from gateway.http.security_headers import add_security_headers
from gateway.runtime import Runtime
from tickets.errors import DomainError, InvalidValue, NotAllowed, NotFound
from tickets.text import storable


def create_app(runtime: Runtime) -> FastAPI:
    app = FastAPI(
        # FastAPI's /docs and /redoc load their scripts from a CDN: ours (api_docs) serve them
        # from the package, under the pages' policy.
        docs_url=None,
        redoc_url=None,
        title="Support email gateway",
        version="1",
        description="Agent and admin API of the support email gateway.",
    )
    app.state.runtime = runtime
    _add_error_handlers(app)
    add_security_headers(app)

    from gateway.http import (
        admin_api,
        agent_api,
        api_docs,
        console,
        domains_api,
        health,
        metrics,
        trackers_api,
        widget,
    )

    app.include_router(health.router)
    app.include_router(api_docs.router)
    app.include_router(metrics.router)
    app.include_router(agent_api.router)
    app.include_router(trackers_api.router)
    app.include_router(admin_api.router)
    app.include_router(domains_api.router)
    app.include_router(widget.router)
    console.install(app)
    return app


# NotAllowed is a request that conflicts with the current state (already converted, not a
# ticket): 409. Role checks answer 403 themselves.
_STATUS = {NotFound: 404, NotAllowed: 409, InvalidValue: 400}


def _add_error_handlers(app: FastAPI) -> None:
    # A refusal from the domain is the caller's mistake: a 4xx with the domain's own message.
    async def domain_error(request: Request, exc: Exception) -> JSONResponse:
        status = next((code for cls, code in _STATUS.items() if isinstance(exc, cls)), 400)
        return JSONResponse({"detail": str(exc)}, status_code=status)

    app.add_exception_handler(DomainError, domain_error)

    # FastAPI's own handler echoes the rejected input, and a lone surrogate in it (a `\ud800`
    # escape in the JSON) cannot be encoded: the answer to bad input became a 500.
    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return JSONResponse({"detail": _encodable(jsonable_encoder(exc.errors()))}, 422)

    app.add_exception_handler(RequestValidationError, validation_error)


def _encodable(value: Any) -> Any:
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, list):
        return [_encodable(v) for v in value]
    if isinstance(value, dict):
        return {_encodable(k): _encodable(v) for k, v in value.items()}
    return value
