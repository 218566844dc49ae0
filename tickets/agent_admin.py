"""What an app's admin may change about its agents: role, deactivation, addresses.

The rules keep an app manageable: an admin cannot change their own role or deactivate
themself (another admin must), and the app always keeps one active admin. A deactivated agent
signs in no more, its API tokens stop working, and it gets no notifications; its history stays.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tickets import sign_in
from tickets.errors import NotAllowed, NotFound
from tickets.models import Agent, Role
from tickets.services import SYSTEM, parse_role, record


def _other_active_admins(session: Session, agent: Agent) -> int:
    return int(
        session.scalar(
            select(func.count(Agent.id)).where(
                Agent.app_id == agent.app_id,
                Agent.id != agent.id,
                Agent.role == Role.ADMIN,
                Agent.active.is_(True),
            )
        )
        or 0
    )


def set_role(agent: Agent, role: str | Role, by: Agent) -> None:
    if agent.id == by.id:
        # An admin who demotes themself could leave the app with no admin at all.
        raise NotAllowed("you cannot change your own role; ask another admin")
    agent.role = parse_role(role)


def set_active(session: Session, agent: Agent, active: bool, by: Agent, now: dt.datetime) -> None:
    if agent.active == active:
        return
    if not active:
        if agent.id == by.id:
            raise NotAllowed("you cannot deactivate yourself; ask another admin")
        if agent.role == Role.ADMIN and _other_active_admins(session, agent) == 0:
            raise NotAllowed("the app needs at least one active admin")
        sign_in.end_all(session, agent.id, now)
    agent.active = active
    record(
        session,
        app_id=agent.app_id,
        kind="agent.activated" if active else "agent.deactivated",
        actor=SYSTEM,
        now=now,
        agent=agent.email,
    )


def remove_address(agent: Agent, address: str) -> None:
    """Remove one of the agent's addresses: answers by email from it are trusted no more."""
    wanted = address.strip().lower()
    row = next((a for a in agent.addresses if a.address == wanted), None)
    if row is None:
        raise NotFound(f"{address} is not an address of {agent.email}")
    agent.addresses.remove(row)
