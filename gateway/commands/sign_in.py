"""`gateway agents login-link` and `gateway agents password`: console sign-in from the shell,
for the first admin of a fresh install (no mail set up yet) and for operators."""

from __future__ import annotations

import click

from gateway.commands.base import State, handle_errors, pass_state, unit_of_work
from gateway.sign_in_links import link_url
from tickets import services, sign_in
from tickets.errors import InvalidValue


@click.command("login-link")
@click.argument("email")
@pass_state
@handle_errors
def login_link(state: State, email: str) -> None:
    """Print a one-time console sign-in link for agent EMAIL (15 minutes, single use)."""
    with unit_of_work(state) as (session, app, now):
        agent = services.find_agent(session, app, email)
        if not agent.active:
            raise InvalidValue(f"agent {agent.email} is deactivated")
        secret = sign_in.issue_link(session, agent, now)
    minutes = int(sign_in.LINK_LIFETIME.total_seconds() // 60)
    click.echo(link_url(state.runtime(), secret))
    click.echo(f"(signs in {agent.email} once, within {minutes} minutes)", err=True)


@click.command("password")
@click.argument("email")
@click.password_option(help="the new password (asked twice when not given)")
@pass_state
@handle_errors
def password(state: State, email: str, password: str) -> None:
    """Set the console password of agent EMAIL."""
    with unit_of_work(state) as (session, app, _now):
        agent = services.find_agent(session, app, email)
        sign_in.set_password(agent, password)
    click.echo(f"{agent.email} can now sign in with a password")
