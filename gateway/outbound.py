"""Wiring of the outbound path: config -> transport, retry policy, DKIM, delivery settings; and
the two units of work the actors run (deliver a conversation's waiting messages, send a row).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import uuid
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses
from pathlib import Path

from channels.chat.widget import conversation_token
from channels.email import envelopes, outbox
from channels.email.check import SmtpTarget
from channels.email.delivery import DeliverySettings, Outcome, deliver_conversation
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

    Returns the row's state after the attempt. Stale `sending` rows (the process died) are
    settled first, by asking the transport whether the message arrived. Each recipient not
    yet accepted gets a transaction of its own (channels/email/envelopes.py); each result is
    committed before the next transaction starts.
    """
    ob = outbound_for(runtime)
    now = runtime.clock()
    with runtime.unit_of_work() as session:
        row = session.get(Outbox, outbox_id)
        if row is None:
            return None
        if row.state == OutboxState.SENDING:
            channel = session.get(Channel, row.channel_id) if row.channel_id else None
            try:
                delivered = ob.transport_for(channel).delivered(row.message_id_header)
            except ConfigError as exc:
                log.error("outbox %s: cannot settle a stale claim: %s", outbox_id, exc)
                return None
            settled = envelopes.recover_stale(
                session, outbox_id, now - ob.stale_after, delivered, now
            )
            if settled != OutboxState.PENDING:
                return settled
    attempt = uuid.uuid4().hex
    planned: list[envelopes.Envelope] = []
    with runtime.unit_of_work() as session:
        claimed = outbox.claim(session, outbox_id, attempt, now)
        if claimed is None:
            return None
        refusal = domains.sending_refusal(
            session, claimed.app_id, _from_addresses(claimed.raw), claimed.mail_from
        )
        if refusal is not None:
            # Never sent as a domain the app has not proven; kept for an agent to retry.
            log.warning("outbox %s: held: %s", outbox_id, refusal)
            outbox.give_up(session, claimed, OutboxState.HELD, refusal, now)
            return OutboxState.HELD
        message_id = claimed.message_id_header
        channel = session.get(Channel, claimed.channel_id) if claimed.channel_id else None
        prepared = _prepare(ob, channel, claimed.raw)
        if not isinstance(prepared, DeliveryError):
            per_recipient = prepared[0].per_recipient
            planned = envelopes.envelopes(runtime.keyring, claimed, per_recipient=per_recipient)
            if planned:
                envelopes.start(claimed, planned[0])
    if isinstance(prepared, DeliveryError):
        log.warning("outbox %s: cannot send: %s", outbox_id, prepared)
        with runtime.unit_of_work() as session:
            return outbox.attempt_failed(
                session,
                outbox_id,
                attempt,
                str(prepared),
                permanent=prepared.permanent,
                policy=ob.policy,
                now=runtime.clock(),
            )
    transport, raw = prepared
    state, following_row = None, None
    for index in range(max(len(planned), 1)):
        envelope = planned[index] if planned else None
        following = None
        if envelope is not None:  # no transaction open while the relay is talked to
            result = _transaction(transport, envelope, raw, message_id, outbox_id)
            goes_on = result.state != PENDING or result.at_rcpt  # else the relay is away
            following = planned[index + 1] if goes_on and index + 1 < len(planned) else None
        with runtime.unit_of_work() as session:
            if envelope is not None and not envelopes.record(
                session, outbox_id, attempt, envelope, result, runtime.clock(), following
            ):
                return None
            if following is None:  # the last result and the end of the attempt: one commit
                state = envelopes.finish(session, outbox_id, attempt, ob.policy, runtime.clock())
                following_row = outbox.next_in_conversation(session, outbox_id, runtime.clock())
                break
    if state is not None and following_row is not None:
        send_soon(following_row)
    return state


def _transaction(
    transport: Transport, envelope: envelopes.Envelope, raw: bytes, message_id: str, row: int
) -> envelopes.Result:
    """One SMTP transaction (or file write) and how it ended."""
    to = ", ".join(envelope.recipients)
    try:
        transport.send(envelope.sender, list(envelope.recipients), raw, message_id)
    except DeliveryError as exc:
        kind = "permanent" if exc.permanent else "temporary"
        log.warning("outbox %s: to %s failed (%s): %s", row, to, kind, exc)
        return envelopes.Result(REFUSED if exc.permanent else PENDING, str(exc), exc.at_rcpt)
    except DeliveryUnknown as exc:
        log.error("outbox %s: to %s: delivery unknown, held for an agent: %s", row, to, exc)
        return envelopes.Result(UNKNOWN, f"delivery unknown: {exc}")
    return envelopes.Result(ACCEPTED)


def _from_addresses(raw: bytes) -> list[str]:
    """The addresses of the From header(s) of a composed email."""
    headers = BytesHeaderParser(policy=compat32).parsebytes(header_section(raw))
    return [address for _, address in getaddresses(headers.get_all("From") or []) if address]


def send_soon(outbox_id: int) -> None:
    """Hand a committed outbox row to a worker now (the sweep would, a little later)."""
    from gateway import actors

    actors.send_outbound.send(outbox_id)
