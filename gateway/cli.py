"""The `gateway` command: run the gateway and drive conversations from a shell.

A user error (bad id, bad flag, bad config) prints one line on stderr and exits non-zero; it
never prints a traceback. Command names and JSON keys are the public contract (CONTRACT.md).
"""

from __future__ import annotations

import datetime as dt
import re
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click
from rich.table import Table
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway import views
from gateway.commands.base import (
    EXIT_USAGE,
    EXIT_USER_ERROR,
    State,
    console,
    echo_json,
    fail,
    handle_errors,
    pass_state,
    unit_of_work,
)
from gateway.commands.domains import domains as domains_group
from gateway.commands.importing import import_cmd
from gateway.commands.participants import participants as participants_group
from gateway.commands.sign_in import login_link, password
from tickets import notifications, services
from tickets.business_time import DurationTooLong, parse_duration
from tickets.customer_view import customer_view
from tickets.errors import DomainError
from tickets.models import App, Conversation, Event
from tickets.stats import status_counts

if TYPE_CHECKING:
    from channels.email.process_record import Processing


class GatewayGroup(click.Group):
    """A group whose usage errors are one line, like every other user error."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            return super().main(*args, **kwargs)
        except click.exceptions.Abort:
            fail("aborted", 130)
        except click.UsageError as exc:
            hint = f" (try '{exc.ctx.command_path} --help')" if exc.ctx else ""
            fail(exc.format_message().splitlines()[-1] + hint, EXIT_USAGE)
        except click.ClickException as exc:
            fail(exc.format_message(), exc.exit_code or EXIT_USER_ERROR)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)


def parse_id(value: str) -> int:
    if not value.isdigit():
        raise DomainError(f"{value!r} is not a conversation id")
    return int(value)


def parse_when(value: str, now: dt.datetime) -> dt.datetime:
    """ISO 8601 (a time without zone is UTC) or a duration from now ("30m", "2d")."""
    try:
        return now + parse_duration(value)
    except DurationTooLong as exc:
        raise DomainError(str(exc)) from None
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise DomainError(
            f"{value!r} is neither an ISO 8601 time nor a duration like 30m or 2d"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


@click.group(cls=GatewayGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", envvar="GATEWAY_CONFIG", help="TOML config file.")
@click.option("--app", "app_name", help="The app to act on (default: the first in the config).")
@click.version_option(package_name="support-email-gateway")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, app_name: str | None) -> None:
    """The email gateway for customer support."""
    ctx.obj = State(config_path, app_name)


# --- running ------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--role", type=click.Choice(["all", "ingress", "worker"]), default="all", show_default=True
)
@click.option("--smtp-listen", metavar="HOST:PORT", help="instead of [smtp] listen")
@click.option("--http-listen", metavar="HOST:PORT", help="instead of [http] listen (and its URL)")
@pass_state
@handle_errors
def serve(state: State, role: str, smtp_listen: str | None, http_listen: str | None) -> None:
    """Run the gateway (default: everything in one process)."""
    from gateway.server import run_forever

    config = state.config
    if smtp_listen:
        config = config.model_copy(
            update={"smtp": config.smtp.model_copy(update={"listen": smtp_listen})}
        )
    if http_listen:
        http = {"listen": http_listen}
        if (
            "http" not in config.model_fields_set
            or "public_url" not in config.http.model_fields_set
        ):
            http["public_url"] = f"http://{http_listen}"  # the default URL follows the address
        config = config.model_copy(update={"http": config.http.model_copy(update=http)})
    run_forever(config, role, click.echo)  # type: ignore[arg-type]


@cli.command()
@pass_state
@handle_errors
def worker(state: State) -> None:
    """Run Dramatiq workers and the scheduler only, for scale-out."""
    from gateway.server import run_forever

    run_forever(state.config, "worker", click.echo)


@cli.command("status")
@click.option("--json", "as_json", is_flag=True)
@pass_state
@handle_errors
def status_cmd(state: State, as_json: bool) -> None:
    """Counts: inbound, outbox, open conversations and tickets, due timers."""
    runtime = state.runtime()
    with runtime.unit_of_work() as session:
        counts = status_counts(session, runtime.clock())
    if as_json:
        echo_json(counts)
        return
    table = Table("what", "count", title="gateway status")
    for key, value in counts.items():
        if isinstance(value, dict):
            for sub, n in value.items():
                table.add_row(f"{key} {sub}", str(n))
        else:
            table.add_row(key.replace("_", " "), str(value))
    console().print(table)


@cli.group("config")
def config_group() -> None:
    """Configuration."""


@config_group.command("check")
@pass_state
@handle_errors
def config_check(state: State) -> None:
    """Validate the config file; one line naming the key and the problem if it is invalid."""
    config = state.config
    config.keyring()
    source = state.config_path or "embedded default"
    apps = ", ".join(a.name for a in config.apps) or "none"
    click.echo(f"config ok ({source}): apps {apps}")


@cli.group("db")
def db_group() -> None:
    """Database."""


@db_group.command("upgrade")
@pass_state
@handle_errors
def db_upgrade(state: State) -> None:
    """Bring the database schema up to date."""
    state.runtime()
    click.echo("database up to date")


# --- demo and agents ----------------------------------------------------------------------


@cli.group()
def demo() -> None:
    """Demo data."""


@demo.command("seed")
@pass_state
@handle_errors
def demo_seed(state: State) -> None:
    """An admin agent@localhost and a chat with customer@example.com; prints its id."""
    with unit_of_work(state) as (session, app, now):
        try:
            services.find_agent(session, app, "agent@localhost")
        except DomainError:
            services.add_agent(session, app, "agent@localhost", "Ana", now, role="admin")
        customer = services.customer_by_address(
            session, app, "customer@example.com", now, name="Chris Customer"
        )
        conversation, _ = services.start_conversation(
            session,
            app,
            customer,
            "chat",
            "Hi! My order #4411 arrived damaged, the box was crushed. Can you send a new one?",
            now,
        )
    click.echo(conversation.id)


@cli.group()
def agents() -> None:
    """Agents."""


@agents.command("add")
@click.argument("email")
@click.option("--name", required=True)
@click.option("--role", type=click.Choice(["agent", "admin"]), default="agent", show_default=True)
@pass_state
@handle_errors
def agents_add(state: State, email: str, name: str, role: str) -> None:
    """Add an agent."""
    with unit_of_work(state) as (session, app, now):
        agent = services.add_agent(session, app, email, name, now, role=role)
    click.echo(f"agent {agent.email} added ({agent.role.value})")


@agents.command("token")
@click.argument("email")
@click.option("--label", default="", help="What the token is for (shown in token lists).")
@pass_state
@handle_errors
def agents_token(state: State, email: str, label: str) -> None:
    """Issue an API token for an agent; it is printed once and stored only as a digest."""
    from gateway.api_tokens import issue_token

    with unit_of_work(state) as (session, app, now):
        agent = services.find_agent(session, app, email)
        _row, secret = issue_token(session, agent, label, now)
    click.echo(secret)


@agents.command("address")
@click.argument("email")
@click.argument("address")
@pass_state
@handle_errors
def agents_address(state: State, email: str, address: str) -> None:
    """Add a verified address to an agent: their answers by email may come from it."""
    with unit_of_work(state) as (session, app, now):
        agent = services.find_agent(session, app, email)
        row = services.add_agent_address(session, agent, address, now)
    click.echo(f"{row.address} is a verified address of {agent.email}")


@agents.command("notify")
@click.argument("email")
@click.option("--events", help=f"comma-separated, of: {', '.join(notifications.KINDS)}")
@click.option("--digest/--immediate", default=None, help="one daily email, or each at once")
@click.option("--digest-hour", type=int, help="UTC hour of the daily digest (0-23)")
@pass_state
@handle_errors
def agents_notify(
    state: State, email: str, events: str | None, digest: bool | None, digest_hour: int | None
) -> None:
    """Which notification emails an agent gets, and when; prints the result."""
    chosen = None if events is None else [e.strip() for e in events.split(",") if e.strip()]
    with unit_of_work(state) as (session, app, _now):
        agent = services.find_agent(session, app, email)
        prefs = notifications.set_preferences(
            agent, events=chosen, digest=digest, digest_hour=digest_hour
        )
    mode = f"daily digest at {prefs.digest_hour:02d}:00 UTC" if prefs.digest else "immediately"
    click.echo(f"{agent.email}: {', '.join(sorted(prefs.events))}; {mode}")


@agents.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_state
@handle_errors
def agents_list(state: State, as_json: bool) -> None:
    """List agents."""
    with unit_of_work(state) as (session, app, _):
        rows = [views.agent_json(a) for a in services.list_agents(session, app)]
    if as_json:
        echo_json(rows)
        return
    table = Table("email", "name", "role", "active")
    for r in rows:
        table.add_row(r["email"], r["name"], r["role"], "yes" if r["active"] else "no")
    console().print(table)


# --- conversations ------------------------------------------------------------------------


@cli.group()
def conversations() -> None:
    """Conversations (Inbox) and their ticket layer (Tickets)."""


@conversations.command("list")
@click.option("--view", type=click.Choice(["inbox", "tickets"]), default="inbox", show_default=True)
@click.option("--state", "state_filter", help="open, snoozed, resolved, closed")
@click.option("--status", help="ticket status")
@click.option("--priority", help="ticket priority")
@click.option("--assignee", help="agent email")
@click.option("--tag")
@click.option("--customer", help="customer email")
@click.option("--limit", type=int, default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@pass_state
@handle_errors
def conversations_list(
    state: State,
    view: str,
    state_filter: str | None,
    status: str | None,
    priority: str | None,
    assignee: str | None,
    tag: str | None,
    customer: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List the Inbox or the Tickets view; a converted conversation is in both."""
    with unit_of_work(state) as (session, app, _):
        assignee_id = services.find_agent(session, app, assignee).id if assignee else None
        f = services.ListFilter(
            view=view,  # type: ignore[arg-type]
            state=state_filter,
            status=status,
            priority=priority,
            assignee_id=assignee_id,
            tag=tag,
            customer_email=customer,
            limit=limit,
        )
        rows = [views.conversation_summary(c) for c in services.list_conversations(session, app, f)]
    if as_json:
        echo_json(rows)
        return
    table = Table("id", "customer", "state", "subject", "ticket", title=view.capitalize())
    for r in rows:
        t = r["ticket"]
        ticket = f"#{t['number']} {t['status']} {t['priority']}" if t else ""
        table.add_row(str(r["id"]), r["customer"]["email"] or "", r["state"], r["subject"], ticket)
    console().print(table)


def _conversation(session: Session, app: App, conversation_id: str) -> Conversation:
    return services.get_conversation(session, app, parse_id(conversation_id))


@conversations.command("show")
@click.argument("conversation_id")
@click.option("--json", "as_json", is_flag=True)
@pass_state
@handle_errors
def conversations_show(state: State, conversation_id: str, as_json: bool) -> None:
    """The team's full view: messages, notes, the ticket layer and the audit trail."""
    with unit_of_work(state) as (session, app, _):
        conversation = _conversation(session, app, conversation_id)
        events = list(
            session.scalars(
                select(Event).where(Event.conversation_id == conversation.id).order_by(Event.id)
            )
        )
        data = views.conversation_detail(conversation, events)
    if as_json:
        echo_json(data)
        return
    out = console()
    out.print(f"[bold]Conversation {data['id']}[/bold]: {data['subject']} ({data['state']})")
    out.print(f"Customer: {data['customer']['name'] or ''} <{data['customer']['email']}>")
    if data["participants"]:
        out.print("Cc: " + ", ".join(p["email"] for p in data["participants"]))
    if data["ticket"]:
        t = data["ticket"]
        out.print(
            f"Ticket #{t['number']}: {t['type']}, {t['status']}, {t['priority']}, "
            f"assignee {t['assignee'] or '-'}"
        )
        if t["email_check"] and not t["email_check"].get("ok"):
            out.print(f"[yellow]Email: {t['email_check']['reason']}[/yellow]")
        if t.get("summary"):
            out.print(f"Summary: {t['summary']}")
        for timer in t["sla"]:
            warned = ", warned" if timer["warned"] else ""
            out.print(
                f"SLA {timer['kind'].replace('_', ' ')}: {timer['state']}{warned}, "
                f"due {timer['due_at'] or '-'}"
            )
    for m in data["messages"]:
        out.print(f"[{m['created_at']}] {m['author_type']} via {m['via']}: {m['text']}")
    for n in data["notes"]:
        out.print(f"[yellow]note by {n['author'] or 'system'}: {n['text']}[/yellow]")


@conversations.command("customer-view")
@click.argument("conversation_id")
@click.option("--json", "as_json", is_flag=True)
@pass_state
@handle_errors
def conversations_customer_view(state: State, conversation_id: str, as_json: bool) -> None:
    """Exactly what the customer can see."""
    with unit_of_work(state) as (session, app, _):
        view = customer_view(app, _conversation(session, app, conversation_id))
    data = view.to_json()
    if as_json:
        echo_json(data)
        return
    for m in data["messages"]:
        click.echo(f"{m['author_name']}: {m['text']}")


# --- the ticket layer ---------------------------------------------------------------------


@cli.command()
@click.argument("conversation_id")
@click.option("--by", "by_email", required=True, help="the converting agent's email")
@click.option(
    "--type",
    "ticket_type",
    default="customer",
    show_default=True,
    help="customer, back_office or tracker",
)
@click.option("--priority", default="normal", show_default=True)
@click.option("--assignee", help="agent email")
@click.option("--category")
@pass_state
@handle_errors
def convert(
    state: State,
    conversation_id: str,
    by_email: str,
    ticket_type: str,
    priority: str,
    assignee: str | None,
    category: str | None,
) -> None:
    """Convert a conversation to a ticket; it stays in the Inbox."""
    with unit_of_work(state) as (session, app, now):
        conversation = _conversation(session, app, conversation_id)
        by = services.find_agent(session, app, by_email)
        assignee_agent = services.find_agent(session, app, assignee) if assignee else None
        ticket = services.convert(
            session,
            conversation,
            by,
            now,
            type=ticket_type,
            priority=priority,
            assignee=assignee_agent,
            category=category,
        )
        number, ticket_id = ticket.number, ticket.id
    # A one-shot command has no worker to wait for: run the check (and the first summary) here.
    # The conversion is committed already; whatever fails below, the sweep does it later.
    from gateway.background import run_email_check, run_summary

    check = run_email_check(state.runtime(), ticket_id)
    run_summary(state.runtime(), ticket_id)
    click.echo(f"conversation {conversation_id} converted: ticket #{number}")
    if check and not check.get("ok"):
        click.echo(f"warning: {check['reason']} ({check.get('setup_url')})")


def _agent_action(
    state: State,
    conversation_id: str,
    action: Callable[[Session, App, Conversation, dt.datetime], str],
) -> None:
    with unit_of_work(state) as (session, app, now):
        conversation = _conversation(session, app, conversation_id)
        message = action(session, app, conversation, now)
    click.echo(message)


@cli.command()
@click.argument("conversation_id")
@click.option("--by", "by_email", required=True)
@click.option("--text", required=True)
@pass_state
@handle_errors
def reply(state: State, conversation_id: str, by_email: str, text: str) -> None:
    """A public reply: the customer will see it."""

    def act(session: Session, app: App, conversation: Conversation, now: dt.datetime) -> str:
        agent = services.find_agent(session, app, by_email)
        message = services.add_agent_message(session, conversation, agent, text, now)
        return f"reply {message.id} added to conversation {conversation.id}"

    _agent_action(state, conversation_id, act)


@cli.command()
@click.argument("conversation_id")
@click.option("--by", "by_email", required=True)
@click.option("--text", required=True)
@pass_state
@handle_errors
def note(state: State, conversation_id: str, by_email: str, text: str) -> None:
    """An internal note: team only."""

    def act(session: Session, app: App, conversation: Conversation, now: dt.datetime) -> str:
        agent = services.find_agent(session, app, by_email)
        added = services.add_note(session, conversation, agent, text, now)
        return f"note {added.id} added to conversation {conversation.id}"

    _agent_action(state, conversation_id, act)


@cli.command()
@click.argument("conversation_id")
@click.argument("email")
@pass_state
@handle_errors
def assign(state: State, conversation_id: str, email: str) -> None:
    """Assign the ticket to an agent ('none' unassigns)."""

    def act(session: Session, app: App, conversation: Conversation, now: dt.datetime) -> str:
        ticket = services.require_ticket(conversation)
        agent = None if email == "none" else services.find_agent(session, app, email)
        services.assign(session, ticket, agent, services.SYSTEM, now)
        return f"conversation {conversation.id} assigned to {agent.email if agent else 'nobody'}"

    _agent_action(state, conversation_id, act)


@cli.command("status-set")
@click.argument("conversation_id")
@click.argument("status")
@pass_state
@handle_errors
def status_set(state: State, conversation_id: str, status: str) -> None:
    """Set the ticket status: open, in_progress, waiting_on_customer, resolved."""

    def act(session: Session, app: App, conversation: Conversation, now: dt.datetime) -> str:
        ticket = services.require_ticket(conversation)
        services.set_status(session, ticket, status, services.SYSTEM, now)
        return f"conversation {conversation.id}: status {ticket.status.value}"

    _agent_action(state, conversation_id, act)


@cli.command("priority-set")
@click.argument("conversation_id")
@click.argument("priority")
@pass_state
@handle_errors
def priority_set(state: State, conversation_id: str, priority: str) -> None:
    """Set the ticket priority: low, normal, high, urgent."""

    def act(session: Session, app: App, conversation: Conversation, now: dt.datetime) -> str:
        ticket = services.require_ticket(conversation)
        services.set_priority(session, ticket, priority, services.SYSTEM, now)
        return f"conversation {conversation.id}: priority {ticket.priority.value}"

    _agent_action(state, conversation_id, act)


@cli.command()
@click.argument("conversation_id")
@click.option("--until", "until", required=True, help="ISO 8601 time or a duration (30m, 2d)")
@pass_state
@handle_errors
def snooze(state: State, conversation_id: str, until: str) -> None:
    """Snooze until a time or the customer's next message."""

    def act(session: Session, app: App, conversation: Conversation, now: dt.datetime) -> str:
        when = parse_when(until, now)
        services.snooze(session, conversation, when, services.SYSTEM, now)
        return f"conversation {conversation.id} snoozed until {when.isoformat()}"

    _agent_action(state, conversation_id, act)


@cli.command()
@click.argument("conversation_id")
@pass_state
@handle_errors
def resolve(state: State, conversation_id: str) -> None:
    """Resolve the conversation (and its ticket)."""

    def act(session: Session, app: App, conversation: Conversation, now: dt.datetime) -> str:
        services.resolve(session, conversation, services.SYSTEM, now)
        return f"conversation {conversation.id} resolved"

    _agent_action(state, conversation_id, act)


@cli.command()
@click.argument("conversation_id")
@pass_state
@handle_errors
def reopen(state: State, conversation_id: str) -> None:
    """Reopen a resolved conversation."""

    def act(session: Session, app: App, conversation: Conversation, now: dt.datetime) -> str:
        services.reopen(session, conversation, services.SYSTEM, now)
        return f"conversation {conversation.id} reopened"

    _agent_action(state, conversation_id, act)


@cli.command()
@click.argument("conversation_id")
@click.argument("tags", nargs=-1, required=True)
@click.option("--remove", is_flag=True)
@pass_state
@handle_errors
def tag(state: State, conversation_id: str, tags: tuple[str, ...], remove: bool) -> None:
    """Add (or --remove) tags."""

    def act(session: Session, app: App, conversation: Conversation, now: dt.datetime) -> str:
        for name in tags:
            if remove:
                services.remove_tag(session, conversation, name, services.SYSTEM, now)
            else:
                services.add_tag(session, conversation, name, services.SYSTEM, now)
        return (
            f"conversation {conversation.id}: tags {', '.join(t.name for t in conversation.tags)}"
        )

    _agent_action(state, conversation_id, act)


@cli.command()
@click.argument("conversation_id")
@click.argument("tracker_id")
@pass_state
@handle_errors
def link(state: State, conversation_id: str, tracker_id: str) -> None:
    """Link a customer ticket to a tracker ticket."""

    def act(session: Session, app: App, conversation: Conversation, now: dt.datetime) -> str:
        ticket = services.require_ticket(conversation)
        tracker = services.require_ticket(_conversation(session, app, tracker_id))
        services.link_to_tracker(session, ticket, tracker, services.SYSTEM, now)
        return f"conversation {conversation.id} linked to tracker {tracker_id}"

    _agent_action(state, conversation_id, act)


def main() -> None:
    cli(prog_name="gateway")


# --- inbound mail -------------------------------------------------------------------------


def _read_eml(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise DomainError(f"{path}: {exc.strerror}") from None


@cli.command("parse")
@click.argument("path")
@click.option("--json", "as_json", is_flag=True)
@pass_state
@handle_errors
def parse_cmd(state: State, path: str, as_json: bool) -> None:
    """Parse one message as the gateway would; stores nothing."""
    from channels.email.isolate import parse_isolated
    from channels.email.parse import MessageRejected
    from gateway.inbound import config_parse_limits

    try:
        parsed = parse_isolated(_read_eml(path), config_parse_limits(state.config))
    except MessageRejected as exc:
        raise DomainError(f"{path}: would be quarantined: {exc}") from None
    data = parsed.to_json()
    if as_json:
        echo_json(data)
        return
    click.echo(f"From: {data['from']['name']} <{data['from']['address']}>")
    click.echo(f"Subject: {data['subject']}")
    flags = [k for k in ("is_auto_reply", "is_bounce", "is_spam") if data[k]]
    if flags:
        click.echo(f"Flags: {', '.join(flags)}")
    click.echo("")
    click.echo(data["reply_text"])


@cli.command()
@click.argument("path")
@pass_state
@handle_errors
def explain(state: State, path: str) -> None:
    """Where this message would be threaded, and why; stores nothing."""
    from channels.email.batch_index import BatchIndex
    from channels.email.process import run_pipeline
    from gateway.inbound import channel_rules
    from tickets.inbound import IncomingMail, store_incoming

    raw = _read_eml(path)
    runtime = state.runtime()
    with runtime.sessions() as session:
        session.begin()
        try:
            app = state.app(session)
            [row_id] = store_incoming(
                session, [IncomingMail(raw=raw, source="import", app_id=app.id)], runtime.clock()
            )
            from tickets.models import InboundMail

            row = session.get(InboundMail, row_id)
            assert row is not None
            result = run_pipeline(
                session,
                row,
                app,
                channel_rules(runtime, session, row),
                runtime.clock(),
                BatchIndex(session),
            )
            _explain_result(result)
        except Exception as exc:  # noqa: BLE001 - explain what processing would do with it
            click.echo(f"outcome: quarantined: {exc}")
            for note in getattr(exc, "__notes__", ()):
                click.echo(note)
        finally:
            session.rollback()


def _explain_result(result: Processing) -> None:
    from channels.email.explain import flag_lines, rule_line

    click.echo(f"outcome: {_would(result)}")
    if result.ended_by not in (None, "store"):
        click.echo(f"filter: {result.ended_by}")
    if result.rule:
        click.echo(rule_line(result.rule))
    conversation = result.conversation
    if conversation is not None and result.rule != "new conversation":
        click.echo(f"conversation: {conversation.id} ({conversation.subject})")
    parsed, message = result.parsed, result.message
    auto_reply = parsed.auto_reply if parsed is not None and message is not None else None
    for line in flag_lines(message.flags if message is not None else result.flags, auto_reply):
        click.echo(line)


def _would(result: Processing) -> str:
    """The outcome in the conditional: explain rolls processing back, so the rows processing
    names (a new message, note or conversation) never exist and their numbers mean nothing."""
    outcome = result.outcome or ""
    if result.ended_by == "store":
        copied = outcome.partition("; copied: ")[2]
        also = f"; would copy in {copied}" if copied else ""
        if result.rule == "new conversation":
            return f"would start a new conversation with this message{also}"
        return f"would be added to conversation {result.conversation_id} ({result.rule}){also}"
    outcome = re.sub(r"\b(posted|stored) as (message|note) \d+", r"would be \1 as a \2", outcome)
    return re.sub(r"\bmarked undeliverable\b", "would mark undeliverable", outcome)


@cli.group()
def quarantine() -> None:
    """Mail that could not be processed: kept with its bytes and the reason."""


@quarantine.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_state
@handle_errors
def quarantine_list(state: State, as_json: bool) -> None:
    from tickets.inbound import list_quarantined

    runtime = state.runtime()
    with runtime.unit_of_work() as session:
        rows = [
            {
                "id": r.id,
                "received_at": r.received_at.isoformat(),
                "source": r.source,
                "envelope_from": r.envelope_from,
                "size": r.size,
                "reason": r.reason,
            }
            for r in list_quarantined(session, limit=1000)
        ]
    if as_json:
        echo_json(rows)
        return
    table = Table("id", "received", "from", "reason")
    for r in rows:
        table.add_row(
            str(r["id"]),
            str(r["received_at"]),
            str(r["envelope_from"] or ""),
            str(r["reason"] or ""),
        )
    console().print(table)


@cli.group()
def outbox() -> None:
    """Outbound mail and its delivery state."""


@outbox.command("list")
@click.option("--limit", type=int, default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@pass_state
@handle_errors
def outbox_list(state: State, limit: int, as_json: bool) -> None:
    """The newest outbound mail first: state, attempts, next attempt, last error."""
    from channels.email.outbox import list_rows

    with unit_of_work(state) as (session, app, _now):
        rows = [views.outbox_json(r) for r in list_rows(session, app.id, limit)]
    if as_json:
        echo_json(rows)
        return
    table = Table("id", "state", "to", "conversation", "attempts", "next attempt", "last error")
    for r in rows:
        table.add_row(
            str(r["id"]),
            r["state"],
            ", ".join(r["recipients"]),
            str(r["conversation_id"] or ""),
            str(r["attempts"]),
            str(r["next_attempt_at"] or ""),
            str(r["last_error"] or ""),
        )
    console().print(table)


@outbox.command("retry")
@click.argument("outbox_id")
@pass_state
@handle_errors
def outbox_retry(state: State, outbox_id: str) -> None:
    """Send a failed or held email again (after checking it did not arrive)."""
    from channels.email.outbox import retry

    if not outbox_id.isdigit():
        raise DomainError(f"{outbox_id!r} is not an outbox id")
    with unit_of_work(state) as (session, _app, now):
        retry(session, int(outbox_id), now)
    click.echo(f"outbox {outbox_id} queued again; it goes out with the next sweep")


def _inbound_id(value: str) -> int:
    if not value.isdigit():
        raise DomainError(f"{value!r} is not an inbound mail id")
    return int(value)


@quarantine.command("show")
@click.argument("inbound_id")
@click.option("--raw", is_flag=True, help="print the message bytes")
@pass_state
@handle_errors
def quarantine_show(state: State, inbound_id: str, raw: bool) -> None:
    from tickets.inbound import get_inbound

    runtime = state.runtime()
    with runtime.unit_of_work() as session:
        row = get_inbound(session, _inbound_id(inbound_id))
        if raw:
            sys.stdout.buffer.write(row.raw)
            return
        click.echo(f"id: {row.id}\nstate: {row.state.value}\nsource: {row.source}")
        click.echo(f"from: {row.envelope_from}\nto: {', '.join(row.envelope_to)}")
        click.echo(f"size: {row.size}\nreason: {row.reason}")


@quarantine.command("reprocess")
@click.argument("inbound_id")
@pass_state
@handle_errors
def quarantine_reprocess(state: State, inbound_id: str) -> None:
    from gateway.inbound import process_inbound
    from tickets.inbound import release_for_reprocessing

    runtime = state.runtime()
    with runtime.unit_of_work() as session:
        release_for_reprocessing(session, _inbound_id(inbound_id))
    outcome = process_inbound(runtime, int(inbound_id))
    if outcome is None:
        fail(f"inbound mail {inbound_id} was processed meanwhile")
    click.echo(f"{outcome.state}: {outcome.detail}")
    if outcome.state != "processed":
        sys.exit(EXIT_USER_ERROR)


@quarantine.command("discard")
@click.argument("inbound_id")
@pass_state
@handle_errors
def quarantine_discard(state: State, inbound_id: str) -> None:
    from tickets.inbound import discard

    runtime = state.runtime()
    with runtime.unit_of_work() as session:
        discard(session, _inbound_id(inbound_id), runtime.clock())
    click.echo(f"inbound mail {inbound_id} discarded")


cli.add_command(domains_group)
cli.add_command(import_cmd)
cli.add_command(participants_group)
agents.add_command(login_link)
agents.add_command(password)


@cli.group()
def channels() -> None:
    """Email channels."""


@channels.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_state
@handle_errors
def channels_list(state: State, as_json: bool) -> None:
    from tickets.models import Channel

    with unit_of_work(state) as (session, app, _):
        rows = [
            {
                "name": c.name,
                "addresses": [a.address for a in c.addresses],
                "enabled": c.enabled,
                "inbound": ["smtp"] + (["imap"] if c.settings.get("imap") else []),
                "verified_at": c.verified_at.isoformat() if c.verified_at else None,
            }
            for c in session.scalars(select(Channel).where(Channel.app_id == app.id))
        ]
    if as_json:
        echo_json(rows)
        return
    table = Table("name", "addresses", "inbound", "verified")
    for r in rows:
        table.add_row(
            str(r["name"]),
            ", ".join(r["addresses"]),  # type: ignore[arg-type]
            "+".join(r["inbound"]),  # type: ignore[arg-type]
            str(r["verified_at"] or "no"),
        )
    console().print(table)


@channels.command("add")
@click.argument("name")
@click.option("--address", "addresses", multiple=True, required=True, help="Repeat for more.")
@click.option("--imap-host", help="Fetch mail from this IMAP server too.")
@click.option("--imap-port", type=int, default=993, show_default=True)
@click.option("--imap-ssl/--imap-no-ssl", default=True, show_default=True)
@click.option("--imap-starttls", is_flag=True)
@click.option("--imap-user")
@click.option("--imap-password-env", help="Environment variable holding the IMAP password.")
@click.option("--imap-folder", default="INBOX", show_default=True)
@pass_state
@handle_errors
def channels_add(
    state: State,
    name: str,
    addresses: tuple[str, ...],
    imap_host: str | None,
    imap_port: int,
    imap_ssl: bool,
    imap_starttls: bool,
    imap_user: str | None,
    imap_password_env: str | None,
    imap_folder: str,
) -> None:
    """Add an email channel (stored in the database; config channels stay in the file)."""
    from gateway.channel_admin import create_channel

    imap = None
    if imap_host:
        if not imap_user:
            raise DomainError("--imap-host needs --imap-user")
        imap = {
            "host": imap_host,
            "port": imap_port,
            "ssl": imap_ssl,
            "starttls": imap_starttls,
            "username": imap_user,
            "password_env": imap_password_env,
            "folder": imap_folder,
        }
    with unit_of_work(state) as (session, app, now):
        channel = create_channel(session, app, name, list(addresses), now, imap=imap, source="cli")
        where = ", ".join(a.address for a in channel.addresses)
    click.echo(f"channel {name} added ({where}); run 'gateway channels test {name}'")


@channels.command("test")
@click.argument("name")
@click.option(
    "--timeout",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds to wait for the round-trip mail.",
)
@click.option("--json", "as_json", is_flag=True)
@pass_state
@handle_errors
def channels_test(state: State, name: str, timeout: float, as_json: bool) -> None:
    """Check IMAP, the SMTP relay and a round trip; success marks the channel verified."""
    from gateway.channel_admin import check_channel, get_channel

    with unit_of_work(state) as (session, app, _):
        channel = get_channel(session, app, name=name)
        app_id, channel_id = app.id, channel.id
    result = check_channel(state.runtime(), app_id, channel_id, timeout=timeout)
    if as_json:
        echo_json(result)
    else:
        for step in result["steps"]:
            click.echo(f"{'ok  ' if step['ok'] else 'FAIL'} {step['name']}: {step['detail']}")
    if not result["ok"]:
        fail(f"channel {name}: {result['message']}. Hint: {result['hint']}")
    if not as_json:
        click.echo(f"channel {name} verified")


@channels.command("imap-status")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@pass_state
@handle_errors
def channels_imap_status(state: State, name: str, as_json: bool) -> None:
    """Reconcile the mailbox with what was ingested: nothing may be silently skipped."""
    from channels.email.imap import ImapError
    from gateway.inbound import imap_pollers

    pollers = imap_pollers(state.runtime(), lambda _id: None, channel=name)
    if not pollers:
        raise DomainError(f"no channel {name!r} with an IMAP account")
    try:
        result = pollers[0].reconcile()
    except ImapError as exc:
        raise DomainError(str(exc)) from None
    if as_json:
        echo_json(result)
    else:
        click.echo(
            f"{result['on_server']} on the server, {result['ingested']} ingested, "
            f"{len(result['missing'])} missing"
        )
    if result["missing"]:
        sys.exit(EXIT_USER_ERROR)
