"""The agent API, /api/v1/...: Inbox and Tickets, one conversation, and every team action on it.

Each handler authenticates the caller, opens one unit of work scoped to the caller's app, calls
a service of `tickets.services` and answers with the views of `gateway.views`. A conversation of
another app is answered exactly like a missing one (404), so ids cannot be probed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from pydantic import BaseModel
from sqlalchemy import select

from gateway.http.auth import Caller, CallerDep, Work, work
from gateway.http.deps import RuntimeDep
from gateway.http.schemas import (
    AssignIn,
    CategoryIn,
    ConversationOut,
    ConvertedOut,
    ConvertIn,
    MeOut,
    MessageCreated,
    NoteOut,
    Page,
    ParticipantIn,
    Priority,
    PriorityIn,
    SnoozeIn,
    State,
    Status,
    StatusIn,
    TagIn,
    TextIn,
    TicketType,
    TrackerIn,
    check_text,
    problems,
)
from gateway.runtime import Runtime
from gateway.views import conversation_detail, conversation_summary
from tickets import participants, services
from tickets.business_time import parse_duration
from tickets.errors import InvalidValue
from tickets.models import Agent, Conversation, Event

router = APIRouter(prefix="/api/v1", tags=["agent"], responses=problems(400, 401, 404, 409))

CustomerQuery = Annotated[str | None, Query(max_length=320, description="customer email")]
TextQuery = Annotated[str | None, Query(max_length=200, description="text in subject or messages")]
Limit = Annotated[int, Query(ge=1, le=services.MAX_PAGE)]
Offset = Annotated[int, Query(ge=0, le=2**31 - 1)]
ConversationId = Annotated[int, Path(ge=1, le=2**31 - 1, description="conversation id")]


def _text_query(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return check_text(value)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None


def _filters(
    state: State | None = None,
    status: Status | None = None,
    priority: Priority | None = None,
    type: TicketType | None = None,
    category: Annotated[str | None, Query(max_length=100)] = None,
    assignee: Annotated[str | None, Query(max_length=320, description="agent email")] = None,
    unassigned: bool = False,
    tag: Annotated[str | None, Query(max_length=100)] = None,
    customer: CustomerQuery = None,
    q: TextQuery = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> dict[str, Any]:
    return {
        "state": state,
        "status": status,
        "priority": priority,
        "type": type,
        "category": _text_query(category),
        "assignee": _text_query(assignee),
        "unassigned": unassigned,
        "tag": _text_query(tag),
        "customer_email": _text_query(customer),
        "text": _text_query(q),
        "limit": limit,
        "offset": offset,
    }


Filters = Annotated[dict[str, Any], Depends(_filters)]


def _page(w: Work, view: str, filters: dict[str, Any]) -> dict[str, Any]:
    assignee = filters.pop("assignee")
    if assignee is not None:
        agent = w.session.scalar(
            select(Agent).where(Agent.app_id == w.app.id, Agent.email == assignee.strip().lower())
        )
        # An agent that does not exist has nothing assigned: an empty page, not an error.
        filters["assignee_id"] = agent.id if agent else -1
    f = services.ListFilter(view=view, **filters)  # type: ignore[arg-type]
    rows, more = services.conversation_page(w.session, w.app, f)
    return {
        "items": [conversation_summary(c) for c in rows],
        "limit": f.limit,
        "offset": f.offset,
        "next_offset": f.offset + f.limit if more else None,
    }


@router.get("/me", response_model=MeOut)
def me(runtime: RuntimeDep, caller: CallerDep) -> dict[str, Any]:
    """The agent the token belongs to."""
    with work(runtime, caller) as w:
        a = w.agent
        return {
            "id": a.id,
            "email": a.email,
            "name": a.name,
            "role": a.role.value,
            "app": w.app.name,
        }


@router.get("/inbox", response_model=Page)
def inbox(runtime: RuntimeDep, caller: CallerDep, filters: Filters) -> dict[str, Any]:
    """Every conversation of the app, converted or not, most recently active first."""
    with work(runtime, caller) as w:
        return _page(w, "inbox", filters)


@router.get("/tickets", response_model=Page)
def tickets(runtime: RuntimeDep, caller: CallerDep, filters: Filters) -> dict[str, Any]:
    """The converted conversations only."""
    with work(runtime, caller) as w:
        return _page(w, "tickets", filters)


@router.get("/search", response_model=Page)
def search(
    runtime: RuntimeDep,
    caller: CallerDep,
    customer: CustomerQuery = None,
    q: TextQuery = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Conversations by customer address and/or text; at least one of the two."""
    if not (customer or "").strip() and not (q or "").strip():
        raise HTTPException(400, "search needs a customer address or a text (q)")
    filters = _filters(customer=customer, q=q, limit=limit, offset=offset)
    with work(runtime, caller) as w:
        return _page(w, "inbox", filters)


def _conversation(w: Work, conversation_id: int) -> Conversation:
    return services.get_conversation(w.session, w.app, conversation_id)


def _detail(w: Work, conversation: Conversation) -> dict[str, Any]:
    w.session.flush()
    events = w.session.scalars(
        select(Event).where(Event.conversation_id == conversation.id).order_by(Event.id)
    ).all()
    return conversation_detail(conversation, list(events))


@router.get("/conversations/{conversation_id}", response_model=ConversationOut)
def show(runtime: RuntimeDep, caller: CallerDep, conversation_id: ConversationId) -> dict[str, Any]:
    """The team's full view: messages, notes, the ticket layer and the history of changes."""
    with work(runtime, caller) as w:
        return _detail(w, _conversation(w, conversation_id))


def _agent_by_email(w: Work, email: str) -> Agent:
    return services.find_agent(w.session, w.app, email)


@router.post(
    "/conversations/{conversation_id}/convert", response_model=ConvertedOut, status_code=201
)
def convert(
    runtime: RuntimeDep, caller: CallerDep, conversation_id: ConversationId, body: ConvertIn
) -> dict[str, Any]:
    """Put the ticket layer on a conversation; it stays in the Inbox and shows under Tickets.

    The answer carries the convert-time check's warning when the customer cannot be reached by
    email (converting proceeds anyway).
    """
    with work(runtime, caller) as w:
        conversation = _conversation(w, conversation_id)
        assignee = _agent_by_email(w, body.assignee) if body.assignee else None
        ticket = services.convert(
            w.session,
            conversation,
            w.agent,
            w.now,
            type=body.type,
            priority=body.priority,
            assignee=assignee,
            category=body.category,
        )
        ticket_id = ticket.id
    # The conversion is committed; the check runs now so the answer can carry its warning (if it
    # fails here, the background sweep runs it later and the ticket shows it then).
    from gateway.background import run_email_check

    check = run_email_check(runtime, ticket_id)
    with work(runtime, caller) as w:
        data = _detail(w, _conversation(w, conversation_id))
    data["warning"] = (
        f"{check.get('reason')} ({check.get('setup_url')})"
        if check and not check.get("ok")
        else None
    )
    return data


@router.post(
    "/conversations/{conversation_id}/replies", response_model=MessageCreated, status_code=201
)
def reply(
    runtime: RuntimeDep, caller: CallerDep, conversation_id: ConversationId, body: TextIn
) -> dict[str, Any]:
    """A public reply: the customer sees it in the widget, or by email once they have left."""
    with work(runtime, caller) as w:
        message = services.add_agent_message(
            w.session, _conversation(w, conversation_id), w.agent, body.text, w.now
        )
        return {"id": message.id, "created_at": message.created_at}


@router.post("/conversations/{conversation_id}/notes", response_model=NoteOut, status_code=201)
def note(
    runtime: RuntimeDep, caller: CallerDep, conversation_id: ConversationId, body: TextIn
) -> dict[str, Any]:
    """An internal note: team only, it never reaches the customer."""
    with work(runtime, caller) as w:
        n = services.add_note(
            w.session, _conversation(w, conversation_id), w.agent, body.text, w.now
        )
        return {"id": n.id, "author": w.agent.email, "text": n.text, "created_at": n.created_at}


def _ticket_action(
    runtime: Runtime,
    caller: Caller,
    conversation_id: int,
    act: Callable[[Work, Conversation], None],
) -> dict[str, Any]:
    with work(runtime, caller) as w:
        conversation = _conversation(w, conversation_id)
        act(w, conversation)
        return _detail(w, conversation)


def _actor(w: Work) -> services.Actor:
    return services.Actor.agent(w.agent)


def _action(
    method: str, name: str, model: type[BaseModel], doc: str
) -> Callable[[Callable[[Work, Conversation, Any], None]], None]:
    """Register `METHOD /conversations/{id}/NAME` taking a `model` body and answering with the
    conversation after `act` changed it: one place for auth, scoping and the answer."""

    def register(act: Callable[[Work, Conversation, Any], None]) -> None:
        def endpoint(
            runtime: RuntimeDep, caller: CallerDep, conversation_id: ConversationId, body: Any
        ) -> dict[str, Any]:
            return _ticket_action(runtime, caller, conversation_id, lambda w, c: act(w, c, body))

        endpoint.__annotations__ = {**endpoint.__annotations__, "body": model}
        endpoint.__doc__ = doc
        router.add_api_route(
            f"/conversations/{{conversation_id}}/{name}",
            endpoint,
            methods=[method],
            response_model=ConversationOut,
            name=act.__name__,
            operation_id=act.__name__,
        )

    return register


@_action("PUT", "assignee", AssignIn, "Assign the ticket to an agent (by email), or unassign.")
def assign(w: Work, c: Conversation, body: AssignIn) -> None:
    agent = _agent_by_email(w, body.assignee) if body.assignee else None
    services.assign(w.session, services.require_ticket(c), agent, _actor(w), w.now)


@_action("PUT", "status", StatusIn, "Set the ticket's status; resolved resolves the conversation.")
def set_status(w: Work, c: Conversation, body: StatusIn) -> None:
    services.set_status(w.session, services.require_ticket(c), body.status, _actor(w), w.now)


@_action("PUT", "priority", PriorityIn, "Set the ticket's priority.")
def set_priority(w: Work, c: Conversation, body: PriorityIn) -> None:
    services.set_priority(w.session, services.require_ticket(c), body.priority, _actor(w), w.now)


@_action("PUT", "category", CategoryIn, "Set the ticket's category; null clears it.")
def set_category(w: Work, c: Conversation, body: CategoryIn) -> None:
    services.set_category(w.session, services.require_ticket(c), body.category, _actor(w), w.now)


@_action("POST", "tags", TagIn, "Tag the conversation (one word, lowercased).")
def add_tag(w: Work, c: Conversation, body: TagIn) -> None:
    services.add_tag(w.session, c, body.tag, _actor(w), w.now)


@_action("POST", "snooze", SnoozeIn, "Hide the conversation until a time or the next message.")
def snooze(w: Work, c: Conversation, body: SnoozeIn) -> None:
    services.snooze(w.session, c, _snooze_until(body, w.now), _actor(w), w.now)


@_action("PUT", "tracker", TrackerIn, "Link a customer ticket to a tracker ticket; null unlinks.")
def link_tracker(w: Work, c: Conversation, body: TrackerIn) -> None:
    tracker = None
    if body.tracker is not None:
        tracker = services.require_ticket(_conversation(w, body.tracker))
    services.link_to_tracker(w.session, services.require_ticket(c), tracker, _actor(w), w.now)


@router.delete("/conversations/{conversation_id}/tags/{tag}", response_model=ConversationOut)
def remove_tag(
    runtime: RuntimeDep,
    caller: CallerDep,
    conversation_id: ConversationId,
    tag: Annotated[str, Path(max_length=100)],
) -> dict[str, Any]:
    clean = _text_query(tag) or ""
    return _ticket_action(
        runtime,
        caller,
        conversation_id,
        lambda w, c: services.remove_tag(w.session, c, clean, _actor(w), w.now),
    )


@router.post("/conversations/{conversation_id}/participants", response_model=ConversationOut)
def add_participant(
    runtime: RuntimeDep, caller: CallerDep, conversation_id: ConversationId, body: ParticipantIn
) -> dict[str, Any]:
    """Copy someone on the conversation's emails; their answers thread in. Not a support
    address nor an agent (400); at most `[limits] max_participants` (409)."""
    limit = runtime.config.limits.max_participants
    return _ticket_action(
        runtime,
        caller,
        conversation_id,
        lambda w, c: _add_participant(w, c, body, limit),
    )


def _add_participant(w: Work, c: Conversation, body: ParticipantIn, limit: int) -> None:
    participants.add(w.session, c, body.email, _actor(w), w.now, name=body.name, limit=limit)


@router.delete(
    "/conversations/{conversation_id}/participants/{email}", response_model=ConversationOut
)
def remove_participant(
    runtime: RuntimeDep,
    caller: CallerDep,
    conversation_id: ConversationId,
    email: Annotated[str, Path(max_length=320)],
) -> dict[str, Any]:
    """Copy them no longer; their answers no longer thread in."""
    clean = _text_query(email) or ""
    return _ticket_action(
        runtime,
        caller,
        conversation_id,
        lambda w, c: participants.remove(w.session, c, clean, _actor(w), w.now),
    )


@router.post("/conversations/{conversation_id}/resolve", response_model=ConversationOut)
def resolve(
    runtime: RuntimeDep, caller: CallerDep, conversation_id: ConversationId
) -> dict[str, Any]:
    """Resolve the conversation (and its ticket); a customer message reopens it."""
    return _ticket_action(
        runtime,
        caller,
        conversation_id,
        lambda w, c: services.resolve(w.session, c, _actor(w), w.now),
    )


def _snooze_until(body: SnoozeIn, now: dt.datetime) -> dt.datetime:
    if (body.until is None) == (body.duration is None):
        raise InvalidValue("snooze needs exactly one of until or duration")
    if body.duration is not None:
        return now + parse_duration(body.duration)  # SnoozeIn has checked it
    assert body.until is not None
    return body.until if body.until.tzinfo else body.until.replace(tzinfo=dt.UTC)
