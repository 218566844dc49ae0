"""Wiring of the inbound path: routes for RCPT, the durable store behind SMTP, IMAP and import,
and the processing of one stored mail (called by the `process_inbound` actor and the CLI)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from channels.email.imap import ImapAccount, ImapPoller
from channels.email.parse import MessageRejected, ParseLimits
from channels.email.process import ChannelRules, Processing, run_pipeline
from channels.email.smtp import Route
from gateway.config import ConfigError
from gateway.runtime import Runtime
from tickets import inbound as inbound_store
from tickets.models import App, Channel, ChannelAddress, InboundMail, InboundState

log = logging.getLogger(__name__)


class RouteTable:
    """Channel addresses -> (app, channel), loaded from the database; refreshed on demand."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._routes: dict[str, Route] = {}
        self.refresh()

    def refresh(self) -> None:
        with self.runtime.unit_of_work() as session:
            rows = session.execute(
                select(ChannelAddress.address, Channel.app_id, Channel.id)
                .join(Channel, Channel.id == ChannelAddress.channel_id)
                .where(Channel.enabled.is_(True))
            )
            self._routes = {a: Route(app_id, channel_id) for a, app_id, channel_id in rows}

    def __call__(self, address: str) -> Route | None:
        return self._routes.get(address)


def store_batch(runtime: Runtime, mails: Sequence[inbound_store.IncomingMail]) -> list[int]:
    """Store and commit; the ids are durable when this returns."""
    with runtime.unit_of_work() as session:
        return inbound_store.store_incoming(session, mails, runtime.clock())


def channel_rules(runtime: Runtime, session: Session, row: InboundMail) -> ChannelRules:
    limits = runtime.config.limits
    parse_limits = ParseLimits(
        max_message_bytes=runtime.config.smtp.max_message_bytes,
        max_header_bytes=limits.max_header_bytes,
        max_mime_depth=limits.max_mime_depth,
        max_mime_parts=limits.max_mime_parts,
        max_attachment_bytes=limits.max_attachment_bytes,
    )
    addresses = {
        address.lower()
        for app in runtime.config.apps
        for channel in app.channels
        for address in channel.addresses
    }
    own = {address.rpartition("@")[2] for address in addresses}
    settings = {}
    if row.channel_id is not None:
        channel = session.get(Channel, row.channel_id)
        settings = channel.settings if channel else {}
    return ChannelRules(
        own_domains=frozenset(own),
        subject_threading=bool(settings.get("subject_threading", True)),
        subject_threading_days=int(settings.get("subject_threading_days", 14)),
        limits=parse_limits,
        channel_addresses=frozenset(addresses),
        keyring=runtime.keyring,
    )


@dataclass(frozen=True)
class Outcome:
    inbound_id: int
    state: str
    detail: str


def _app_for(session: Session, runtime: Runtime, row: InboundMail) -> App:
    if row.app_id is not None:
        app = session.get(App, row.app_id)
        if app is not None:
            return app
    # Imported mail without a route goes to the first app: import is an operator's act.
    name = runtime.config.apps[0].name if runtime.config.apps else None
    app = session.scalar(select(App).where(App.name == name)) if name else None
    if app is None:
        raise MessageRejected("no app to route this mail to")
    return app


def process_inbound(runtime: Runtime, inbound_id: int) -> Outcome | None:
    """Process one stored mail; None if it was not pending (safe to run twice).

    The pipeline runs in a savepoint: if it fails, its partial writes are undone and the row is
    quarantined with the reason in the same transaction, so the row is never left half-done.
    """
    now = runtime.clock()
    with runtime.unit_of_work() as session:
        row = session.scalar(
            select(InboundMail).where(InboundMail.id == inbound_id).with_for_update()
        )
        if row is None or row.state != InboundState.PENDING:
            return None
        row.attempts += 1
        try:
            with session.begin_nested():
                app = _app_for(session, runtime, row)
                result: Processing = run_pipeline(
                    session, row, app, channel_rules(runtime, session, row), now
                )
        except MessageRejected as exc:
            inbound_store.quarantine(session, row, str(exc), now)
            return Outcome(inbound_id, "quarantined", str(exc))
        except Exception as exc:
            log.exception("processing inbound mail %s failed", inbound_id)
            reason = f"{type(exc).__name__}: {exc}"
            inbound_store.quarantine(session, row, reason, now)
            return Outcome(inbound_id, "quarantined", reason)
        row.state = InboundState.PROCESSED
        row.processed_at = now
        row.reason = result.outcome
        return Outcome(inbound_id, "processed", result.outcome or "")


def _secret(env: str | None, file: str | None, what: str) -> str | None:
    if env:
        value = os.environ.get(env)
        if value:
            return value
    if file:
        try:
            return Path(file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{what}: cannot read {file}: {exc.strerror}") from None
    return None


def imap_pollers(
    runtime: Runtime, on_stored: Callable[[int], object], channel: str | None = None
) -> list[ImapPoller]:
    """One poller per channel with an `[apps.channels.imap]` section (or just `channel`)."""
    routes = RouteTable(runtime)
    pollers = []
    for app_config in runtime.config.apps:
        for channel_config in app_config.channels:
            imap = channel_config.imap
            if imap is None or (channel is not None and channel_config.name != channel):
                continue
            route = routes(channel_config.addresses[0])
            where = f"apps.{app_config.name}.channels.{channel_config.name}.imap"
            account = ImapAccount(
                name=channel_config.name,
                host=imap.host,
                port=imap.port,
                ssl=imap.ssl,
                starttls=imap.starttls,
                username=imap.username,
                password=_secret(imap.password_env, imap.password_file, where),
                oauth2_token=_secret(imap.oauth2_token_env, imap.oauth2_token_file, where),
                folder=imap.folder,
                processed_folder=imap.processed_folder,
                backfill_days=imap.backfill_days,
                poll_seconds=imap.poll_seconds,
                idle=imap.idle,
                app_id=route.app_id if route else None,
                channel_id=route.channel_id if route else None,
            )
            pollers.append(_poller(runtime, account, on_stored))
    return pollers


def _poller(
    runtime: Runtime, account: ImapAccount, on_stored: Callable[[int], object]
) -> ImapPoller:
    def stored_keys(prefix: str) -> set[str]:
        with runtime.unit_of_work() as session:
            return inbound_store.source_keys_stored(session, prefix)

    def stored_hashes(shas: Sequence[str]) -> set[str]:
        with runtime.unit_of_work() as session:
            return set(
                session.scalars(
                    select(InboundMail.sha256).where(
                        InboundMail.sha256.in_(list(shas)),
                        InboundMail.source_key.startswith(f"imap:{account.name}:"),
                    )
                )
            )

    def notify(inbound_id: int) -> None:
        on_stored(inbound_id)

    return ImapPoller(
        account,
        lambda mails: store_batch(runtime, mails),
        stored_keys,
        stored_hashes,
        notify,
        runtime.clock,
    )
