"""Wiring of the outbound path: config -> transport, retry policy, DKIM, delivery settings; and
the two units of work the actors run (deliver a conversation's waiting messages, send a row).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.utils import getaddresses
from pathlib import Path

from sqlalchemy import select

from channels.chat.widget import conversation_token
from channels.email import envelopes, outbox
from channels.email.check import SmtpTarget
from channels.email.delivery import (
    DeliverySettings,
    Outcome,
    deliver_conversation,
    deliver_conversations,
)
from channels.email.headers import header_section
from channels.email.outbox import ACCEPTED, PENDING, REFUSED, UNKNOWN
from channels.email.render import EmailTemplates
from channels.email.tokens import Keyring, reply_address
from channels.email.transport import (
    DeliveryError,
    DeliveryUnknown,
    FileTransport,
    SmtpSettings,
    SmtpTransport,
    Transport,
)
from gateway.channel_targets import smtp_target
from gateway.config import ConfigError, GatewayConfig
from gateway.runtime import Runtime
from tickets import domains
from tickets.business_time import parse_duration
from tickets.models import App, Channel, Conversation, Outbox, OutboxState

log = logging.getLogger(__name__)

BATCH = 1000


def make_transport(config: GatewayConfig) -> Transport:
    out = config.outbound
    if out.transport == "file":
        return FileTransport(config.outbound_dir)
    password = None
    if out.password_env:
        password = os.environ.get(out.password_env)
        if password is None:
            raise ConfigError(f"outbound.password_env: ${out.password_env} is not set")
    return SmtpTransport(
        SmtpSettings(
            host=out.host,
            port=out.port,
            starttls=out.starttls,
            tls=out.tls,
            username=out.username,
            password=password,
            timeout=out.timeout_seconds,
            connections=out.connections,
        )
    )


def retry_policy(config: GatewayConfig) -> outbox.RetryPolicy:
    out = config.outbound
    return outbox.RetryPolicy(
        schedule=tuple(parse_duration(s) for s in out.retry_schedule),
        give_up_after=parse_duration(out.give_up_after),
    )


def chat_url(config: GatewayConfig, keyring: Keyring, app: App, conversation: Conversation) -> str:
    """The widget page of the app, opening this conversation (the token proves it is theirs)."""
    return (
        f"{config.http.public_url}/widget/{app.name}?c={conversation_token(keyring, conversation)}"
    )


def reply_to(keyring: Keyring, conversation: Conversation, channel_address: str) -> str:
    """`support+<customer token>@domain`: the answer threads back by the token (rule 1)."""
    return reply_address(channel_address, conversation_token(keyring, conversation))


@dataclass
class Outbound:
    """What sending needs, built once per runtime."""

    runtime: Runtime
    policy: outbox.RetryPolicy
    settings: DeliverySettings
    built: Transport | None = None
    channel_transports: dict[tuple[int, SmtpTarget], Transport] = field(default_factory=dict)

    @property
    def transport(self) -> Transport:
        """The [outbound] transport, built on first use: a relay password missing from the
        environment then fails the sends (kept, retried, the reason on the row), not the
        scheduler's sweep."""
        if self.built is None:
            self.built = make_transport(self.runtime.config)
        return self.built

    def transport_for(self, channel: Channel | None) -> Transport:
        """The channel's own relay when it has one (set by CLI or admin API), else [outbound]."""
        if channel is None or not channel.settings.get("smtp"):
            return self.transport
        target = smtp_target(self.runtime, channel)
        assert target is not None
        key = (channel.id, target)  # a changed host, policy or password builds a new one
        cached = self.channel_transports.get(key)
        if cached is None:
            cached = SmtpTransport(
                SmtpSettings(
                    host=target.host,
                    port=target.port,
                    starttls=target.starttls,
                    tls=target.tls,
                    username=target.username,
                    password=target.password,
                    timeout=self.runtime.config.outbound.timeout_seconds,
                    policy=target.policy,
                    connections=self.runtime.config.outbound.connections,
                )
            )
            for old in [k for k in self.channel_transports if k[0] == channel.id]:
                # The channel's relay changed: the old one's kept connections are closed.
                stale = self.channel_transports.pop(old)
                if isinstance(stale, SmtpTransport):
                    stale.close()
            self.channel_transports[key] = cached
        return cached

    @property
    def stale_after(self) -> dt.timedelta:
        # Longer than any attempt can take: socket timeouts bound each SMTP step.
        return max(
            dt.timedelta(minutes=15),
            4 * dt.timedelta(seconds=self.runtime.config.outbound.timeout_seconds),
        )


def outbound_for(runtime: Runtime) -> Outbound:
    cached: Outbound | None = getattr(runtime, "_outbound", None)
    if cached is None:
        config = runtime.config
        keyring = config.keyring()
        cached = Outbound(
            runtime=runtime,
            policy=retry_policy(config),
            settings=DeliverySettings(
                grace=dt.timedelta(seconds=config.delivery.email_grace_seconds),
                online_window=dt.timedelta(seconds=config.delivery.widget_online_seconds),
                templates=EmailTemplates(),
                chat_url=lambda a, c, to: chat_url(config, keyring, a, c),
                reply_to=lambda a, c, frm: reply_to(keyring, c, frm),
            ),
        )
        runtime._outbound = cached  # type: ignore[attr-defined]
    return cached


def deliver(runtime: Runtime, conversation_id: int) -> Outcome:
    """Decide and queue the email for a conversation's waiting messages (one transaction)."""
    ob = outbound_for(runtime)
    with runtime.unit_of_work() as session:
        return deliver_conversation(session, conversation_id, runtime.clock(), ob.settings)


def deliver_batch(runtime: Runtime, conversation_ids: Sequence[int]) -> dict[int, Outcome]:
    """`deliver` for several conversations in one transaction. Should the batch fail (one
    conversation's data trips something), each is tried in a transaction of its own, so the
    others go out and the one that fails is logged and left due for the next sweep."""
    ob = outbound_for(runtime)
    try:
        with runtime.unit_of_work() as session:
            return deliver_conversations(session, conversation_ids, runtime.clock(), ob.settings)
    except Exception:
        if len(conversation_ids) == 1:
            raise
        log.exception("a batch of %s deliveries failed; one by one now", len(conversation_ids))
    outcomes = {}
    for conversation_id in conversation_ids:
        try:
            outcomes[conversation_id] = deliver(runtime, conversation_id)
        except Exception:
            log.exception("conversation %s: delivery failed; the sweep retries", conversation_id)
    return outcomes


def _dkim_sign(raw: bytes, channel: Channel | None) -> bytes:
    settings = (channel.settings or {}).get("dkim") if channel is not None else None
    if not settings:
        return raw
    import dkim  # dkimpy: RFC 6376 canonicalisation and signing, not something to hand-roll

    try:
        key = Path(settings["private_key_file"]).read_bytes()
    except OSError as exc:
        raise DeliveryError(
            f"DKIM key {settings['private_key_file']}: {exc.strerror}", permanent=False
        ) from None
    signature = dkim.sign(
        raw,
        settings["selector"].encode(),
        settings["domain"].encode(),
        key,
        include_headers=[
            b"from",
            b"to",
            b"cc",
            b"subject",
            b"date",
            b"message-id",
            b"reply-to",
            b"in-reply-to",
            b"references",
            b"mime-version",
            b"content-type",
        ],
    )
    return signature.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") + raw


def _prepare(
    ob: Outbound, channel: Channel | None, raw: bytes
) -> tuple[Transport, bytes] | DeliveryError:
    """The transport and the (signed) bytes; a DeliveryError to record as a failed attempt
    when the channel's relay or DKIM key is misconfigured (fixing it lets the retry through)."""
    try:
        return ob.transport_for(channel), _dkim_sign(raw, channel)
    except ConfigError as exc:
        return DeliveryError(str(exc), permanent=False)
    except DeliveryError as exc:
        return exc


def send_outbound(runtime: Runtime, outbox_id: int) -> OutboxState | None:
    """One attempt at one outbox row; None if there was nothing to do (safe to run twice).
    Returns the row's state after the attempt (see `send_batch`)."""
    return send_batch(runtime, [outbox_id]).get(outbox_id)


@dataclass
class _Plan:
    """A claimed row in an attempt: its transactions (one per recipient) and the next one."""

    row_id: int
    message_id: str
    transport: Transport
    raw: bytes
    envelopes: list[envelopes.Envelope]
    next: int = 0


def send_batch(runtime: Runtime, outbox_ids: Sequence[int]) -> dict[int, OutboxState]:
    """One attempt at each of these outbox rows; safe to run twice, and beside another worker
    given the same ids (each row is claimed by one). Returns the state of each row that was
    attempted or settled; rows with nothing to do are left out.

    Stale `sending` rows (the process died) are settled first, by asking the transport whether
    the message arrived. Then, in one transaction, the rows are claimed and the first
    transaction of each (its first recipient) is marked in flight. The emails go out one after
    another over the transports' kept connections, no database transaction open meanwhile;
    then one transaction records every result and marks the next recipient of each row in
    flight (a reply copied to participants has one transaction per recipient), and so on until
    every row is finished. So a batch of single-recipient emails costs two commits, and a
    process killed in the middle leaves only the recipients in flight in doubt (held for an
    agent, never sent twice: channels/email/outbox.py).
    """
    ob = outbound_for(runtime)
    ids = sorted(set(outbox_ids))
    done: dict[int, OutboxState] = {}
    with runtime.reading() as session:
        stale = session.scalars(
            select(Outbox.id).where(Outbox.id.in_(ids), Outbox.state == OutboxState.SENDING)
        ).all()
    for outbox_id in stale:
        settled = _settle(runtime, ob, outbox_id)
        if settled is not None and settled != OutboxState.PENDING:
            done[outbox_id] = settled
    attempt = uuid.uuid4().hex
    plans = _claim(runtime, ob, [i for i in ids if i not in done], attempt, done)
    followers: list[int] = []
    while plans:
        results = _round(plans)
        plans = []
        with runtime.unit_of_work() as session:
            now = runtime.clock()
            rows = outbox.held_by_many(session, [plan.row_id for plan, *_ in results], attempt)
            finished = []
            for plan, envelope, result, following in results:
                row = rows.get(plan.row_id)
                if row is None:  # the claim no longer holds: the attempt stops
                    continue
                if envelope is not None and result is not None:
                    envelopes.record_on(session, row, envelope, result, now, following)
                if following is None:  # the last result and the end of the attempt
                    done[row.id] = envelopes.finish_row(session, row, ob.policy, now)
                    finished.append(row)
                else:
                    plan.next += 1
                    plans.append(plan)
            followers += outbox.next_in_conversations(session, finished, now)
    if followers:
        _send_soon_many(followers)
    return done


def _settle(runtime: Runtime, ob: Outbound, outbox_id: int) -> OutboxState | None:
    """Settle a row left `sending` once its claim is stale; None if it is not."""
    now = runtime.clock()
    with runtime.unit_of_work() as session:
        row = session.get(Outbox, outbox_id)
        if row is None or row.state != OutboxState.SENDING:
            return None
        channel = session.get(Channel, row.channel_id) if row.channel_id else None
        try:
            delivered = ob.transport_for(channel).delivered(row.message_id_header)
        except ConfigError as exc:
            log.error("outbox %s: cannot settle a stale claim: %s", outbox_id, exc)
            return None
        return envelopes.recover_stale(session, outbox_id, now - ob.stale_after, delivered, now)


def _claim(
    runtime: Runtime, ob: Outbound, ids: list[int], attempt: str, done: dict[int, OutboxState]
) -> list[_Plan]:
    """Claim the rows (one transaction) and plan their transactions; rows held for an unproven
    sending domain, or failing on a misconfigured relay or DKIM key, are recorded as such."""
    plans: list[_Plan] = []
    failed: list[tuple[int, DeliveryError]] = []
    now = runtime.clock()
    with runtime.unit_of_work() as session:
        refusals: dict[tuple[int, tuple[str, ...], str], str | None] = {}
        channels: dict[int, Channel | None] = {}
        for row in outbox.claim_many(session, ids, attempt, now):
            key = (row.app_id, tuple(_from_addresses(row.raw)), row.mail_from)
            if key not in refusals:
                refusals[key] = domains.sending_refusal(session, key[0], list(key[1]), key[2])
            refusal = refusals[key]
            if refusal is not None:
                # Never sent as a domain the app has not proven; kept for an agent to retry.
                log.warning("outbox %s: held: %s", row.id, refusal)
                outbox.give_up(session, row, OutboxState.HELD, refusal, now)
                done[row.id] = OutboxState.HELD
                continue
            if row.channel_id is not None and row.channel_id not in channels:
                channels[row.channel_id] = session.get(Channel, row.channel_id)
            channel = channels.get(row.channel_id) if row.channel_id is not None else None
            prepared = _prepare(ob, channel, row.raw)
            if isinstance(prepared, DeliveryError):
                failed.append((row.id, prepared))
                continue
            transport, raw = prepared
            planned = envelopes.envelopes(
                runtime.keyring, row, per_recipient=transport.per_recipient
            )
            if planned:
                envelopes.start(row, planned[0])
            plans.append(_Plan(row.id, row.message_id_header, transport, raw, planned))
    if failed:
        with runtime.unit_of_work() as session:
            for outbox_id, error in failed:
                log.warning("outbox %s: cannot send: %s", outbox_id, error)
                state = outbox.attempt_failed(
                    session,
                    outbox_id,
                    attempt,
                    str(error),
                    permanent=error.permanent,
                    policy=ob.policy,
                    now=runtime.clock(),
                )
                if state is not None:
                    done[outbox_id] = state
    return plans


_Done = tuple[_Plan, envelopes.Envelope | None, envelopes.Result | None, envelopes.Envelope | None]


def _round(plans: list[_Plan]) -> list[_Done]:
    """The next transaction of each row, one after another, no database transaction open:
    each with its result and the row's following transaction (None: the row is finished)."""
    out: list[_Done] = []
    unreachable: dict[int, envelopes.Result] = {}  # by transport
    for plan in plans:
        if not plan.envelopes:
            out.append((plan, None, None, None))
            continue
        envelope = plan.envelopes[plan.next]
        result = unreachable.get(id(plan.transport))
        if result is None:
            result, reached = _transaction(
                plan.transport, envelope, plan.raw, plan.message_id, plan.row_id
            )
            if not reached:
                # Whatever else this batch has for that relay would wait out the same timeout:
                # it stays pending for the next attempt instead (nothing of it was sent).
                unreachable[id(plan.transport)] = result
        goes_on = result.state != PENDING or result.at_rcpt  # else the relay is away
        following = plan.next + 1 if goes_on and plan.next + 1 < len(plan.envelopes) else None
        out.append(
            (plan, envelope, result, None if following is None else plan.envelopes[following])
        )
    return out


def _transaction(
    transport: Transport, envelope: envelopes.Envelope, raw: bytes, message_id: str, row: int
) -> tuple[envelopes.Result, bool]:
    """One SMTP transaction (or file write), how it ended, and whether the relay was reached."""
    to = ", ".join(envelope.recipients)
    try:
        transport.send(envelope.sender, list(envelope.recipients), raw, message_id)
    except DeliveryError as exc:
        kind = "permanent" if exc.permanent else "temporary"
        log.warning("outbox %s: to %s failed (%s): %s", row, to, kind, exc)
        state = REFUSED if exc.permanent else PENDING
        return envelopes.Result(state, str(exc), exc.at_rcpt), not exc.connection
    except DeliveryUnknown as exc:
        log.error("outbox %s: to %s: delivery unknown, held for an agent: %s", row, to, exc)
        return envelopes.Result(UNKNOWN, f"delivery unknown: {exc}"), True
    return envelopes.Result(ACCEPTED), True


# A From field and its continuation lines (RFC 5322 2.2.3), in a header section we composed.
_FROM = re.compile(rb"^from[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)


def _from_addresses(raw: bytes) -> list[str]:
    """The addresses of the From header(s) of a composed email."""
    fields = [
        re.sub(r"\r?\n(?=[ \t])", "", m.group(1).decode("utf-8", "replace")).strip()
        for m in _FROM.finditer(header_section(raw))
    ]
    return [address for _, address in getaddresses(fields) if address]


def send_soon(outbox_id: int) -> None:
    """Hand a committed outbox row to a worker now (the sweep would, a little later)."""
    from gateway import actors

    actors.send_outbound.send(outbox_id)


def _send_soon_many(outbox_ids: Sequence[int]) -> None:
    """The next rows of conversations a batch finished: at most a batch of them."""
    from gateway import actors

    actors.send_outbound_batch.send(list(outbox_ids))
