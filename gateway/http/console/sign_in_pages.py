"""Signing in and out of the console: `/`, `/signin` (password, or a link by email), the page a
mailed link opens, `/signout`, and `/account` where an agent sets a password.

The sign-in forms are posted before there is a session, so they carry a token of their own,
the double of a short-lived SameSite cookie: another site cannot post them from a victim's
browser (login CSRF). Answers never tell whether an address belongs to an agent.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from gateway.http import rate_limits
from gateway.http.console.pages import render
from gateway.http.console.session import (
    COOKIE,
    FormDep,
    ViewerDep,
    optional_viewer,
)
from gateway.http.deps import RuntimeDep
from gateway.http.origin import cross_site
from gateway.outbound import send_soon
from gateway.runtime import Runtime
from gateway.sign_in_links import LINK_PATH, mail_sign_in_links
from tickets import sign_in
from tickets.errors import DomainError
from tickets.models import Agent

router = APIRouter(include_in_schema=False)

PRE_COOKIE = "gw_signin"
Address = Annotated[str, Form(min_length=3, max_length=320)]
Password = Annotated[str, Form(min_length=1, max_length=sign_in.MAX_PASSWORD)]
Next = Annotated[str, Form(max_length=2000)]
# Optional, so a form without it is refused by the CSRF check (403), like a wrong one.
Pre = Annotated[str, Form(max_length=100)]


def _safe_next(target: str | None) -> str:
    """Only a path of ours: never `//evil.example` or a full URL (an open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/inbox"
    return target


def _secure(runtime: Runtime, request: Request) -> bool:
    return request.url.scheme == "https" or runtime.config.http.public_url.startswith("https://")


def _signed_in(runtime: Runtime, request: Request, secret: str, target: str) -> Response:
    response = RedirectResponse(_safe_next(target), status_code=303)
    response.set_cookie(
        COOKIE,
        secret,
        max_age=int(sign_in.SESSION_LIFETIME.total_seconds()),
        httponly=True,
        samesite="lax",
        secure=_secure(runtime, request),
        path="/",
    )
    response.delete_cookie(PRE_COOKIE, path="/")
    return response


def _sign_in_page(
    runtime: Runtime,
    request: Request,
    target: str,
    status: int = 200,
    problem: str | None = None,
    sent_to: str | None = None,
) -> HTMLResponse:
    pre = request.cookies.get(PRE_COOKIE) or secrets.token_urlsafe(24)
    response = render(
        request,
        "signin.html",
        None,
        status=status,
        next=_safe_next(target),
        pre=pre,
        problem=problem,
        sent_to=sent_to,
        minutes=int(sign_in.LINK_LIFETIME.total_seconds() // 60),
    )
    response.set_cookie(
        PRE_COOKIE,
        pre,
        max_age=3600,
        httponly=True,
        samesite="lax",
        secure=_secure(runtime, request),
        path="/",
    )
    return response


def _check_pre(request: Request, pre: str) -> None:
    cookie = request.cookies.get(PRE_COOKIE)
    if cross_site(request) or not cookie or not secrets.compare_digest(cookie, pre):
        raise HTTPException(403, "sign in from the sign-in page (reload it and try again)")


@router.get("/")
async def home(request: Request, runtime: RuntimeDep) -> Response:
    viewer = await optional_viewer(request, runtime)
    return RedirectResponse("/inbox" if viewer else "/signin", status_code=303)


@router.get("/signin", response_class=HTMLResponse)
def signin_page(
    request: Request,
    runtime: RuntimeDep,
    next: Annotated[str | None, Query(max_length=2000)] = None,
) -> HTMLResponse:
    return _sign_in_page(runtime, request, next or "/inbox")


@router.post("/signin/password")
def signin_password(
    request: Request,
    runtime: RuntimeDep,
    email: Address,
    password: Password,
    pre: Pre = "",
    next: Next = "/inbox",
) -> Response:
    _check_pre(request, pre)
    rate_limits.enforce(
        runtime, request, ("sign_in_per_ip", "ip"), ("sign_in_per_address", email.lower())
    )
    now = runtime.clock()
    with runtime.unit_of_work() as session:
        agent = sign_in.agent_by_password(session, email, password)
        if agent is None:
            problem = "That address and password do not match. Try again, or get a link by email."
            return _sign_in_page(runtime, request, next, 401, problem=problem)
        secret = sign_in.start_session(session, agent, now)
    return _signed_in(runtime, request, secret, next)


@router.post("/signin/email", response_class=HTMLResponse)
def signin_email(
    request: Request,
    runtime: RuntimeDep,
    email: Address,
    pre: Pre = "",
    next: Next = "/inbox",
) -> HTMLResponse:
    _check_pre(request, pre)
    rate_limits.enforce(
        runtime, request, ("sign_in_per_ip", "ip"), ("sign_in_per_address", email.lower())
    )
    for outbox_id in mail_sign_in_links(runtime, email):
        send_soon(outbox_id)
    return _sign_in_page(runtime, request, next, sent_to=email.strip())


@router.get(LINK_PATH, response_class=HTMLResponse)
def link_page(
    request: Request,
    runtime: RuntimeDep,
    t: Annotated[str, Query(min_length=1, max_length=100)],
) -> HTMLResponse:
    """Where a mailed link leads. Opening it changes nothing (mail scanners open links too):
    the button, a POST from this page, signs in."""
    with runtime.reading() as session:
        try:
            agent = sign_in.check_link(session, t, runtime.clock())
        except DomainError as exc:
            return render(request, "signin_link.html", None, 410, problem=str(exc), link=None)
        return render(request, "signin_link.html", None, problem=None, link=t, name=agent.name)


@router.post(LINK_PATH)
def use_link(
    request: Request, runtime: RuntimeDep, t: Annotated[str, Form(min_length=1, max_length=100)]
) -> Response:
    if cross_site(request):
        raise HTTPException(403, "sign in from the page the link opens")
    now = runtime.clock()
    with runtime.unit_of_work() as session:
        try:
            agent = sign_in.use_link(session, t, now)
        except DomainError as exc:
            return render(request, "signin_link.html", None, 410, problem=str(exc), link=None)
        secret = sign_in.start_session(session, agent, now)
    return _signed_in(runtime, request, secret, "/inbox")


@router.post("/signout")
def signout(request: Request, runtime: RuntimeDep, form: FormDep) -> Response:
    secret = request.cookies.get(COOKIE, "")
    with runtime.unit_of_work() as session:
        sign_in.end_session(session, secret, runtime.clock())
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


@router.get("/account", response_class=HTMLResponse)
def account_page(request: Request, viewer: ViewerDep) -> HTMLResponse:
    return render(request, "account.html", viewer, problem=None, saved=False)


@router.post("/account/password", response_class=HTMLResponse)
async def account_password(
    request: Request, runtime: RuntimeDep, viewer: ViewerDep, form: FormDep
) -> HTMLResponse:
    password, again = str(form.get("password", "")), str(form.get("again", ""))
    if password != again:
        problem = "The two passwords differ."
        return render(request, "account.html", viewer, 400, problem=problem, saved=False)

    def save() -> None:
        with runtime.unit_of_work() as session:
            agent = session.get(Agent, viewer.caller.agent_id)
            assert agent is not None
            sign_in.set_password(agent, password)
            # The agent's other browsers sign in again, with the new password.
            keep = request.cookies.get(COOKIE, "")
            sign_in.end_all(session, agent.id, runtime.clock(), keep=keep)

    try:
        await run_in_threadpool(save)
    except DomainError as exc:
        return render(request, "account.html", viewer, 400, problem=str(exc), saved=False)
    return render(request, "account.html", viewer, problem=None, saved=True)
