"""The forms of the conversation page: reply or note, convert, and each change of the ticket
panel, every one a small POST to its own route that calls the same service as the agent API and
answers with a redirect back to the page (POST-redirect-GET).

A refusal (a domain error, a value the API's schema refuses, a snooze time that cannot be read)
is shown on the page as a sentence, with the status the API would answer; nothing is changed.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from starlette.datastructures import FormData

from channels.email.agent_commands import CommandError, parse_when
from gateway.background import run_email_check
from gateway.http.auth import Work, work
from gateway.http.console.conversation import ConversationId, get_conversation, page
from gateway.http.console.session import FormDep, Viewer, ViewerDep
from gateway.http.deps import RuntimeDep
from gateway.http.schemas import (
    AssignIn,
    CategoryIn,
    ConvertIn,
    PriorityIn,
    StatusIn,
    TagIn,
    TextIn,
    TrackerIn,
)
from gateway.inbound import app_timezone
from gateway.runtime import Runtime
from tickets import services
from tickets.errors import DomainError, InvalidValue, NotAllowed
from tickets.models import Conversation
from tickets.text import storable

router = APIRouter(include_in_schema=False)

Act = Callable[[Work, Conversation], str | None]  # the `done` key of the redirect, if any
Action = Callable[[Work, Conversation, FormData, Runtime], str | None]
REFUSED = (DomainError, ValidationError, CommandError)


def _field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _or_none(form: FormData, name: str) -> str | None:
    return _field(form, name).strip() or None


def _sentence(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors()
        )
    text = str(exc).strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def _status(exc: Exception) -> int:
    if isinstance(exc, NotAllowed):
        return 409
    return 422 if isinstance(exc, ValidationError) else 400


def _act(
    request: Request,
    runtime: Runtime,
    viewer: Viewer,
    conversation_id: int,
    act: Act,
    after: Callable[[], object] | None = None,
    draft: dict[str, str] | None = None,
) -> Response:
    """Run `act` in one unit of work (then `after`, once it is committed); on a refusal
    nothing is kept and the page says why."""
    try:
        with work(runtime, viewer.caller) as w:
            done = act(w, get_conversation(w, conversation_id))
        if after is not None:
            after()
    except REFUSED as exc:
        with work(runtime, viewer.caller) as w:
            conversation = get_conversation(w, conversation_id)
            return page(
                request,
                runtime,
                viewer,
                w,
                conversation,
                problem=_sentence(exc),
                status=_status(exc),
                draft=draft,
            )
    where = f"/conversations/{conversation_id}"
    where += (
        f"?done={done}#composer"
        if done in ("reply", "note")
        else (f"?done={done}" if done else "#panel")
    )
    return RedirectResponse(where, status_code=303)


def _route(name: str) -> Callable[[Action], None]:
    """Register `POST /conversations/{id}/NAME` running the decorated action on the form."""

    def register(action: Action) -> None:
        def endpoint(
            request: Request,
            runtime: RuntimeDep,
            viewer: ViewerDep,
            form: FormDep,
            conversation_id: ConversationId,
        ) -> Response:
            # What was typed in the reply box survives a refusal.
            draft = {"kind": _field(form, "kind"), "text": storable(_field(form, "text"))}
            return _act(
                request,
                runtime,
                viewer,
                conversation_id,
                lambda w, c: action(w, c, form, runtime),
                draft=draft,
            )

        router.add_api_route(
            f"/conversations/{{conversation_id}}/{name}",
            endpoint,
            methods=["POST"],
            name=f"console_{action.__name__}",
        )

    return register


def _actor(w: Work) -> services.Actor:
    return services.Actor.agent(w.agent)


@_route("messages")
def post_message(w: Work, c: Conversation, form: FormData, runtime: Runtime) -> str:
    """A reply to the customer or an internal note, as the API's replies and notes routes."""
    text = TextIn(text=_field(form, "text")).text
    if _field(form, "kind") == "note":
        services.add_note(w.session, c, w.agent, text, w.now)
        return "note"
    # Shown in the widget; the delivery sweep emails it once the customer has left (as the
    # API's reply: the same service, the same path out).
    services.add_agent_message(w.session, c, w.agent, text, w.now)
    return "reply"


@router.post("/conversations/{conversation_id}/convert")
def convert(
    request: Request,
    runtime: RuntimeDep,
    viewer: ViewerDep,
    form: FormDep,
    conversation_id: ConversationId,
) -> Response:
    """Convert with the API's schema and service; the convert-time check runs right after the
    commit, as the API's, so the page shows its warning at once (should it fail here, the
    background sweep runs it and the live page shows it then)."""
    converted: list[int] = []

    def act(w: Work, c: Conversation) -> str:
        body = ConvertIn(
            type=_field(form, "type") or "customer",  # type: ignore[arg-type]
            priority=_field(form, "priority") or "normal",  # type: ignore[arg-type]
            assignee=_or_none(form, "assignee"),
            category=_or_none(form, "category"),
        )
        assignee = services.find_agent(w.session, w.app, body.assignee) if body.assignee else None
        ticket = services.convert(
            w.session,
            c,
            w.agent,
            w.now,
            type=body.type,
            priority=body.priority,
            assignee=assignee,
            category=body.category,
        )
        converted.append(ticket.id)
        return "converted"

    def check() -> None:
        run_email_check(runtime, converted[0])

    return _act(request, runtime, viewer, conversation_id, act, after=check)


@_route("assignee")
def assign(w: Work, c: Conversation, form: FormData, runtime: Runtime) -> None:
    body = AssignIn(assignee=_or_none(form, "assignee"))
    agent = services.find_agent(w.session, w.app, body.assignee) if body.assignee else None
    services.assign(w.session, services.require_ticket(c), agent, _actor(w), w.now)


@_route("status")
def set_status(w: Work, c: Conversation, form: FormData, runtime: Runtime) -> None:
    body = StatusIn(status=_field(form, "status"))  # type: ignore[arg-type]
    services.set_status(w.session, services.require_ticket(c), body.status, _actor(w), w.now)


@_route("priority")
def set_priority(w: Work, c: Conversation, form: FormData, runtime: Runtime) -> None:
    body = PriorityIn(priority=_field(form, "priority"))  # type: ignore[arg-type]
    services.set_priority(w.session, services.require_ticket(c), body.priority, _actor(w), w.now)


@_route("category")
def set_category(w: Work, c: Conversation, form: FormData, runtime: Runtime) -> None:
    body = CategoryIn(category=_or_none(form, "category"))
    services.set_category(w.session, services.require_ticket(c), body.category, _actor(w), w.now)


@_route("tags")
def add_tag(w: Work, c: Conversation, form: FormData, runtime: Runtime) -> None:
    services.add_tag(w.session, c, TagIn(tag=_field(form, "tag").strip()).tag, _actor(w), w.now)


@_route("tags/remove")
def remove_tag(w: Work, c: Conversation, form: FormData, runtime: Runtime) -> None:
    services.remove_tag(w.session, c, TagIn(tag=_field(form, "tag")).tag, _actor(w), w.now)


@_route("snooze")
def snooze(w: Work, c: Conversation, form: FormData, runtime: Runtime) -> None:
    """A preset ("tomorrow 9:00", "monday 9:00") or a custom time, read by the one parser of
    snooze times agents use by email, in the app's calendar zone."""
    when = _field(form, "when").strip()
    if when == "custom":
        when = _field(form, "until").strip()
        if not when:
            raise InvalidValue("choose a date and time to snooze until")
    if not when or len(when) > 40:
        raise InvalidValue("choose when the conversation should come back")
    until = parse_when(when, w.now, app_timezone(runtime, w.app.name))
    services.snooze(w.session, c, until, _actor(w), w.now)


@_route("unsnooze")
def unsnooze(w: Work, c: Conversation, form: FormData, runtime: Runtime) -> None:
    services.unsnooze(w.session, c, _actor(w), w.now, reason="woken by an agent")


@_route("resolve")
def resolve(w: Work, c: Conversation, form: FormData, runtime: Runtime) -> None:
    services.resolve(w.session, c, _actor(w), w.now)


@_route("reopen")
def reopen(w: Work, c: Conversation, form: FormData, runtime: Runtime) -> None:
    services.reopen(w.session, c, _actor(w), w.now)


@_route("tracker")
def link_tracker(w: Work, c: Conversation, form: FormData, runtime: Runtime) -> None:
    raw = _field(form, "tracker").strip()
    body = TrackerIn(tracker=int(raw) if raw.isdigit() else None)
    tracker = None
    if body.tracker is not None:
        tracker = services.require_ticket(get_conversation(w, body.tracker))
    services.link_to_tracker(w.session, services.require_ticket(c), tracker, _actor(w), w.now)
