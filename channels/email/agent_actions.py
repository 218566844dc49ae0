"""Apply an agent's mail commands (read by channels/email/agent_commands.py) as that agent."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from channels.email.agent_commands import EXAMPLES, Command, CommandError, parse_when
from tickets import participants, services
from tickets.errors import InvalidValue, NotAllowed, NotFound
from tickets.models import Agent, Conversation


def _find_colleague(session: Session, app_id: int, me: Agent, who: str) -> Agent:
    wanted = who.strip().lower()
    if wanted == "me":
        return me
    agents = session.scalars(
        select(Agent).where(Agent.app_id == app_id, Agent.active.is_(True)).order_by(Agent.id)
    ).all()
    for match in (
        lambda a: a.email == wanted,
        lambda a: a.name.lower() == wanted,
        lambda a: a.name.lower().split()[0] == wanted if a.name.split() else False,
    ):
        found = [a for a in agents if match(a)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise CommandError(f"/assign {who}: more than one agent is called that; use an email")
    raise CommandError(f"/assign {who}: no agent by that name or address")


def apply_commands(
    session: Session,
    conversation: Conversation,
    agent: Agent,
    commands: Iterable[Command],
    now: dt.datetime,
    timezone: str = "UTC",
    *,
    max_participants: int = participants.MAX_PARTICIPANTS,
    own: Iterable[str] = (),
) -> list[str]:
    """Apply the commands as `agent`; a short description of each, for the processing record.
    `own` are the channel addresses (never a participant), `max_participants` the limit."""
    actor = services.Actor.agent(agent)
    done: list[str] = []
    for command in commands:
        name, arg = command.name, command.argument
        try:
            if name == "note":
                continue
            if name == "tag":
                for tag in arg.replace(",", " ").split():
                    services.add_tag(session, conversation, tag, actor, now)
            elif name == "snooze":
                services.snooze(session, conversation, parse_when(arg, now, timezone), actor, now)
            elif name == "resolve":
                services.resolve(session, conversation, actor, now)
            elif name == "cc":
                _cc(session, conversation, actor, arg, now, max_participants, own)
            else:
                ticket = conversation.ticket
                if ticket is None:
                    raise CommandError(f"/{name} works on tickets; this conversation is none yet")
                if name == "assign":
                    target = _find_colleague(session, conversation.app_id, agent, arg)
                    services.assign(session, ticket, target, actor, now)
                elif name == "priority":
                    services.set_priority(session, ticket, arg.lower(), actor, now)
                elif name == "status":
                    services.set_status(session, ticket, arg.lower(), actor, now)
                elif name == "category":
                    services.set_category(session, ticket, arg, actor, now)
        except (InvalidValue, NotAllowed, NotFound) as exc:
            raise CommandError(f"/{name} {arg}".strip() + f": {exc}") from None
        done.append(f"/{name} {arg}".strip())
    return done


def _cc(
    session: Session,
    conversation: Conversation,
    actor: services.Actor,
    argument: str,
    now: dt.datetime,
    limit: int,
    own: Iterable[str],
) -> None:
    """`/cc add a@x.test [b@y.test ...]` or `/cc remove a@x.test ...`."""
    verb, *addresses = argument.replace(",", " ").split()
    if verb.lower() not in ("add", "remove") or not addresses:
        raise CommandError(f"/cc {argument}: write {EXAMPLES['cc']}")
    for address in addresses:
        if verb.lower() == "add":
            participants.add(session, conversation, address, actor, now, limit=limit, own=own)
        else:
            participants.remove(session, conversation, address, actor, now)


# --- sender checks -------------------------------------------------------------------------
