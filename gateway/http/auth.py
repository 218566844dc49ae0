"""Authentication of API requests by an agent's token, and the caller-scoped unit of work."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from gateway.api_tokens import agent_for_token
from gateway.http.deps import RuntimeDep
from tickets.models import Agent, App, Role


@dataclass(frozen=True)
class Caller:
    """The authenticated agent; every query of a request is scoped to `app_id`."""

    agent_id: int
    app_id: int
    role: Role


optional_bearer = HTTPBearer(auto_error=False, description="An agent's API token")


def current_caller(
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(optional_bearer)],
) -> Caller:
    if credentials is None:
        raise HTTPException(401, "an API token is required (Authorization: Bearer ...)", _CHALLENGE)
    with runtime.unit_of_work() as session:
        agent = agent_for_token(session, credentials.credentials)
        if agent is None:
            raise HTTPException(401, "the API token is not valid (revoked or unknown)", _CHALLENGE)
        return Caller(agent.id, agent.app_id, agent.role)


_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def require_admin(caller: Annotated[Caller, Depends(current_caller)]) -> Caller:
    if caller.role != Role.ADMIN:
        raise HTTPException(403, "this needs the admin role")
    return caller


CallerDep = Annotated[Caller, Depends(current_caller)]
AdminDep = Annotated[Caller, Depends(require_admin)]


@dataclass
class Work:
    """One request's unit of work: the session, the caller's app and agent, and `now`."""

    session: Session
    app: App
    agent: Agent
    now: dt.datetime


@contextmanager
def work(runtime: RuntimeDep, caller: Caller) -> Iterator[Work]:
    with runtime.unit_of_work() as session:
        app = session.get(App, caller.app_id)
        agent = session.get(Agent, caller.agent_id)
        if app is None or agent is None:
            raise HTTPException(401, "the API token's agent no longer exists")
        yield Work(session, app, agent, runtime.clock())
