"""Wiring of the inbound path: routes for RCPT, the durable store behind SMTP, IMAP and import,
and the processing of one stored mail (called by the `process_inbound` actor and the CLI)."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, Table, bindparam, func, select
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from channels.email.agent_reply import AgentMailPolicy, AgentMailRejected, record_rejection
from channels.email.batch_index import BatchIndex
from channels.email.imap import ImapAccount, ImapPoller
from channels.email.isolate import parse_many_isolated
from channels.email.parse import (
    MessageRejected,
    ParsedMail,
    ParseLimits,
    header_message_ids,
)
from channels.email.process import run_pipeline
from channels.email.process_record import ChannelRules, Processing
from channels.email.sender_auth import DnsFunc, resolver_txt
from channels.email.smtp import Route, base_address
from channels.email.tokens import TokenError, bounce_token_in
from gateway.config import ConfigError, GatewayConfig
from gateway.db import reading_engine, session_factory
from gateway.runtime import Runtime
from tickets import domains
from tickets import inbound as inbound_store
from tickets.deferred import DeferredWrites
from tickets.models import (
    App,
    Channel,
    ChannelAddress,
    Event,
    InboundMail,
    InboundState,
)

log = logging.getLogger(__name__)


# The answer to RCPT for an address whose domain its app has not proven (tickets.domains).
UNPROVEN_DOMAIN = "Mailbox unavailable: its domain is not verified on this gateway"


class RouteTable:
    """Channel addresses -> (app, channel), loaded from the database and refreshed.

    A channel address takes its plus forms too; a return path (`bounces+<token>@domain`) is
    routed only when we signed its token, to the token's app on a channel of that domain.

    RCPT is answered from memory, on the SMTP event loop, so it never waits on the database;
    `start_refreshing` reloads the table in a thread every few seconds, so a channel added,
    readdressed or disabled through the API or the CLI takes effect without a restart, and an
    address is accepted once its domain is proven for its app.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._routes: dict[str, Route] = {}
        self._domains: dict[str, list[Route]] = {}
        self.refresh()

    def start_refreshing(self, every_seconds: float) -> Callable[[], None]:
        """Reload every `every_seconds` in a daemon thread; returns the function that stops it."""
        stop = threading.Event()

        def run() -> None:
            while not stop.wait(every_seconds):
                try:
                    self.refresh()
                except Exception:
                    log.exception("reloading the channel addresses failed")

        thread = threading.Thread(target=run, name="smtp-routes", daemon=True)
        thread.start()

        def halt() -> None:
            stop.set()
            thread.join(timeout=10)

        return halt

    def refresh(self) -> None:
        with self.runtime.unit_of_work() as session:
            rows = session.execute(
                select(ChannelAddress.address, Channel.app_id, Channel.id)
                .join(Channel, Channel.id == ChannelAddress.channel_id)
                .where(Channel.enabled.is_(True))
            ).all()
            proofs = domains.proofs(session)
        routes = {
            address: Route(
                app_id,
                channel_id,
                None if proofs.allows(app_id, address) else UNPROVEN_DOMAIN,
            )
            for address, app_id, channel_id in rows
        }
        by_domain: dict[str, list[Route]] = {}
        for address, route in routes.items():
            by_domain.setdefault(address.rpartition("@")[2].lower(), []).append(route)
        self._routes, self._domains = routes, by_domain

    def __call__(self, address: str) -> Route | None:
        route = self._routes.get(base_address(address))
        if route is None and (token := bounce_token_in(address)) is not None:
            return self._return_path(address, token)
        return route

    def _return_path(self, address: str, token: str) -> Route | None:
        try:
            app_id = self.runtime.keyring.verify_bounce(token).app_id
        except TokenError:
            return None  # forged, or signed with a retired key: 550 at RCPT
        domain = address.strip().strip("<>").rpartition("@")[2].lower()
        return next((r for r in self._domains.get(domain, ()) if r.app_id == app_id), None)


def store_batch(runtime: Runtime, mails: Sequence[inbound_store.IncomingMail]) -> list[int]:
    """Store and commit; the ids are durable when this returns."""
    with runtime.unit_of_work() as session:
        return inbound_store.store_incoming(session, mails, runtime.clock())


def store_group(
    runtime: Runtime, mails: Sequence[inbound_store.IncomingMail]
) -> list[int | Exception]:
    """Store and commit a group commit's mails; per mail, its durable id or why it alone
    could not be stored.

    The group goes in with one INSERT. If that fails for a reason that may be one mail's (a
    value the database refuses, a constraint), each mail is stored on its own: one bad mail
    never takes the others of its group with it. A failure of the database as a whole (down,
    locked, out of connections) fails the group at once; storing one by one would only wait
    on it once per mail.
    """
    try:
        return list(store_batch(runtime, mails))
    except _DATABASE_UNAVAILABLE:
        raise
    except Exception as exc:
        if len(mails) == 1:
            raise
        log.warning(
            "storing %d inbound mails together failed (%s); one by one", len(mails), db_reason(exc)
        )
    results: list[int | Exception] = []
    for mail in mails:
        try:
            [row_id] = store_batch(runtime, [mail])
        except _DATABASE_UNAVAILABLE:
            raise
        except Exception as exc:  # noqa: BLE001 - this mail's failure is its own answer
            log.warning(
                "inbound mail from %s (peer %s) could not be stored: %s",
                mail.envelope_from,
                mail.peer,
                db_reason(exc),
            )
            results.append(exc)
        else:
            results.append(row_id)
    return results


# The database as a whole failing, not one mail's row.
_DATABASE_UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeout)


def db_reason(exc: BaseException) -> str:
    """One line on a database failure: the driver's error, without the statement or values."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    return f"{type(cause).__name__}: {(str(cause).splitlines() or [''])[0]}"


def parse_limits(runtime: Runtime) -> ParseLimits:
    return config_parse_limits(runtime.config)


def config_parse_limits(config: GatewayConfig) -> ParseLimits:
    limits = config.limits
    return ParseLimits(
        max_message_bytes=config.smtp.max_message_bytes,
        max_header_bytes=limits.max_header_bytes,
        max_mime_depth=limits.max_mime_depth,
        max_mime_parts=limits.max_mime_parts,
        max_attachment_bytes=limits.max_attachment_bytes,
        cpu_seconds=limits.parse_cpu_seconds,
        parse_processes=limits.parse_processes,
    )


def app_timezone(runtime: Runtime, app_name: str | None) -> str:
    """The zone an agent's "monday 9:00" is read in: the app's (first) calendar's, else UTC."""
    app_config = next((a for a in runtime.config.apps if a.name == app_name), None)
    return app_config.calendars[0].timezone if app_config and app_config.calendars else "UTC"


def channel_rules(runtime: Runtime, session: Session, row: InboundMail) -> ChannelRules:
    addresses = {
        address.lower()
        for app in runtime.config.apps
        for channel in app.channels
        for address in channel.addresses
    }
    settings = {}
    if row.channel_id is not None:
        channel = session.get(Channel, row.channel_id)
        settings = channel.settings if channel else {}
    app = session.get(App, row.app_id) if row.app_id is not None else None
    agent_mail = AgentMailPolicy(
        keyring=runtime.keyring,
        addresses=frozenset(addresses),
        require_dkim=bool(settings.get("require_dkim", False)),
        trusted_authserv_id=settings.get("trusted_authserv_id"),
        dns=_dkim_dns(runtime),
        timezone=app_timezone(runtime, app.name if app else None),
        max_participants=runtime.config.limits.max_participants,
    )
    return ChannelRules(
        subject_threading=bool(settings.get("subject_threading", True)),
        subject_threading_days=int(settings.get("subject_threading_days", 14)),
        limits=parse_limits(runtime),
        channel_addresses=frozenset(addresses),
        keyring=runtime.keyring,
        agent_mail=agent_mail,
        max_participants=runtime.config.limits.max_participants,
    )


def _dkim_dns(runtime: Runtime) -> DnsFunc | None:
    resolver = runtime.config.dkim_resolver
    if resolver is None:
        return None
    host, _, port = resolver.rpartition(":")
    return resolver_txt(host, int(port))


@dataclass(frozen=True)
class Outcome:
    inbound_id: int
    state: str
    detail: str


# Mails per processing transaction: big enough that a busy gateway pays one commit for many
# mails, small enough that the SQLite write lock is never held long from the SMTP accept path.
BATCH_SIZE = 20

# A mail whose processing meets a database conflict this often is quarantined, not retried.
TRANSIENT_ATTEMPTS = 5

# How far back a reply looks for its not-yet-processed parent among pending mail.
PARENT_SCAN_ROWS = 500
_HEADER_SCAN_BYTES = 16384


def process_inbound(runtime: Runtime, inbound_id: int) -> Outcome | None:
    """Process one stored mail; None if it was not pending (safe to run twice)."""
    return process_batch(runtime, [inbound_id]).get(inbound_id)


def process_batch(
    runtime: Runtime, inbound_ids: Sequence[int], *, fill: bool = False
) -> dict[int, Outcome]:
    """Process stored mails in one transaction; the outcome of each that was pending.

    Parsing is pure CPU and needs no lock, so it happens first, outside the transaction: the
    write locks (SQLite's, and the batch's keys on PostgreSQL, see channels/email/batch_index.py)
    are held only for the database work. One commit covers the batch, so a busy gateway pays for
    one per batch, not one per mail; a mail enqueued twice, or already done, is skipped (safe to
    run twice).

    A failing mail must not take the others with it. The batch is first run whole, without a
    savepoint per mail (two statements and the ORM's bookkeeping each): the batch's locks make
    a conflict with another worker rare, and nearly every batch succeeds whole. If any mail's
    pipeline fails, that transaction is rolled back and the batch is run again with a savepoint
    per mail: a failing one's partial writes are undone and its row is quarantined with the
    reason (or left pending, for a database conflict) while the rest are stored.

    With `fill`, a batch smaller than BATCH_SIZE is topped up with the oldest other pending
    mail: under load, batches fill up and mail is processed in arrival order; the jobs of the
    mails taken early find them done and cost one query.
    """
    with _claim(runtime, inbound_ids, BATCH_SIZE if fill else 0) as claimed:
        return process_parsed(runtime, _parse_claimed(runtime, claimed))


def process_parsed(
    runtime: Runtime, parsed: dict[int, ParsedMail | Exception]
) -> dict[int, Outcome]:
    """`process_batch` for stored mails parsed already (by id; `gateway import` parses in its
    own pool): the batch whole first, then with a savepoint per mail if one failed."""
    if not parsed:
        return {}
    try:
        return _process_parsed(runtime, parsed, savepoints=False)
    except _RunAgainWithSavepoints:
        return _process_parsed(runtime, parsed, savepoints=True)


class _RunAgainWithSavepoints(Exception):
    """A mail failed in a batch run without savepoints: roll back and run it with them."""


def _process_parsed(
    runtime: Runtime, parsed: dict[int, ParsedMail | Exception], *, savepoints: bool
) -> dict[int, Outcome]:
    with runtime.unit_of_work() as session:
        batch = _Batch(runtime, session, runtime.clock(), savepoints=savepoints)
        # The keys' locks first, the rows second: a batch holding a row (a reply's parent)
        # holds its keys too, so another batch never waits for a row while holding a key.
        batch.look_up(parsed)
        rows = session.scalars(
            select(InboundMail)
            .where(InboundMail.id.in_(list(parsed)), InboundMail.state == InboundState.PENDING)
            .order_by(InboundMail.id)
            # Several workers on PostgreSQL: a row another batch holds is left to it.
            .with_for_update(skip_locked=True)
        ).all()
        for row in rows:
            if row.state == InboundState.PENDING:  # else: done already, as another's parent
                batch.process(row, parsed[row.id])
        batch.index.flush()
    return batch.outcomes


# The pending mails some thread of this process is working on: another thread's batch leaves
# them alone instead of parsing them a second time for nothing.
_claimed: set[int] = set()
_claimed_lock = threading.Lock()


@contextmanager
def _claim(runtime: Runtime, inbound_ids: Sequence[int], fill_to: int) -> Iterator[list[int]]:
    """The pending mails among `inbound_ids`, topped up with the oldest other pending mail to
    `fill_to`, minus those another thread has claimed; they stay claimed until the block ends.
    """
    pending = InboundMail.state == InboundState.PENDING
    with runtime.reading() as session:
        ids = list(
            session.scalars(
                select(InboundMail.id).where(InboundMail.id.in_(list(inbound_ids)), pending)
            )
        )
        if len(ids) < fill_to:
            # Some extra rows: threads of this process may hold a few of the oldest.
            ids += session.scalars(
                select(InboundMail.id)
                .where(pending, InboundMail.id.not_in(ids))
                .order_by(InboundMail.id)
                .limit(2 * fill_to)
            )
    with _claimed_lock:
        mine = [i for i in dict.fromkeys(ids) if i not in _claimed][
            : max(fill_to, len(inbound_ids))
        ]
        _claimed.update(mine)
    try:
        yield mine
    finally:
        with _claimed_lock:
            _claimed.difference_update(mine)


def _parse_claimed(runtime: Runtime, inbound_ids: list[int]) -> dict[int, ParsedMail | Exception]:
    """Parse these mails (read only, no lock held)."""
    if not inbound_ids:
        return {}
    limits = parse_limits(runtime)
    with runtime.reading() as session:
        rows = session.execute(
            select(InboundMail.id, InboundMail.raw, InboundMail.envelope_from).where(
                InboundMail.id.in_(inbound_ids)
            )
        ).all()
    # In the parser worker processes (the CPU limit per message), all of them at once.
    results = parse_many_isolated([(raw, envelope_from) for _, raw, envelope_from in rows], limits)
    return {row_id: result for (row_id, _, _), result in zip(rows, results, strict=True)}


def _parse(raw: bytes, limits: ParseLimits, envelope_from: str | None) -> ParsedMail | Exception:
    [result] = parse_many_isolated([(raw, envelope_from)], limits)
    return result


class _Batch:
    """The mails processed in one transaction, with what they share (apps, channel rules, the
    index of their lookups).

    The caches hold strong references on purpose: the session's identity map is weak, so
    without them every mail would load its app and channel again.
    """

    def __init__(
        self, runtime: Runtime, session: Session, now: dt.datetime, *, savepoints: bool = True
    ) -> None:
        self.runtime, self.session, self.now = runtime, session, now
        self.savepoints = savepoints
        self.outcomes: dict[int, Outcome] = {}
        self._apps: dict[int | None, App] = {}
        self._rules: dict[int | None, ChannelRules] = {}
        self.index = BatchIndex(session)

    def look_up(self, parsed: dict[int, ParsedMail | Exception]) -> None:
        """Lock and read what the batch's mails will ask for, one query per kind and app."""
        by_app: dict[int, list[ParsedMail]] = {}
        for row_id, app_id in self.session.execute(
            select(InboundMail.id, InboundMail.app_id).where(InboundMail.id.in_(list(parsed)))
        ):
            mail = parsed[row_id]
            if app_id is not None and isinstance(mail, ParsedMail):
                by_app.setdefault(app_id, []).append(mail)
        self.index.load(by_app)

    def process(self, row: InboundMail, parsed: ParsedMail | Exception, depth: int = 0) -> None:
        self._parents_first(row, parsed, depth)
        self.outcomes[row.id] = self._run(row, parsed)

    def _run(self, row: InboundMail, parsed: ParsedMail | Exception) -> Outcome:
        session, now = self.session, self.now
        try:
            with session.begin_nested() if self.savepoints else contextlib.nullcontext():
                if isinstance(parsed, Exception):
                    raise parsed
                result: Processing = run_pipeline(
                    session,
                    row,
                    self._app(row),
                    self._channel_rules(row),
                    now,
                    self.index,
                    parsed=parsed,
                )
                later = self.index.later
                if row.source == HISTORY and result.conversation_id is not None:
                    _quiet(later, result.conversation_id, now)
                _mark_processed(later, row, result, now)
                if self.savepoints:
                    self.index.flush()  # inside the savepoint, to vanish with it on failure
        except Exception as exc:
            if not self.savepoints and not isinstance(parsed, Exception):
                # What the failed pipeline wrote cannot be undone alone here.
                raise _RunAgainWithSavepoints from exc
            failure: Exception = exc
        else:
            self.index.keep(result)
            return Outcome(row.id, "processed", result.outcome or "")
        return self._failed(row, failure)

    def _failed(self, row: InboundMail, failure: Exception) -> Outcome:
        session, now = self.session, self.now
        # Undone by the savepoint: the row's marks and what the index took in may be gone.
        session.expire(row, _MARKED)
        if self.savepoints:
            # Its savepoint is gone: so are the writes it held back (the batch's others were
            # flushed after each). Without savepoints only a mail that could not be parsed
            # gets here, and it held back nothing; the others' writes stay.
            self.index.discard()
        self.index.forget()
        if isinstance(failure, MessageRejected):
            reason = str(failure)
        elif isinstance(failure, OperationalError | IntegrityError):
            # A conflict the batch's locks do not cover (a customer created at the same moment
            # through the API, say): the savepoint is undone and the mail stays pending for the
            # actor's retry. Only a mail that keeps failing this way is quarantined.
            reason = db_reason(failure)
            if row.attempts + 1 < TRANSIENT_ATTEMPTS:
                row.attempts += 1
                log.warning("inbound mail %s: %s; will retry", row.id, reason)
                return Outcome(row.id, "pending", reason)
            log.error("inbound mail %s failed %d times", row.id, row.attempts + 1, exc_info=failure)
        else:
            log.error("processing inbound mail %s failed", row.id, exc_info=failure)
            reason = f"{type(failure).__name__}: {failure}"
        row.attempts += 1
        inbound_store.quarantine(session, row, reason, now)
        if isinstance(failure, AgentMailRejected):
            record_rejection(session, row, failure, now)  # the agent is told why
        return Outcome(row.id, "quarantined", reason)

    def _app(self, row: InboundMail) -> App:
        app = self._apps.get(row.app_id)
        if app is None:
            app = self._apps[row.app_id] = _app_for(self.session, self.runtime, row)
        return app

    def _channel_rules(self, row: InboundMail) -> ChannelRules:
        rules = self._rules.get(row.channel_id)
        if rules is None:
            rules = self._rules[row.channel_id] = channel_rules(self.runtime, self.session, row)
        return rules

    def _parents_first(self, row: InboundMail, parsed: ParsedMail | Exception, depth: int) -> None:
        """Process the pending mails this reply answers before the reply itself.

        A customer's mail and their quick follow-up can arrive within one second and be picked
        up by two workers; if the follow-up ran first, its In-Reply-To would find nothing and
        start a second conversation. A reply whose parents are all unknown looks for them among
        the older pending mail and processes them first, in arrival order. The batch holds the
        lock of every Message-ID the reply cites, so no other batch holds such a parent; a
        parent another batch does hold (a grandparent, deeper down) is left to it.
        """
        if isinstance(parsed, Exception) or depth > 10 or row.app_id is None:
            return
        wanted = {mid for mid in (parsed.in_reply_to, *parsed.references) if mid}
        if not wanted or self.index.refs(row.app_id, wanted):
            return
        session = self.session
        heads = session.execute(
            select(InboundMail.id, func.substr(InboundMail.raw, 1, _HEADER_SCAN_BYTES))
            .where(
                InboundMail.state == InboundState.PENDING,
                InboundMail.app_id == row.app_id,
                InboundMail.id < row.id,
            )
            .order_by(InboundMail.id.desc())
            .limit(PARENT_SCAN_ROWS)
        ).all()
        parent_ids = sorted(
            row_id for row_id, head in heads if wanted & set(header_message_ids(bytes(head)))
        )
        if not parent_ids:
            return
        parents = session.scalars(
            select(InboundMail)
            .where(InboundMail.id.in_(parent_ids), InboundMail.state == InboundState.PENDING)
            .order_by(InboundMail.id)
            .with_for_update(skip_locked=True)
        ).all()
        limits = parse_limits(self.runtime)
        for parent in parents:
            if parent.state == InboundState.PENDING:
                self.process(parent, _parse(parent.raw, limits, parent.envelope_from), depth + 1)


_INBOUND = InboundMail.__table__
assert isinstance(_INBOUND, Table)
_MARK_PROCESSED = (
    _INBOUND.update()
    .where(_INBOUND.c.id == bindparam("row_id"))
    .values(
        attempts=bindparam("attempts"),
        state=bindparam("state"),
        processed_at=bindparam("processed_at"),
        reason=bindparam("reason"),
        message_id=func.coalesce(bindparam("message_id"), _INBOUND.c.message_id),
    )
)
_MARKED = ["attempts", "state", "processed_at", "reason", "message_id"]


# `gateway import` of old mail: threaded and stored like any mail, but it tells no agent (the
# team has seen it in the mailbox it came from). `--notify` imports under NOTIFYING instead.
HISTORY = "import"
NOTIFYING = "import+notify"


def _quiet(later: DeferredWrites, conversation_id: int, now: dt.datetime) -> None:
    """Mark the events this mail just caused as looked at, so the sweep notifies nobody. They
    are the conversation's events of this instant (the batch's `now`) not yet looked at (held
    in `later` after the events themselves)."""
    later.add(_QUIET, [{"quiet_conversation_id": conversation_id, "now": now}])


_EVENTS = Event.__table__
assert isinstance(_EVENTS, Table)
_QUIET = (
    _EVENTS.update()
    .where(
        _EVENTS.c.conversation_id == bindparam("quiet_conversation_id"),
        _EVENTS.c.created_at == bindparam("now"),
        _EVENTS.c.notified_at.is_(None),
    )
    .values(notified_at=bindparam("now"))
)


def _mark_processed(
    later: DeferredWrites, row: InboundMail, result: Processing, now: dt.datetime
) -> None:
    """The row is done: a Core UPDATE held with the batch's others rather than a flush of the
    ORM object (the unit of work costs more than the statement); the loaded object is told the
    new values. The pipeline may have set the row's message itself (an agent's mail) through
    the ORM."""
    values = {
        "attempts": row.attempts + 1,
        "state": InboundState.PROCESSED,
        "processed_at": now,
        "reason": result.outcome,
        "message_id": result.message_id if result.ended_by == "store" else None,
    }
    later.add(_MARK_PROCESSED, [{"row_id": row.id, **values}])
    for key, value in values.items():
        if value is not None or key != "message_id":
            set_committed_value(row, key, value)


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
    return ImapPoller(
        account,
        lambda mails: store_batch(runtime, mails),
        FolderLedger(runtime.engine, runtime.clock),
        on_stored,
        runtime.clock,
    )


class FolderLedger:
    """The IMAP poller's view of the database: which keys and bytes are stored, and the
    folders' bookmarks. Its questions are read-only sessions: on SQLite they do not queue for
    the write lock behind the accept path and the workers."""

    def __init__(self, engine: Engine, clock: Callable[[], dt.datetime]) -> None:
        self._writing = session_factory(engine)
        self._reading = session_factory(reading_engine(engine))
        self._clock = clock

    def stored_keys(self, keys: Sequence[str]) -> set[str]:
        with self._reading() as session:
            return inbound_store.source_keys_among(session, keys)

    def stored_hashes(self, account: str, shas: Sequence[str]) -> set[str]:
        with self._reading() as session:
            return inbound_store.hashes_stored(session, shas, f"imap:{account}:")

    def bookmarks(self, account: str, folder: str) -> dict[int, int]:
        with self._reading() as session:
            return inbound_store.imap_bookmarks(session, account, folder)

    def move_bookmark(self, account: str, folder: str, uidvalidity: int, uid: int) -> None:
        with self._writing() as session, session.begin():
            inbound_store.move_imap_bookmark(
                session, account, folder, uidvalidity, uid, self._clock()
            )
