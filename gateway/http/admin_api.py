"""The admin API, /api/v1/admin/...: channels (and their check), agents and their tokens, SLA.

Admins only, scoped to the admin's app. Passwords and tokens go in and never come out: a
channel reports `has_password`, a token list shows labels and dates, and a new token's secret
is in the one answer that created it.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Response
from sqlalchemy import select

from gateway import channel_admin
from gateway.api_tokens import issue_token
from gateway.http.auth import AdminDep, Work, work
from gateway.http.deps import RuntimeDep
from gateway.http.schemas import (
    AddressIn,
    AgentIn,
    AgentOut,
    CalendarOut,
    ChannelIn,
    ChannelOut,
    ChannelPatch,
    CheckIn,
    CheckOut,
    RoleIn,
    SlaPolicyOut,
    TokenCreated,
    TokenIn,
    TokenOut,
    problems,
)
from gateway.views import agent_json
from tickets import agent_admin, services
from tickets.errors import NotFound
from tickets.models import Agent, ApiToken

router = APIRouter(
    prefix="/api/v1/admin", tags=["admin"], responses=problems(400, 401, 403, 404, 409)
)

Id = Annotated[int, Path(ge=1, le=2**31 - 1)]


# --- channels -----------------------------------------------------------------------------


@router.get("/channels", response_model=list[ChannelOut])
def list_channels(runtime: RuntimeDep, caller: AdminDep) -> list[dict[str, Any]]:
    from tickets.models import Channel

    with work(runtime, caller) as w:
        rows = w.session.scalars(
            select(Channel).where(Channel.app_id == w.app.id).order_by(Channel.id)
        )
        return [channel_admin.channel_json(c) for c in rows]


@router.post("/channels", response_model=ChannelOut, status_code=201)
def create_channel(runtime: RuntimeDep, caller: AdminDep, body: ChannelIn) -> dict[str, Any]:
    """Add a channel; then check it with POST /channels/{id}/test.

    The SMTP server reloads its addresses every `[smtp] routes_refresh_seconds` (10 s by
    default): a new address is accepted from then on. IMAP accounts are polled for channels of
    the config file only."""
    with work(runtime, caller) as w:
        channel = channel_admin.create_channel(
            w.session,
            w.app,
            body.name,
            body.addresses,
            w.now,
            imap=body.imap.model_dump() if body.imap else None,
            smtp=body.smtp.model_dump() if body.smtp else None,
            box=runtime.secret_box,
            policy=runtime.config.host_policy(w.app.name),
        )
        return channel_admin.channel_json(channel)


@router.get("/channels/{channel_id}", response_model=ChannelOut)
def show_channel(runtime: RuntimeDep, caller: AdminDep, channel_id: Id) -> dict[str, Any]:
    with work(runtime, caller) as w:
        return channel_admin.channel_json(channel_admin.get_channel(w.session, w.app, channel_id))


@router.patch("/channels/{channel_id}", response_model=ChannelOut)
def update_channel(
    runtime: RuntimeDep, caller: AdminDep, channel_id: Id, body: ChannelPatch
) -> dict[str, Any]:
    """Change addresses, IMAP or relay settings; a password left out keeps the stored one."""
    with work(runtime, caller) as w:
        channel = channel_admin.get_channel(w.session, w.app, channel_id)
        channel_admin.update_channel(
            w.session,
            channel,
            addresses=body.addresses,
            imap=body.imap.model_dump() if body.imap else None,
            smtp=body.smtp.model_dump() if body.smtp else None,
            clear=tuple(body.clear),
            box=runtime.secret_box,
            policy=runtime.config.host_policy(w.app.name),
        )
        return channel_admin.channel_json(channel)


def _set_enabled(runtime: RuntimeDep, caller: AdminDep, channel_id: int, on: bool) -> Any:
    with work(runtime, caller) as w:
        channel = channel_admin.get_channel(w.session, w.app, channel_id)
        channel.enabled = on
        return channel_admin.channel_json(channel)


@router.post("/channels/{channel_id}/disable", response_model=ChannelOut)
def disable_channel(runtime: RuntimeDep, caller: AdminDep, channel_id: Id) -> dict[str, Any]:
    """Mark the channel disabled: the convert-time check no longer counts it, and once the SMTP
    server reloads its addresses (10 s by default) they are refused (550) like unknown ones."""
    return _set_enabled(runtime, caller, channel_id, False)


@router.post("/channels/{channel_id}/enable", response_model=ChannelOut)
def enable_channel(runtime: RuntimeDep, caller: AdminDep, channel_id: Id) -> dict[str, Any]:
    return _set_enabled(runtime, caller, channel_id, True)


@router.post("/channels/{channel_id}/test", response_model=CheckOut)
def test_channel(
    runtime: RuntimeDep, caller: AdminDep, channel_id: Id, body: CheckIn | None = None
) -> dict[str, Any]:
    """IMAP, relay and a round trip; success marks the channel verified. A failed check is a
    200 with ok=false, the failing step, its message and a hint."""
    return channel_admin.check_channel(
        runtime, caller.app_id, channel_id, timeout=(body or CheckIn()).timeout
    )


# --- agents -------------------------------------------------------------------------------


def _agent(w: Work, agent_id: int) -> Agent:
    agent = w.session.get(Agent, agent_id)
    if agent is None or agent.app_id != w.app.id:
        raise NotFound(f"no agent {agent_id}")
    return agent


@router.get("/agents", response_model=list[AgentOut])
def list_agents(runtime: RuntimeDep, caller: AdminDep) -> list[dict[str, Any]]:
    with work(runtime, caller) as w:
        return [agent_json(a) for a in services.list_agents(w.session, w.app)]


@router.post("/agents", response_model=AgentOut, status_code=201)
def create_agent(runtime: RuntimeDep, caller: AdminDep, body: AgentIn) -> dict[str, Any]:
    with work(runtime, caller) as w:
        agent = services.add_agent(w.session, w.app, body.email, body.name, w.now, role=body.role)
        return agent_json(agent)


@router.put("/agents/{agent_id}/role", response_model=AgentOut)
def set_role(runtime: RuntimeDep, caller: AdminDep, agent_id: Id, body: RoleIn) -> dict[str, Any]:
    with work(runtime, caller) as w:
        agent = _agent(w, agent_id)
        agent_admin.set_role(agent, body.role, w.agent)
        return agent_json(agent)


@router.post("/agents/{agent_id}/addresses", response_model=AgentOut, status_code=201)
def add_address(
    runtime: RuntimeDep, caller: AdminDep, agent_id: Id, body: AddressIn
) -> dict[str, Any]:
    """An address the agent may answer from by email; verified ones are trusted."""
    with work(runtime, caller) as w:
        agent = _agent(w, agent_id)
        services.add_agent_address(w.session, agent, body.address, w.now, verified=body.verified)
        return agent_json(agent)


@router.delete("/agents/{agent_id}/addresses/{address}", response_model=AgentOut)
def remove_address(
    runtime: RuntimeDep,
    caller: AdminDep,
    agent_id: Id,
    address: Annotated[str, Path(max_length=320)],
) -> dict[str, Any]:
    with work(runtime, caller) as w:
        agent = _agent(w, agent_id)
        agent_admin.remove_address(agent, address)
        return agent_json(agent)


def _token_json(row: ApiToken) -> dict[str, Any]:
    return {
        "id": row.id,
        "label": row.label,
        "created_at": row.created_at,
        "revoked_at": row.revoked_at,
    }


@router.get("/agents/{agent_id}/tokens", response_model=list[TokenOut])
def list_tokens(runtime: RuntimeDep, caller: AdminDep, agent_id: Id) -> list[dict[str, Any]]:
    with work(runtime, caller) as w:
        agent = _agent(w, agent_id)
        rows = w.session.scalars(
            select(ApiToken).where(ApiToken.agent_id == agent.id).order_by(ApiToken.id)
        )
        return [_token_json(r) for r in rows]


@router.post("/agents/{agent_id}/tokens", response_model=TokenCreated, status_code=201)
def create_token(
    runtime: RuntimeDep, caller: AdminDep, agent_id: Id, body: TokenIn
) -> dict[str, Any]:
    """A new API token for the agent. Its secret is in this answer only; store it now."""
    with work(runtime, caller) as w:
        row, secret = issue_token(w.session, _agent(w, agent_id), body.label, w.now)
        return {**_token_json(row), "token": secret}


@router.delete("/agents/{agent_id}/tokens/{token_id}", status_code=204)
def revoke_token(runtime: RuntimeDep, caller: AdminDep, agent_id: Id, token_id: Id) -> Response:
    with work(runtime, caller) as w:
        agent = _agent(w, agent_id)
        row = w.session.get(ApiToken, token_id)
        if row is None or row.agent_id != agent.id:
            raise NotFound(f"no token {token_id} for agent {agent_id}")
        if row.revoked_at is None:
            row.revoked_at = w.now
    return Response(status_code=204)


# --- SLA (read only: policies and calendars live in the config file) -----------------------


def _app_config(runtime: RuntimeDep, caller: AdminDep) -> Any:
    with work(runtime, caller) as w:
        name = w.app.name
    for app in runtime.config.apps:
        if app.name == name:
            return app
    raise HTTPException(404, f"app {name} is not in the config file")


@router.get("/sla/policies", response_model=list[SlaPolicyOut])
def sla_policies(runtime: RuntimeDep, caller: AdminDep) -> list[dict[str, Any]]:
    return [p.model_dump() for p in _app_config(runtime, caller).sla_policies]


@router.get("/sla/calendars", response_model=list[CalendarOut])
def sla_calendars(runtime: RuntimeDep, caller: AdminDep) -> list[dict[str, Any]]:
    return [c.model_dump() for c in _app_config(runtime, caller).calendars]
