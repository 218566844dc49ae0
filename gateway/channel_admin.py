"""Email channels managed at run time (CLI and admin API) and their end-to-end check.

Channels from the config file are synced into the database at start and stay read-only here
(the file is their source of truth); channels added by the CLI or the API live only in the
database. Secrets: the operator (config file, CLI) names an environment variable or file for a
password; an app admin (API) gives it by value, and it is stored sealed, never returned or
logged, and only ever sent to a host the operator allows for the app (gateway.channel_targets).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, object_session

from channels.email.check import (
    CheckFailed,
    ImapTarget,
    Report,
    SmtpTarget,
    Step,
    check_imap,
    check_smtp,
    find_in_imap,
    new_token,
    round_trip,
)
from channels.email.egress import HostPolicy
from gateway.channel_targets import (
    OPERATOR,
    check_host,
    imap_target,
    indirect_keys,
    smtp_target,
    store_passwords,
)
from gateway.config import ConfigError
from gateway.runtime import Runtime
from gateway.secret_box import SECRETS, SecretBox
from tickets import domains, services
from tickets.errors import InvalidValue, NotAllowed, NotFound
from tickets.models import App, Channel, ChannelAddress, InboundMail


def _address(value: str) -> str:
    address = services.normalize_address(value)
    if "+" in address.partition("@")[0]:
        raise InvalidValue(f"{value!r} is not a plain address like support@example.com")
    return address


def get_channel(
    session: Session, app: App, channel_id: int | None = None, name: str = ""
) -> Channel:
    query = select(Channel).where(Channel.app_id == app.id)
    query = (
        query.where(Channel.id == channel_id) if channel_id else query.where(Channel.name == name)
    )
    channel = session.scalar(query)
    if channel is None:
        raise NotFound(f"no channel {channel_id or name!r}")
    return channel


def _set_addresses(session: Session, channel: Channel, addresses: list[str]) -> None:
    wanted = list(dict.fromkeys(_address(a) for a in addresses))
    if not wanted:
        raise InvalidValue("a channel needs at least one address")
    have = {a.address: a for a in channel.addresses}
    for address in wanted:
        if address in have:
            continue
        # The domain first: on another app's domain every address gets the same answer, so
        # asking does not tell which of its addresses that app uses.
        domains.check_new_address(session, channel.app_id, address)
        owner = session.scalar(select(ChannelAddress).where(ChannelAddress.address == address))
        if owner is not None:
            # An address belongs to one channel of one app; whose it is stays private.
            raise NotAllowed(f"{address} is already in use")
    for address, row in have.items():
        if address not in wanted:
            channel.addresses.remove(row)
    session.flush()  # a removed address may be given back in the same change
    for address in wanted:
        if address not in have:
            channel.addresses.append(ChannelAddress(address=address))
            try:
                # The unique address decides between two concurrent requests for it; the
                # loser's transaction is rolled back with the 409.
                session.flush()
            except IntegrityError:
                raise NotAllowed(f"{address} is already in use") from None


def _split_secrets(
    key: str, section: dict[str, Any], passwords: dict[str, str], *, operator: bool
) -> dict[str, Any]:
    """The section as stored: its password moved into `passwords`, marked when the operator
    wrote it. Only the operator may point at a secret on the server (*_env, *_file)."""
    section = dict(section)
    named = indirect_keys(section)
    if named and not operator:
        raise InvalidValue(
            f"{key}.{named[0]}: give the password itself ('password'); environment variables "
            "and files on the server can be named only in the operator's config file"
        )
    password = section.pop("password", None)
    if password:
        passwords[key] = password
    if operator:
        section[OPERATOR] = True
    return section


def create_channel(
    session: Session,
    app: App,
    name: str,
    addresses: list[str],
    now: dt.datetime,
    *,
    imap: dict[str, Any] | None = None,
    smtp: dict[str, Any] | None = None,
    source: str = "api",
    box: SecretBox | None = None,
    policy: HostPolicy | None = None,
) -> Channel:
    name = name.strip()
    if not name or len(name) > 100:
        raise InvalidValue("a channel needs a name of 1 to 100 characters")
    if session.scalar(select(Channel).where(Channel.app_id == app.id, Channel.name == name)):
        raise InvalidValue(f"channel {name!r} exists already")
    channel = Channel(app_id=app.id, name=name, created_at=now, settings={"source": source})
    session.add(channel)
    session.flush()
    update_channel(
        session, channel, addresses=addresses, imap=imap, smtp=smtp, box=box, policy=policy
    )
    return channel


def update_channel(
    session: Session,
    channel: Channel,
    *,
    addresses: list[str] | None = None,
    imap: dict[str, Any] | None = None,
    smtp: dict[str, Any] | None = None,
    clear: tuple[str, ...] = (),
    box: SecretBox | None = None,
    policy: HostPolicy | None = None,
) -> None:
    """Change what is given; `clear` names sections ("imap", "smtp") to remove.

    `policy` is the operator's host allow-list for the app when an app admin writes (None:
    the operator writes, through the CLI). `box` seals the passwords given by value."""
    if channel.settings.get("source") == "config":
        raise NotAllowed(f"channel {channel.name!r} comes from the config file; change it there")
    operator = channel.settings.get("source") == "cli" and policy is None
    settings = dict(channel.settings)
    secrets = dict(settings.get(SECRETS, {}))
    for section in clear:
        settings.pop(section, None)
        secrets.pop(section, None)
    given: dict[str, str] = {}
    for key, value in (("imap", imap), ("smtp", smtp)):
        if value is None:
            continue
        new = _split_secrets(key, value, given, operator=operator)
        check_host(policy, key, new)
        old = settings.get(key) or {}
        if key not in given and any(old.get(k) != new.get(k) for k in ("host", "port", "username")):
            # A kept password goes only where it went before: a new host or user needs it anew.
            secrets.pop(key, None)
        settings[key] = new
    settings[SECRETS] = store_passwords(box, secrets, given)
    channel.settings = settings
    if addresses is not None:
        _set_addresses(session, channel, addresses)
    # Changed settings invalidate an earlier passing check.
    channel.verified_at = None
    session.flush()


def channel_json(channel: Channel) -> dict[str, Any]:
    """The channel as an admin sees it; passwords are reported only as present or absent."""
    settings = channel.settings
    secrets = settings.get(SECRETS, {})

    def section(key: str) -> dict[str, Any] | None:
        value = settings.get(key)
        if not value:
            return None
        out = {k: v for k, v in value.items() if k != OPERATOR and not k.startswith("password")}
        out["has_password"] = bool(secrets.get(key)) or bool(indirect_keys(value))
        return out

    session = object_session(channel)
    proofs = domains.proofs(session) if session is not None else None
    return {
        "id": channel.id,
        "name": channel.name,
        "addresses": [a.address for a in channel.addresses],
        "unproven_addresses": [
            a.address
            for a in channel.addresses
            if proofs is not None and not proofs.allows(channel.app_id, a.address)
        ],
        "enabled": channel.enabled,
        "source": settings.get("source", "config"),
        "imap": section("imap"),
        "smtp": section("smtp"),
        "verified_at": channel.verified_at,
        "last_test": channel.last_test,
    }


def own_smtp(runtime: Runtime) -> SmtpTarget:
    """The gateway's own SMTP server as the check's relay.

    With the `file` transport (the embedded default) nothing leaves the machine, and the mail
    that must work is mail *to* the channel's address: the round trip then goes through the
    server that receives it, so a fresh install can verify its channel."""
    host, _, port = runtime.config.smtp.listen.rpartition(":")
    host = host.strip("[]")
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104
    return SmtpTarget(host=host, port=int(port), starttls=False, tls=False, username=None,
                      password=None)  # fmt: skip


# --- the end-to-end check ----------------------------------------------------------------


def _arrived_in_database(runtime: Runtime, token: str, since: dt.datetime) -> bool:
    needle = token.encode()
    with runtime.unit_of_work() as session:
        rows = session.scalars(
            select(InboundMail.raw)
            .where(InboundMail.received_at >= since)
            .order_by(InboundMail.id.desc())
            .limit(500)
        )
        return any(needle in raw for raw in rows)


def check_channel(
    runtime: Runtime,
    app_id: int,
    channel_id: int,
    timeout: float = 60.0,
    listener: Callable[[Step], None] | None = None,
) -> dict[str, Any]:
    """Run IMAP, relay and round-trip checks; store the result and, on success, verify the
    channel. Returns the stored result; `listener` hears of each step as it ends."""
    with runtime.unit_of_work() as session:
        channel = session.get(Channel, channel_id)
        if channel is None or channel.app_id != app_id:
            raise NotFound(f"no channel {channel_id}")
        address = channel.addresses[0].address if channel.addresses else None
        proofs = domains.proofs(session)
        unproven = [a.address for a in channel.addresses if not proofs.allows(app_id, a.address)]
        try:
            imap, smtp = imap_target(runtime, channel), smtp_target(runtime, channel)
        except ConfigError as exc:
            unreadable: ConfigError | None = exc
        else:
            unreadable = None
    started = runtime.clock() - dt.timedelta(seconds=5)
    report = Report(listener=listener)
    try:
        if unreadable is not None:
            raise CheckFailed("passwords", str(unreadable), "give the channel's password again")
        if unproven:
            # Mail to it would be refused and nothing sent from it: no point testing further.
            domain = domains.domain_of(unproven[0])
            raise CheckFailed(
                "domain",
                f"{unproven[0]}: the domain {domain} is not proven for this app",
                domains.how_to_prove(domain),
            )
        _run(runtime, report, address, imap, smtp, started, timeout)
    except CheckFailed as failed:
        report.add(failed.step)
    now = runtime.clock()
    failed_step = next((s for s in report.steps if not s.ok), None)
    result = {
        "ok": report.ok,
        "checked_at": now.isoformat(),
        "message": failed_step.detail if failed_step else "the channel works end to end",
        "hint": failed_step.hint if failed_step else None,
        "steps": [s.as_dict() for s in report.steps],
    }
    with runtime.unit_of_work() as session:
        channel = session.get(Channel, channel_id)
        assert channel is not None
        channel.last_test = result
        # A failing check withdraws an earlier verification: the mailbox is not working now.
        channel.verified_at = now if report.ok else None
    return result


def _run(
    runtime: Runtime,
    report: Report,
    address: str | None,
    imap: ImapTarget | None,
    smtp: SmtpTarget | None,
    since: dt.datetime,
    timeout: float,
) -> None:
    if address is None:
        raise CheckFailed("addresses", "the channel has no address", "add an address")
    if imap is not None:
        check_imap(imap, report, timeout=min(timeout, 15.0))
    own = smtp is None and runtime.config.outbound.transport == "file"
    if own:
        smtp = own_smtp(runtime)
        report.passed(
            "outbound",
            'outgoing mail is written to files (transport = "file"), so the test sends '
            f"through the gateway's own SMTP server at {smtp.where}",
        )
    if smtp is None:
        raise CheckFailed(
            "smtp connect",
            "no SMTP relay is configured, so no mail can be sent",
            'set [outbound] transport = "smtp" with host, port, starttls and username '
            "(or give the channel its own relay)",
        )
    try:
        client = check_smtp(smtp, report, timeout=min(timeout, 15.0))
    except CheckFailed as failed:
        if own:
            failed.step.hint = (
                f"the gateway's own SMTP server (smtp.listen = {runtime.config.smtp.listen}) "
                "must be running: start `gateway serve`; or send through a relay with "
                '[outbound] transport = "smtp"'
            )
        raise
    try:
        token = new_token()

        def arrived() -> bool:
            if imap is not None and find_in_imap(imap, token):
                return True
            return _arrived_in_database(runtime, token, since)

        round_trip(client, address, token, arrived, report, timeout, keyring=runtime.keyring)
    finally:
        with contextlib.suppress(Exception):
            client.quit()
