"""POST /api/v1/conversations/{id}/tell-linked: from a tracker, tell every linked customer.

The work is `tickets.trackers.tell_linked` in one unit of work; the messages then go on as
every reply does (the widget, or email after the grace period, sent by the scheduler's sweep).
The console's form (gateway/http/console/trackers.py) calls `tell` here too.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from gateway.http.agent_api import ConversationId
from gateway.http.auth import CallerDep, Work, work
from gateway.http.deps import RuntimeDep
from gateway.http.schemas import Body, Text, problems
from tickets import services, trackers

router = APIRouter(prefix="/api/v1", tags=["agent"], responses=problems(400, 401, 404, 409))

Language = Annotated[str, Field(pattern=r"^[a-z]{2}$")]


class TellIn(Body):
    text: str = Text
    versions: dict[Language, Annotated[str, Field(max_length=100_000)]] = Field(
        default={},
        max_length=20,
        description="The message in other languages, by language code (de, fr, es, ...): each "
        "customer gets the version of their language, else `text`.",
    )
    key: str | None = Field(
        default=None,
        max_length=100,
        description="Names the request: the same key again within a day posts nothing more "
        "and answers as the first time (a double click, a retried request).",
    )


class ToldOut(BaseModel):
    conversation: int
    customer: str
    route: str = Field(description="email (unless read in the widget first) or widget")


class NotToldOut(BaseModel):
    conversation: int
    customer: str
    reason: str | None


class TellOut(BaseModel):
    told: list[ToldOut]
    not_told: list[NotToldOut]
    repeated: bool = Field(description="true: the same key again, nothing new was posted")


def tell(
    w: Work, conversation_id: int, text: str, versions: dict[str, str], key: str | None
) -> trackers.Told:
    conversation = services.get_conversation(w.session, w.app, conversation_id)
    tracker = trackers.require_tracker(conversation.ticket, conversation_id)
    return trackers.tell_linked(
        w.session,
        tracker,
        w.agent,
        text,
        w.now,
        versions=versions,
        key=key,
        app_default_locale=w.app.default_locale,
    )


@router.post("/conversations/{conversation_id}/tell-linked", response_model=TellOut)
def tell_linked(
    runtime: RuntimeDep, caller: CallerDep, conversation_id: ConversationId, body: TellIn
) -> dict[str, Any]:
    """From a tracker: post one message in every linked customer's own conversation (in their
    language when a version for it is given) and answer who was told, by which route, and who
    could not be reached. Recorded on each conversation and on the tracker."""
    with work(runtime, caller) as w:
        return tell(w, conversation_id, body.text, dict(body.versions), body.key).to_json()
