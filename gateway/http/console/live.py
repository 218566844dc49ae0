"""`/console/events`: a server-sent event stream that tells a console page something changed
in its app (new mail, a reply, a status), so the page refreshes its lists without a reload.

The signal is the app's newest event id, read once a second from the database, so it works
whichever process stored the change (an ingress node, a worker). A stream ends after
`STREAM_SECONDS`; the browser's EventSource reconnects by itself, so no stream outlives a
restart by long or holds a server's shutdown.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy import select

from gateway.http.console.session import COOKIE, ViewerDep
from gateway.http.deps import RuntimeDep
from gateway.runtime import Runtime
from tickets import sign_in
from tickets.models import Event

router = APIRouter(include_in_schema=False)

POLL_SECONDS = 1.0
STREAM_SECONDS = 55.0
KEEPALIVE_SECONDS = 15.0


def _newest(runtime: Runtime, app_id: int, secret: str) -> int | None:
    """The app's newest event id; None once the viewer's session has ended (signed out,
    deactivated, expired): a stream already open must not outlive it."""
    with runtime.reading() as session:
        if sign_in.agent_for_session(session, secret, runtime.clock()) is None:
            return None
        newest = session.scalar(
            select(Event.id).where(Event.app_id == app_id).order_by(Event.id.desc()).limit(1)
        )
    return int(newest or 0)


async def _stream(
    request: Request, runtime: Runtime, app_id: int, secret: str
) -> AsyncIterator[str]:
    seen = await run_in_threadpool(_newest, runtime, app_id, secret)
    yield f"retry: 1000\nevent: hello\ndata: {json.dumps({'event': seen})}\n\n"
    loop = asyncio.get_running_loop()
    started = last_sent = loop.time()
    while loop.time() - started < STREAM_SECONDS:
        await asyncio.sleep(POLL_SECONDS)
        if await request.is_disconnected():
            return
        newest = await run_in_threadpool(_newest, runtime, app_id, secret)
        if newest is None:
            return  # the browser reconnects, and is sent to sign in
        if newest != seen:
            seen, last_sent = newest, loop.time()
            yield f"event: change\ndata: {json.dumps({'event': seen})}\n\n"
        elif loop.time() - last_sent > KEEPALIVE_SECONDS:
            last_sent = loop.time()
            yield ": still here\n\n"


@router.get("/console/events")
def events(request: Request, runtime: RuntimeDep, viewer: ViewerDep) -> StreamingResponse:
    return StreamingResponse(
        _stream(request, runtime, viewer.caller.app_id, request.cookies.get(COOKIE, "")),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
