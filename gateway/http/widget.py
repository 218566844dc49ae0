"""The chat widget's HTTP API (the customer's side) and the demo page at /widget/<app>.

A visitor gets a token from `POST /widget/api/<app>/visitors` and sends it as
`Authorization: Bearer ...` to start and list their conversations. A conversation is addressed
by its signed customer token (the same one their emails carry), which is all a customer ever
holds: there is no endpoint that takes a conversation number, so nobody reaches another
person's conversation by guessing. Every payload is built from `CustomerView`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Annotated, Any
from urllib.parse import parse_qs

import jinja2
from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from channels.chat import widget
from channels.email.tokens import Keyring
from gateway.http import rate_limits
from gateway.http.deps import RuntimeDep
from gateway.http.origin import cross_site
from gateway.http.schemas import Body, problems
from gateway.http.security_headers import CSP_HEADER, frame_ancestors, page_policy
from gateway.outbound import outbound_for, send_soon
from gateway.runtime import Runtime
from tickets import identity, services
from tickets.errors import NotFound
from tickets.models import App, Conversation

router = APIRouter(tags=["widget"], responses=problems(400, 401, 404, 409, 429))
CONFIRM_PATH = "/widget/{app_name}/confirm"


def confirm_url(runtime: Runtime, app_name: str, link: str) -> str:
    """The page a confirmation mail links to; the link's secret is its only proof."""
    path = CONFIRM_PATH.format(app_name=app_name)
    return f"{runtime.config.http.public_url}{path}?t={link}"


AppName = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")]
ConversationToken = Annotated[
    str,
    Path(min_length=8, max_length=200, pattern=r"^[a-zA-Z2-7]+$", description="from the widget"),
]
_visitor_bearer = HTTPBearer(auto_error=False, description="The widget's visitor token")


class VisitorIn(Body):
    locale: str | None = Field(default=None, max_length=16)
    name: str | None = Field(default=None, max_length=200)


class VisitorOut(BaseModel):
    visitor_token: str


class TextIn(Body):
    text: str = Field(min_length=1, max_length=widget.MAX_TEXT)


class EmailIn(Body):
    email: str = Field(min_length=3, max_length=320)


class MessageOut(BaseModel):
    author: str
    author_name: str
    text: str
    created_at: dt.datetime
    via: str


class ConversationOut(BaseModel):
    conversation: str
    brand: str
    subject: str
    messages: list[MessageOut]
    unread: int
    email_known: bool  # the customer has an address they proved
    email_pending: bool  # an address was given; its confirmation link is out


class EmailGiven(BaseModel):
    message: str


class ConversationItem(BaseModel):
    conversation: str
    subject: str
    updated_at: dt.datetime
    unread: int


class ConversationList(BaseModel):
    conversations: list[ConversationItem]


@dataclass
class Visit:
    session: Session
    app: App
    keyring: Keyring
    now: dt.datetime


def _keyring(runtime: Runtime) -> Keyring:
    ring: Keyring | None = getattr(runtime, "_widget_keyring", None)
    if ring is None:
        ring = runtime.config.keyring()
        runtime._widget_keyring = ring  # type: ignore[attr-defined]
    return ring


@contextmanager
def visit(runtime: Runtime, app_name: str) -> Iterator[Visit]:
    with runtime.unit_of_work() as session:
        yield Visit(
            session, services.get_app(session, app_name), _keyring(runtime), runtime.clock()
        )


def _payload(v: Visit, conversation: Conversation) -> ConversationOut:
    data: dict[str, Any] = widget.view(v.app, conversation).to_json()
    email = widget.email_state(v.session, conversation, v.now)
    return ConversationOut(
        conversation=widget.conversation_token(v.keyring, conversation),
        brand=data["brand"],
        subject=data["subject"],
        messages=[MessageOut(**m) for m in data["messages"]],
        unread=widget.unread_count(conversation),
        email_known=email == "known",
        email_pending=email == "pending",
    )


def _visitor_token(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None:
        raise HTTPException(401, "a visitor token is required (Authorization: Bearer ...)")
    return credentials.credentials


VisitorAuth = Annotated[HTTPAuthorizationCredentials | None, Security(_visitor_bearer)]


@router.post("/widget/api/{app_name}/visitors", status_code=201, response_model=VisitorOut)
def create_visitor(
    runtime: RuntimeDep, app_name: AppName, body: VisitorIn, request: Request
) -> VisitorOut:
    rate_limits.enforce(runtime, request, ("new_visitors_per_ip", "ip"))
    with visit(runtime, app_name) as v:
        token, _ = widget.new_visitor(v.session, v.app, v.now, locale=body.locale, name=body.name)
    return VisitorOut(visitor_token=token)


@router.get("/widget/api/{app_name}/conversations", response_model=ConversationList)
def list_conversations(
    runtime: RuntimeDep, app_name: AppName, credentials: VisitorAuth
) -> ConversationList:
    token = _visitor_token(credentials)
    with visit(runtime, app_name) as v:
        customer = widget.visitor(v.session, v.app, token)
        items = [
            ConversationItem(
                conversation=widget.conversation_token(v.keyring, c),
                subject=c.subject,
                updated_at=c.updated_at,
                unread=widget.unread_count(c),
            )
            for c in widget.own_conversations(v.session, customer)
        ]
    return ConversationList(conversations=items)


@router.post(
    "/widget/api/{app_name}/conversations", status_code=201, response_model=ConversationOut
)
def start_conversation(
    runtime: RuntimeDep,
    app_name: AppName,
    body: TextIn,
    credentials: VisitorAuth,
    request: Request,
) -> ConversationOut:
    token = _visitor_token(credentials)
    rate_limits.enforce(runtime, request, ("messages_per_ip", "ip"))
    with visit(runtime, app_name) as v:
        customer = widget.visitor(v.session, v.app, token)
        conversation = widget.start(v.session, v.app, customer, body.text, v.now)
        return _payload(v, conversation)


@router.get("/widget/api/{app_name}/conversations/{token}", response_model=ConversationOut)
def get_conversation(
    runtime: RuntimeDep, app_name: AppName, token: ConversationToken
) -> ConversationOut:
    with visit(runtime, app_name) as v:
        return _payload(v, widget.open_conversation(v.session, v.app, v.keyring, token))


@router.post(
    "/widget/api/{app_name}/conversations/{token}/messages",
    status_code=201,
    response_model=ConversationOut,
)
def send_message(
    runtime: RuntimeDep,
    app_name: AppName,
    token: ConversationToken,
    body: TextIn,
    request: Request,
) -> ConversationOut:
    rate_limits.enforce(
        runtime, request, ("messages_per_ip", "ip"), ("messages_per_conversation", token)
    )
    with visit(runtime, app_name) as v:
        conversation = widget.open_conversation(v.session, v.app, v.keyring, token)
        widget.say(v.session, conversation, body.text, v.now)
        return _payload(v, conversation)


def _seen(runtime: Runtime, app_name: str, token: str, *, read: bool) -> Response:
    with visit(runtime, app_name) as v:
        conversation = widget.open_conversation(v.session, v.app, v.keyring, token)
        widget.seen(v.session, conversation, v.now, read=read)
    return Response(status_code=204)


@router.post("/widget/api/{app_name}/conversations/{token}/heartbeat", status_code=204)
def heartbeat(runtime: RuntimeDep, app_name: AppName, token: ConversationToken) -> Response:
    """The widget is open: replies show there, and no email goes out meanwhile."""
    return _seen(runtime, app_name, token, read=False)


@router.post("/widget/api/{app_name}/conversations/{token}/read", status_code=204)
def mark_read(runtime: RuntimeDep, app_name: AppName, token: ConversationToken) -> Response:
    """The customer saw the messages: what they read is not emailed."""
    return _seen(runtime, app_name, token, read=True)


# One answer for every address, known to us or not, so the call tells nobody who writes to us.
EMAIL_GIVEN = EmailGiven(
    message="We sent a link to this address. Follow it to get our answers by email."
)


@router.post(
    "/widget/api/{app_name}/conversations/{token}/email",
    status_code=202,
    response_model=EmailGiven,
)
def give_email(
    runtime: RuntimeDep,
    app_name: AppName,
    token: ConversationToken,
    body: EmailIn,
    request: Request,
) -> EmailGiven:
    """'So we can reach you if you leave': the address counts once its mailed link is followed."""
    # Each call mails an address nobody has proven: the tightest limits are here.
    rate_limits.enforce(
        runtime, request, ("email_links_per_ip", "ip"), ("email_links_per_conversation", token)
    )
    with visit(runtime, app_name) as v:
        conversation = widget.open_conversation(v.session, v.app, v.keyring, token)
        outbox_id = widget.give_email(
            v.session,
            v.app,
            conversation,
            body.email,
            v.now,
            confirm_url=lambda link: confirm_url(runtime, app_name, link),
            templates=outbound_for(runtime).settings.templates,
            keyring=v.keyring,
        )
    if outbox_id is not None:
        send_soon(outbox_id)
    return EMAIL_GIVEN


@cache
def _template(name: str) -> jinja2.Template:
    source = (resources.files("templates") / "widget" / name).read_text(encoding="utf-8")
    return jinja2.Environment(autoescape=True).from_string(source)


@router.get("/widget/{app_name}", response_class=HTMLResponse)
def page(runtime: RuntimeDep, app_name: AppName) -> HTMLResponse:
    """A small page to try the widget by hand (the demo app: /widget/demo)."""
    with visit(runtime, app_name) as v:
        brand = v.app.brand
    policy = page_policy(frame_ancestors(runtime.config, app_name))
    html = _template("page.html").render(app=app_name, brand=brand)
    return HTMLResponse(html, headers={CSP_HEADER: policy})


def _confirm_page(app: App, status: int = 200, **fields: str) -> HTMLResponse:
    values = {"link": "", "address": "", "action": "", "problem": "", **fields}
    html = _template("confirm.html").render(app=app.name, brand=app.brand, **values)
    return HTMLResponse(html, status)


@router.get(CONFIRM_PATH, response_class=HTMLResponse)
def confirm_page(
    runtime: RuntimeDep,
    app_name: AppName,
    t: Annotated[str, Query(max_length=100, description="the secret of the mailed link")] = "",
) -> HTMLResponse:
    """Where a confirmation mail leads. Looking changes nothing: mail scanners open links too,
    so only the button (a POST) confirms."""
    with visit(runtime, app_name) as v:
        try:
            claim = identity.find_claim(v.session, v.app, t, v.now)
        except NotFound as exc:
            return _confirm_page(v.app, 404, problem=str(exc))
        action = CONFIRM_PATH.format(app_name=app_name)
        return _confirm_page(v.app, link=t, address=claim.address, action=action)


@router.post(CONFIRM_PATH, response_class=HTMLResponse, status_code=303)
async def confirm(runtime: RuntimeDep, app_name: AppName, request: Request) -> Response:
    """The mailbox is theirs: on to the chat, which now goes on by email as well."""
    if cross_site(request):
        # Another site posting someone's link from a victim's browser would put the victim
        # into a chat whose emails go to that someone (login CSRF): only our page may post.
        raise HTTPException(403, "confirm from the page the link opens")
    # A plain form post; parsed here rather than with another dependency for one field.
    form = parse_qs((await request.body())[:1000].decode("ascii", "replace"))
    link = (form.get("t") or [""])[0]
    # The page's script adds the browser's visitor token, if it has one (see confirm_claim).
    held = (form.get("v") or [""])[0]
    return await run_in_threadpool(_confirm, runtime, app_name, link, held)


def _confirm(runtime: Runtime, app_name: str, link: str, held: str) -> Response:
    with visit(runtime, app_name) as v:
        try:
            conversation = identity.confirm_claim(
                v.session,
                v.app,
                link,
                v.now,
                visitor_token_hash=widget.hash_token(held) if held else None,
            )
        except NotFound as exc:
            return _confirm_page(v.app, 404, problem=str(exc))
        token = widget.conversation_token(v.keyring, conversation)
    return RedirectResponse(f"/widget/{app_name}?c={token}", status_code=303)
