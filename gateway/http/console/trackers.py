"""Trackers in the console: from the tracker's conversation page, "Tell every linked customer".

(Linking a customer ticket to a tracker is a form of the conversation page's ticket panel.)
The conversation page includes `_tracker_panel.html` with `tracker_panel(...)` in its context.
The form posts here and come back to the conversation (POST-redirect-GET); the result or a
refusal is a fixed sentence chosen by a code in the query string, so a crafted link cannot put
words on the page. The tell form carries a key made when the page was drawn: a double click
sends the same key twice and posts once (tickets/trackers.py).
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse
from sqlalchemy.orm import Session

from gateway.http.auth import work
from gateway.http.console.session import FormDep, ViewerDep
from gateway.http.deps import RuntimeDep
from gateway.http.trackers_api import tell
from tickets import trackers
from tickets.errors import DomainError, NotFound
from tickets.models import Conversation, TicketType

router = APIRouter(include_in_schema=False)

ConversationId = Annotated[int, Path(ge=1, le=2**31 - 1)]
LISTED = 100  # linked conversations listed on the page; the preview counts them all
VERSIONS = {"de": "German", "fr": "French", "es": "Spanish"}

_PROBLEMS = {
    "empty": "Write the message first: it needs some text.",
    "long": "The message is too long (at most 100,000 characters).",
    "not-tracker": "Only a tracker can tell its linked customers.",
    "failed": "That did not work. Reload the page and try again.",
}


def tracker_panel(
    session: Session, conversation: Conversation, request: Request
) -> dict[str, Any] | None:
    """The context of `_tracker_panel.html` for a tracker's conversation: its linked customers,
    the preview and the tell form; None for any other conversation."""
    ticket = conversation.ticket
    if ticket is None or ticket.type != TicketType.TRACKER:
        return None
    query = request.query_params
    panel: dict[str, Any] = {
        "conversation_id": conversation.id,
        "problem": _PROBLEMS.get(query.get("tracker_problem") or ""),
    }
    items = trackers.linked(session, ticket)
    panel.update(
        linked=items[:LISTED],
        more=max(len(items) - LISTED, 0),
        preview=trackers.preview(items),
        key=secrets.token_urlsafe(16),
        versions=VERSIONS,
        told=_counts(query.get("told")),
    )
    return panel


def _counts(value: str | None) -> dict[str, int] | None:
    """`told=3.1.0`: told, not told, and whether it was the same request again."""
    parts = (value or "").split(".")
    if len(parts) != 3 or not all(p.isdigit() and len(p) < 8 for p in parts):
        return None
    return {"told": int(parts[0]), "not_told": int(parts[1]), "repeated": int(parts[2])}


def _back(conversation_id: int, **query: str) -> RedirectResponse:
    tail = "&".join(f"{k}={v}" for k, v in query.items())
    return RedirectResponse(
        f"/conversations/{conversation_id}{'?' + tail if tail else ''}#tracker", status_code=303
    )


def _problem(exc: DomainError) -> str:
    text = str(exc)
    if "needs text" in text:
        return "empty"
    if "at most" in text:
        return "long"
    if "not a tracker" in text:
        return "not-tracker"
    return "failed"


@router.post("/conversations/{conversation_id}/tell-linked")
async def tell_linked(
    runtime: RuntimeDep, viewer: ViewerDep, form: FormDep, conversation_id: ConversationId
) -> RedirectResponse:
    text = str(form.get("text") or "")
    versions = {lang: str(form.get(f"version_{lang}") or "") for lang in VERSIONS}
    key = str(form.get("key") or "")[:100] or None

    def act() -> trackers.Told:
        with work(runtime, viewer.caller) as w:
            return tell(w, conversation_id, text, versions, key)

    try:
        told = await run_in_threadpool(act)
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except DomainError as exc:
        return _back(conversation_id, tracker_problem=_problem(exc))
    counts = f"{len(told.told)}.{len(told.not_told)}.{int(told.repeated)}"
    return _back(conversation_id, told=counts)
