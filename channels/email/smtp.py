"""The inbound SMTP server (aiosmtpd): accepts mail for the channels' addresses, durably.

RCPT is checked against the configured addresses (plus forms included), so the gateway is never
an open relay and never has to bounce later. DATA answers 250 only after the message's row is
committed; a storage failure answers 451 so the sending MTA retries. Commits are grouped by a
writer thread (group_commit.py). Envelope bytes no store can hold are refused at the command,
and the server's capacity (smtp_capacity.py) bounds what connections and pending DATA may take.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, SMTP, Envelope, Session, TLSSetupException, syntax

from channels.email.group_commit import BatchWriter, StoreBatch
from channels.email.headers import header_section
from channels.email.smtp_capacity import Capacity, RateLimitedLog
from tickets.inbound import IncomingMail

__all__ = ["BatchWriter", "Capacity", "StoreBatch"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Route:
    """Where mail for one address goes: its app and channel; or why it is refused."""

    app_id: int
    channel_id: int
    refused: str | None = None  # the reason of a 550 (the address's domain is not proven)


def base_address(address: str) -> str:
    """`support+anything@Example.com` -> `support@example.com`."""
    local, at, domain = address.strip().strip("<>").rpartition("@")
    if not at:
        return address.strip().lower()
    return f"{local.split('+', 1)[0]}@{domain}".lower()


@dataclass(frozen=True)
class SmtpLimits:
    max_message_bytes: int = 26_214_400
    max_recipients: int = 100
    max_header_bytes: int = 102_400
    max_received_headers: int = 50
    max_connections: int = 200
    max_connections_per_peer: int = 20
    idle_timeout_seconds: float = 300.0
    idle_evict_seconds: float = 2.0
    max_pending_data_bytes: int = 268_435_456
    refusal_log_seconds: float = 60.0


_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
# `<dot-atom@dot-domain>` and the parameters after it; a comment after `>` is the parser's.
_PLAIN_PATH = re.compile(
    rf"[ \t]*<({_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>(?![ \t]*\()[ \t]*(.*)",
    re.DOTALL,
)
_END = b"\r\n.\r\n"  # the end of DATA: the CRLF of the last line, a dot, CRLF
_RECEIVED = re.compile(rb"^received:", re.IGNORECASE | re.MULTILINE)


class InboundHandler:
    """aiosmtpd handler: the `handle_*` hooks answer with SMTP status strings.

    `routes` is given each recipient as written (plus forms and return-path tokens included).
    """

    def __init__(
        self,
        routes: Callable[[str], Route | None],
        writer: BatchWriter,
        limits: SmtpLimits,
    ) -> None:
        self.routes = routes
        self.writer = writer
        self.limits = limits
        self.client_errors = RateLimitedLog(log, limits.refusal_log_seconds)

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        """aiosmtpd's EHLO answer without AUTH: no login can succeed here (GatewaySMTP)."""
        session.host_name = hostname
        return [line for line in responses if not line.startswith("250-AUTH")]

    async def handle_exception(self, error: Exception) -> str:
        """What went wrong in a session outside the hooks above. A client's failing TLS
        handshake or dropped connection is one rate-limited line; anything else is a fault of
        ours, logged in full, and the sender is told to try again (not what the fault was)."""
        if isinstance(error, TLSSetupException | ssl.SSLError | ConnectionError):
            cause = error.__cause__ or error
            self.client_errors.warning("SMTP session failed on the client's side: %r", cause)
        else:
            log.exception("SMTP session failed")
        return "451 4.3.0 Error in this session, please try again later"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if len(envelope.rcpt_tos) >= self.limits.max_recipients:
            return "452 4.5.3 Too many recipients"
        route = self.routes(address)
        if route is None:
            return "550 5.1.1 No such mailbox here"
        if route.refused:
            return f"550 5.7.1 {route.refused}"
        routes = [self.routes(a) for a in envelope.rcpt_tos]
        if any(r is not None and r.app_id != route.app_id for r in routes):
            # One stored message belongs to one app; the sender retries the rest separately.
            return "452 4.5.3 One app per message, please send separately"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        if len(raw) > self.limits.max_message_bytes:
            return "552 5.3.4 Message too big for this system"
        headers = header_section(raw)
        if len(headers) > self.limits.max_header_bytes:
            return "552 5.3.4 Header section too large"
        if len(_RECEIVED.findall(headers)) > self.limits.max_received_headers:
            return "554 5.4.6 Too many hops, probably a mail loop"
        route = self.routes(envelope.rcpt_tos[0]) if envelope.rcpt_tos else None
        if route is None:
            return "554 5.5.1 No valid recipients"
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        mail = IncomingMail(
            raw=raw,
            source="smtp",
            envelope_from=envelope.mail_from,
            envelope_to=tuple(envelope.rcpt_tos),
            peer=peer,
            app_id=route.app_id,
            channel_id=route.channel_id,
        )
        try:
            await self.writer.store(mail)
        except Exception:  # noqa: BLE001 - any storage failure is a temporary one for the sender
            return "451 4.3.0 Could not store the message, please try again later"
        return "250 2.0.0 OK: queued"


class GatewaySMTP(SMTP):
    """aiosmtpd's SMTP within the server's capacity (connection slots, pending DATA memory),
    refusing envelope bytes no store can hold, and reading DATA in large chunks."""

    def __init__(self, handler: InboundHandler, capacity: Capacity, **kwargs: object):
        super().__init__(handler, **kwargs)  # type: ignore[arg-type]
        self._capacity = capacity
        self._heard = time.monotonic()  # when the client last sent anything
        self._storing = False  # DATA is with the writer: the client waits on us, not idle
        self._data_held = 0  # bytes of DATA taken from the capacity's budget

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._original_transport is not None:  # STARTTLS: the same session, now over TLS
            super().connection_made(transport)
            return
        peer = transport.get_extra_info("peername")
        host = peer[0] if isinstance(peer, tuple) else str(peer)
        if not self._capacity.enter(self, host):
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(b"421 4.7.0 Too many connections, try again later\r\n")
            transport.close()
            return
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self.session is None:  # refused in connection_made: aiosmtpd never saw it
            return
        self._capacity.leave(self)
        self._release_data()
        super().connection_lost(error)
        # What this session held goes now, not when the garbage collector finds the cycle of
        # this protocol and its (cancelled) task: a message, or what nobody will read.
        self.envelope = self._create_envelope()
        self._reader._buffer.clear()  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self._heard = time.monotonic()
        super().data_received(data)

    def idle_since(self) -> float | None:
        return None if self._storing else self._heard

    def make_room(self) -> None:
        """Closed for a new sender while the server is full (RFC 5321 4.2.2: 421)."""
        if isinstance(self.transport, asyncio.WriteTransport):
            self.transport.write(
                f"421 4.4.2 {self.hostname} Idle too long, closing to make room\r\n".encode()
            )
            self.transport.close()

    # What no store can hold in a string (PostgreSQL's text refuses NUL) and no address or host
    # name has: C0 controls, DEL, and lone surrogates (what undecodable bytes become when
    # SMTPUTF8 is on; without it aiosmtpd refuses any non-ASCII byte before these are called).
    _UNSTORABLE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")

    async def _refused_unstorable(self, arg: str | None, reply: str) -> bool:
        if arg and self._UNSTORABLE.search(arg):
            await self.push(f"{reply}: a control character or invalid byte is not allowed")
            return True
        return False

    @syntax("HELO hostname")
    async def smtp_HELO(self, hostname: str) -> None:
        if not await self._refused_unstorable(hostname, "501 5.5.2 Bad host name"):
            await super().smtp_HELO(hostname)

    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str) -> None:
        if not await self._refused_unstorable(hostname, "501 5.5.2 Bad host name"):
            await super().smtp_EHLO(hostname)

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str) -> None:
        if not await self._refused_unstorable(arg, "553 5.1.7 Bad sender address"):
            await super().smtp_MAIL(arg)

    @syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg: str) -> None:
        if not await self._refused_unstorable(arg, "553 5.1.3 Bad recipient address"):
            await super().smtp_RCPT(arg)

    @syntax("VRFY <address>")
    async def smtp_VRFY(self, arg: str) -> None:
        if not await self._refused_unstorable(arg, "501 5.5.2 Bad address"):
            await super().smtp_VRFY(arg)

    # Not listed by HELP (`when` names a false attribute).
    _offers_auth = False

    @syntax("AUTH <mechanism>", when="_offers_auth")
    async def smtp_AUTH(self, arg: str) -> None:
        # Mail for the channels' addresses is taken from anyone and there are no logins: a
        # login could only fail, so AUTH is neither offered (see handle_EHLO) nor taken.
        await self.push("502 5.5.1 Authentication is not offered here")

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        # aiosmtpd reads every MAIL FROM and RCPT TO path with the email package's full RFC
        # 5322 parser, a large share of the accept path's CPU. The plain form `<local@domain>`
        # (dot-atoms, no comments) gives the same result by a regex; the rest goes to the parser.
        match = _PLAIN_PATH.fullmatch(arg)
        if match is None:
            return super()._getaddr(arg)
        address, rest = match.group(1), match.group(2)
        if self.local_part_limit and len(address.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return address, rest

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        """DATA read in large chunks up to the terminator, not line by line.

        aiosmtpd reads the message with one `readuntil` per line, most of the accept path's
        CPU for a 10 KB mail. This reads up to CRLF.CRLF in chunks of at most _DATA_CHUNK and
        then applies the same rules to the whole: dot-unstuffing, the line length limit (500
        after the end, as RFC 5321 4.2.5 implies), the size limit (552, read to the end but
        not kept). What a message holds counts against the server's budget of pending DATA
        from its first chunk until its reply; over the budget it is answered 452 and its bytes
        are let go at once. Where the StreamReader is not the one this knows, aiosmtpd's own
        reading is used.
        """
        reader = self._reader
        if self._decode_data or not isinstance(getattr(reader, "_limit", None), int):
            await super().smtp_DATA(arg)
            return
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            content, refusal = await self._read_data(reader)
            longest = len(max(content.split(b"\r\n"), key=len)) if content else 0
            if refusal is None and longest + 2 > self.line_length_limit:
                refusal = "500 Line too long (see RFC5321 4.5.3.1.6)"
            if refusal is not None:
                self._set_post_data_state()
                await self.push(refusal)
                return
            # RFC 5321 4.5.2: the first dot of a line that starts with one is taken away.
            content = content.replace(b"\r\n.", b"\r\n")
            if content.startswith(b"."):
                content = content[1:]
            self.envelope.content = self.envelope.original_content = content
            del content
            self._storing = True
            status = await self._call_handler_hook("DATA")
        finally:
            self._storing = False
            self._release_data()
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)

    async def _read_data(self, reader: asyncio.StreamReader) -> tuple[bytes, str | None]:
        """The message up to the terminator (still dot-stuffed), or the refusal when it is more
        than this session (552) or the server (452) may hold: then it is read to its end and
        dropped as it comes."""
        limit = (self.data_size_limit or 2**62) + len(b".\r\n")  # what is read: content + ".\r\n"
        parts: list[bytes] = []
        refusal: str | None = None
        # The last bytes read: a terminator may have begun in them. At first the CRLF that ended
        # the DATA line, so that a terminator right away (an empty message) is found too.
        tail = b"\r\n"
        saved = reader._limit  # type: ignore[attr-defined]
        # readuntil searches the whole of a chunk for the terminator, not just one line.
        reader._limit = _DATA_CHUNK  # type: ignore[attr-defined]
        try:
            while True:
                # How much of a terminator the data read so far may already end with: the
                # rest must follow at once, or the data goes on.
                have = next((k for k in (4, 3, 2, 1) if tail.endswith(_END[:k])), 0)
                if have:
                    chunk = await reader.readexactly(len(_END) - have)
                    done = chunk == _END[have:]
                else:
                    try:
                        chunk = await reader.readuntil(_END)
                        done = True
                    except asyncio.LimitOverrunError as exc:
                        # No terminator in this chunk (but maybe at its end, kept in the reader).
                        chunk = await reader.readexactly(exc.consumed)
                        done = False
                tail = chunk[-4:] if len(chunk) >= 4 else (tail + chunk)[-4:]
                if refusal is None:
                    if self._data_held + len(chunk) > limit:
                        refusal = "552 Error: Too much mail data"
                    elif not self._capacity.take_data(len(chunk)):
                        refusal = "452 4.3.1 Insufficient system storage, please try again later"
                    else:
                        self._data_held += len(chunk)
                        parts.append(chunk)
                    if refusal is not None:
                        parts.clear()
                        self._release_data()
                del chunk  # not held while waiting for the next
                if done:
                    break
            if refusal is not None:
                return b"", refusal
            _drop_end(parts, len(b".\r\n"))
            return parts[0] if len(parts) == 1 else b"".join(parts), None
        finally:
            # Also when the session is cancelled: the frame may outlive it in a traceback.
            parts.clear()
            reader._limit = saved  # type: ignore[attr-defined]

    def _release_data(self) -> None:
        if self._data_held:
            self._capacity.give_data(self._data_held)
            self._data_held = 0


# The most of a message read (and searched for its end) at a time.
_DATA_CHUNK = 64 * 1024


def _drop_end(parts: list[bytes], size: int) -> None:
    """Take the last `size` bytes off the chunks (copying only the last ones)."""
    while size:
        last = parts.pop()
        if len(last) > size:
            parts.append(last[:-size])
            return
        size -= len(last)


class InboundController(Controller):
    def __init__(
        self,
        handler: InboundHandler,
        host: str,
        port: int,
        *,
        server_hostname: str = "localhost",
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        limits = handler.limits
        self._capacity = Capacity(
            limits.max_connections,
            limits.max_connections_per_peer,
            evict_idle_after=limits.idle_evict_seconds,
            pending_data_bytes=limits.max_pending_data_bytes,
            log_every_seconds=limits.refusal_log_seconds,
        )
        self._tls_context = tls_context
        self._server_hostname = server_hostname
        super().__init__(handler, hostname=host, port=port, ready_timeout=10)

    def factory(self) -> SMTP:
        limits: SmtpLimits = self.handler.limits
        smtp = GatewaySMTP(
            self.handler,
            self._capacity,
            data_size_limit=limits.max_message_bytes,
            hostname=self._server_hostname,
            tls_context=self._tls_context,
            timeout=limits.idle_timeout_seconds,
        )
        # RFC 5321 4.5.3.1.6: 998 characters + CRLF; a longer line is refused, not wrapped.
        smtp.line_length_limit = 1001
        return smtp


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context
