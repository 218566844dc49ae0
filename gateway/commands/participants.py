"""`gateway participants`: the people copied on a conversation's emails (`--app`, default the
first). The customer's Cc adds them by itself; here the team adds and removes them."""

from __future__ import annotations

import click
from sqlalchemy.orm import Session

from gateway.commands.base import State, echo_json, handle_errors, pass_state, unit_of_work
from gateway.views import participant_json
from tickets import participants as domain
from tickets import services
from tickets.errors import DomainError
from tickets.models import App, Conversation


@click.group()
def participants() -> None:
    """People copied on a conversation's emails (Cc)."""


def _conversation(session: Session, app: App, conversation_id: str) -> Conversation:
    if not conversation_id.isdigit():
        raise DomainError(f"{conversation_id!r} is not a conversation id")
    return services.get_conversation(session, app, int(conversation_id))


def _actor(session: Session, app: App, by_email: str | None) -> services.Actor:
    if by_email is None:
        return services.SYSTEM
    return services.Actor.agent(services.find_agent(session, app, by_email))


@participants.command("list")
@click.argument("conversation_id")
@click.option("--json", "as_json", is_flag=True)
@pass_state
@handle_errors
def participants_list(state: State, conversation_id: str, as_json: bool) -> None:
    """Who is copied on CONVERSATION_ID's emails."""
    with unit_of_work(state) as (session, app, _):
        rows = [
            participant_json(p) for p in _conversation(session, app, conversation_id).participants
        ]
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        bounced = " (undeliverable)" if row["undeliverable"] else ""
        name = f"{row['name']} " if row["name"] else ""
        click.echo(f"{name}<{row['email']}> added by the {row['added_by']}{bounced}")


@participants.command("add")
@click.argument("conversation_id")
@click.argument("email")
@click.option("--name", default=None, help="their display name")
@click.option("--by", "by_email", default=None, help="the agent who adds them")
@pass_state
@handle_errors
def participants_add(
    state: State, conversation_id: str, email: str, name: str | None, by_email: str | None
) -> None:
    """Copy EMAIL on the conversation's emails; their answers thread in."""
    limit = state.config.limits.max_participants
    with unit_of_work(state) as (session, app, now):
        conversation = _conversation(session, app, conversation_id)
        added = domain.add(
            session,
            conversation,
            email,
            _actor(session, app, by_email),
            now,
            name=name,
            limit=limit,
        )
        click.echo(f"{added.address} is copied on conversation {conversation.id}")


@participants.command("remove")
@click.argument("conversation_id")
@click.argument("email")
@click.option("--by", "by_email", default=None, help="the agent who removes them")
@pass_state
@handle_errors
def participants_remove(
    state: State, conversation_id: str, email: str, by_email: str | None
) -> None:
    """Copy EMAIL no longer; their answers no longer thread in."""
    with unit_of_work(state) as (session, app, now):
        conversation = _conversation(session, app, conversation_id)
        domain.remove(session, conversation, email, _actor(session, app, by_email), now)
        click.echo(f"{email.strip().lower()} is no longer copied on conversation {conversation.id}")
