"""Wiring of the inbound path: routes for RCPT, the durable store behind SMTP, IMAP and import,
and the processing of one stored mail (called by the `process_inbound` actor and the CLI)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from channels.email.parse import MessageRejected, ParseLimits
from channels.email.process import ChannelRules, Processing, run_pipeline
from channels.email.smtp import Route
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
    own = {
        address.rpartition("@")[2]
        for app in runtime.config.apps
        for channel in app.channels
        for address in channel.addresses
    }
    settings = {}
    if row.channel_id is not None:
        channel = session.get(Channel, row.channel_id)
        settings = channel.settings if channel else {}
    return ChannelRules(
        own_domains=frozenset(own),
        subject_threading=bool(settings.get("subject_threading", True)),
        subject_threading_days=int(settings.get("subject_threading_days", 14)),
        limits=parse_limits,
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
