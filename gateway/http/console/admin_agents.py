"""The admin's agent page, `/admin/agents`: the app's agents, inviting one by email (the new
agent gets a sign-in link), roles, deactivation, verified addresses and notification choices
(the same settings as `gateway agents notify`).

Every change goes through the services the admin API and the CLI use (tickets.services,
tickets.agent_admin, tickets.notifications); a refusal shows on the page as a sentence.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from gateway.http.auth import Work, work
from gateway.http.console.admin_channels import form_text
from gateway.http.console.pages import render
from gateway.http.console.session import AdminDep, FormDep, Viewer
from gateway.http.deps import RuntimeDep
from gateway.outbound import send_soon
from gateway.runtime import Runtime
from gateway.sign_in_links import mail_sign_in_links
from gateway.views import agent_json
from tickets import agent_admin, notifications, services
from tickets.errors import DomainError
from tickets.models import Agent

router = APIRouter(include_in_schema=False)

Id = Annotated[int, Path(ge=1, le=2**31 - 1)]
DONE = {
    "invited": "The agent is added and a sign-in link is on its way to them.",
    "invited-no-mail": "The agent is added. No sign-in link could be mailed: the app has no "
    "email channel yet. `gateway agents login-link EMAIL` prints one on the server.",
    "role": "The role is changed.",
    "deactivated": "The agent is deactivated: they can no longer sign in or use API tokens.",
    "activated": "The agent is active again.",
    "address-added": "The address is added as verified.",
    "address-removed": "The address is removed.",
    "notifications": "Notification choices are saved.",
}
EVENT_LABELS = {
    "new_message": "New customer messages",
    "assigned": "Assigned to them",
    "snooze_woke": "A snoozed conversation wakes",
    "sla_warning": "SLA about to be breached",
    "sla_breach": "SLA breached",
    "delivery_failed": "A reply could not be delivered",
    "reply_rejected": "Their mail reply was rejected (always on)",
}


def _page(
    request: Request,
    runtime: Runtime,
    viewer: Viewer,
    status: int = 200,
    problem: str | None = None,
    form: dict[str, str] | None = None,
) -> HTMLResponse:
    with work(runtime, viewer.caller) as w:
        agents = [agent_json(a) for a in services.list_agents(w.session, w.app)]
    return render(
        request,
        "admin_agents.html",
        viewer,
        status=status,
        agents=agents,
        problem=problem,
        done=DONE.get(request.query_params.get("done", "")),
        form=form or {},
        events=[
            (k, EVENT_LABELS.get(k, k), k in notifications.ALWAYS) for k in notifications.KINDS
        ],
    )


def _agent(w: Work, agent_id: int) -> Agent:
    agent = w.session.get(Agent, agent_id)
    if agent is None or agent.app_id != w.app.id:
        raise HTTPException(404, "there is no such agent in your app")
    return agent


@router.get("/admin/agents", response_class=HTMLResponse)
def agents_page(request: Request, runtime: RuntimeDep, viewer: AdminDep) -> HTMLResponse:
    return _page(request, runtime, viewer)


@router.post("/admin/agents")
def invite(request: Request, runtime: RuntimeDep, viewer: AdminDep, form: FormDep) -> Response:
    email = form_text(form, "email")
    try:
        with work(runtime, viewer.caller) as w:
            agent = services.add_agent(
                w.session,
                w.app,
                email,
                form_text(form, "name"),
                w.now,
                role=form_text(form, "role"),
            )
            agent_id, address = agent.id, agent.email
    except DomainError as exc:
        kept = {k: v for k, v in form.items() if isinstance(v, str) and k != "csrf"}
        return _page(request, runtime, viewer, 400, str(exc), kept)
    queued = mail_sign_in_links(runtime, address, only_agent=agent_id)
    for outbox_id in queued:
        send_soon(outbox_id)
    done = "invited" if queued else "invited-no-mail"
    return RedirectResponse(f"/admin/agents?done={done}#agent-{agent_id}", status_code=303)


def _change(
    request: Request,
    runtime: Runtime,
    viewer: Viewer,
    agent_id: int,
    done: str,
    change: Any,
) -> Response:
    """Apply `change(work, agent)`; back to the page, or the page with the refusal."""
    try:
        with work(runtime, viewer.caller) as w:
            change(w, _agent(w, agent_id))
    except DomainError as exc:
        return _page(request, runtime, viewer, 400, str(exc))
    return RedirectResponse(f"/admin/agents?done={done}#agent-{agent_id}", status_code=303)


@router.post("/admin/agents/{agent_id}/role")
def set_role(
    request: Request, runtime: RuntimeDep, viewer: AdminDep, form: FormDep, agent_id: Id
) -> Response:
    role = form_text(form, "role")
    return _change(
        request, runtime, viewer, agent_id, "role",
        lambda w, agent: agent_admin.set_role(agent, role, w.agent),
    )  # fmt: skip


def _set_active(
    request: Request, runtime: Runtime, viewer: Viewer, agent_id: int, active: bool
) -> Response:
    return _change(
        request, runtime, viewer, agent_id, "activated" if active else "deactivated",
        lambda w, agent: agent_admin.set_active(w.session, agent, active, w.agent, w.now),
    )  # fmt: skip


@router.post("/admin/agents/{agent_id}/deactivate")
def deactivate(
    request: Request, runtime: RuntimeDep, viewer: AdminDep, form: FormDep, agent_id: Id
) -> Response:
    return _set_active(request, runtime, viewer, agent_id, False)


@router.post("/admin/agents/{agent_id}/activate")
def activate(
    request: Request, runtime: RuntimeDep, viewer: AdminDep, form: FormDep, agent_id: Id
) -> Response:
    return _set_active(request, runtime, viewer, agent_id, True)


@router.post("/admin/agents/{agent_id}/addresses")
def add_address(
    request: Request, runtime: RuntimeDep, viewer: AdminDep, form: FormDep, agent_id: Id
) -> Response:
    address = form_text(form, "address")
    return _change(
        request, runtime, viewer, agent_id, "address-added",
        lambda w, agent: services.add_agent_address(w.session, agent, address, w.now),
    )  # fmt: skip


@router.post("/admin/agents/{agent_id}/addresses/remove")
def remove_address(
    request: Request, runtime: RuntimeDep, viewer: AdminDep, form: FormDep, agent_id: Id
) -> Response:
    address = form_text(form, "address")
    return _change(
        request, runtime, viewer, agent_id, "address-removed",
        lambda w, agent: agent_admin.remove_address(agent, address),
    )  # fmt: skip


@router.post("/admin/agents/{agent_id}/notifications")
def set_notifications(
    request: Request, runtime: RuntimeDep, viewer: AdminDep, form: FormDep, agent_id: Id
) -> Response:
    events = [e for e in form.getlist("events") if isinstance(e, str)]
    digest = form_text(form, "delivery") == "digest"
    hour = form_text(form, "digest_hour")
    if hour and not hour.isdigit():
        return _page(request, runtime, viewer, 400, "the digest hour is 0 to 23 (UTC)")
    return _change(
        request, runtime, viewer, agent_id, "notifications",
        lambda w, agent: notifications.set_preferences(
            agent, events=events, digest=digest, digest_hour=int(hour) if hour else None
        ),
    )  # fmt: skip
