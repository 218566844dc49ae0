"""`gateway domains`: the mail domains an app may use (`--app`, default the first).

The CLI runs on the server, so it speaks for the operator: it can grant and revoke a domain.
`verify` starts an app's DNS proof and checks it, as an app admin can through the API.
"""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from gateway import domain_proof
from gateway.commands.base import (
    EXIT_USER_ERROR,
    State,
    console,
    echo_json,
    fail,
    handle_errors,
    pass_state,
    unit_of_work,
)
from tickets import domains as app_domains
from tickets.errors import NotFound


@click.group()
def domains() -> None:
    """Mail domains of an app: grants and DNS proofs."""


@domains.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_state
@handle_errors
def domains_list(state: State, as_json: bool) -> None:
    """The app's domains, how each was proven, and pending DNS proofs."""
    with unit_of_work(state) as (_, app, _):
        app_id = app.id
    rows = domain_proof.list_for(state.runtime(), app_id)
    if as_json:
        echo_json(rows)
        return
    table = Table("domain", "state", "proof", "record to publish")
    for row in rows:
        table.add_row(row["domain"], row["state"], row["proof"] or "", _record(row))
    console().print(table)


@domains.command("grant")
@click.argument("domain")
@pass_state
@handle_errors
def domains_grant(state: State, domain: str) -> None:
    """Let the app use DOMAIN (refused while another app holds it)."""
    with unit_of_work(state) as (session, app, now):
        row = app_domains.grant(session, app, domain, now)
        click.echo(f"{row.domain} granted to app {app.name}")


@domains.command("revoke")
@click.argument("domain")
@pass_state
@handle_errors
def domains_revoke(state: State, domain: str) -> None:
    """Take DOMAIN from the app: mail to its addresses there is refused from then on."""
    with unit_of_work(state) as (session, app, _):
        app_domains.revoke(session, app, domain)
        click.echo(f"{domain} revoked for app {app.name}")


@domains.command("verify")
@click.argument("domain")
@click.option("--json", "as_json", is_flag=True)
@pass_state
@handle_errors
def domains_verify(state: State, domain: str, as_json: bool) -> None:
    """Start the app's DNS proof of DOMAIN, or check it; exits non-zero until it is proven."""
    with unit_of_work(state) as (_, app, _):
        app_id = app.id
    runtime = state.runtime()
    try:
        row = domain_proof.verify(runtime, app_id, domain)
    except NotFound:
        row = domain_proof.start(runtime, app_id, domain)
        row["last_check"] = "the proof is started"
    if as_json:
        echo_json(row)
    if row["state"] == "proven":
        if not as_json:
            click.echo(f"{row['domain']} is proven for this app ({row['proof']})")
        return
    fail(
        f"{row['domain']} is not proven yet ({row['last_check']}); publish {_record(row)} "
        f"and run this again",
        EXIT_USER_ERROR,
    )


def _record(row: dict[str, Any]) -> str:
    record = row["record"]
    if record is None or row["state"] == "proven":
        return ""
    return f'{record["name"]} TXT "{record["value"]}"'
