"""The inbound SMTP server (aiosmtpd): accepts mail for the channels' addresses, durably.

RCPT is checked against the configured addresses (plus forms included), so the gateway is never
an open relay and never has to bounce later. DATA answers 250 only after the message's row is
committed; a storage failure answers 451 so the sending MTA retries. Commits are grouped by a
writer thread (many sessions, one transaction) without letting any 250 out before its commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import re
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, SMTP, Envelope, Session, syntax

from channels.email.headers import header_section
from tickets.inbound import IncomingMail

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Route:
    """Where mail for one address goes: its app and channel."""

    app_id: int
    channel_id: int


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


StoreBatch = Callable[[Sequence[IncomingMail]], list[int]]


class BatchWriter:
    """Commits accepted mail in groups: one transaction for whatever arrived meanwhile.

    `store_batch` runs in this writer's thread and must commit before it returns; each waiting
    DATA command gets its row id (or the exception) only after that.

    Under load the writer holds a group open for `group_commit_seconds` after its first mail
    (PostgreSQL's commit_delay): each commit costs a transaction, a log sync and a hand-off to
    the workers, and the sessions that finish DATA in that window share them. It waits only
    when the group before it had company (more than one mail), so a lone message at a quiet
    time is committed at once.
    """

    def __init__(
        self,
        store_batch: StoreBatch,
        *,
        max_batch: int = 200,
        on_stored: Callable[[list[int]], object] = lambda _ids: None,
        group_commit_seconds: float = 0.0,
    ) -> None:
        self._store_batch = store_batch
        self._on_stored = on_stored
        self._max_batch = max_batch
        self._group_commit_seconds = group_commit_seconds
        self._queue: queue.Queue[tuple[IncomingMail, Waiter] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="smtp-batch-writer", daemon=True)
        self._thread.start()

    def submit(self, mail: IncomingMail) -> Future[int]:
        """For a caller in a thread: a future of the committed row id."""
        future: Future[int] = Future()
        self._queue.put((mail, future))
        return future

    async def store(self, mail: IncomingMail) -> int:
        """For a caller on an event loop: the committed row id.

        The waiters of one commit are woken with one call into their loop: a wake-up per
        message (what `asyncio.wrap_future` does) costs the loop a system call each.
        """
        waiter = asyncio.get_running_loop().create_future()
        self._queue.put((mail, waiter))
        return int(await waiter)

    def _run(self) -> None:
        busy = False  # the last group had more than one mail
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            until = time.monotonic() + (self._group_commit_seconds if busy else 0.0)
            while len(batch) < self._max_batch:
                try:
                    wait = until - time.monotonic()
                    more = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)
                    break
                batch.append(more)
            busy = len(batch) > 1
            try:
                ids = self._store_batch([mail for mail, _ in batch])
            except Exception as exc:  # every waiter must hear of the failure
                log.exception("storing %d inbound messages failed", len(batch))
                _settle([(waiter, exc) for _, waiter in batch])
                continue
            _settle([(waiter, row_id) for (_, waiter), row_id in zip(batch, ids, strict=True)])
            # Enqueueing may block on a broker round trip: done here, never on the event loop.
            try:
                self._on_stored(ids)
            except Exception:
                # The rows are committed; the scheduler sweep will enqueue them instead.
                log.exception("handing on inbound %s failed", ids)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)


Waiter = Future[int] | asyncio.Future[int]


def _settle(results: list[tuple[Waiter, int | BaseException]]) -> None:
    """Hand each waiter its row id or the failure: thread futures at once, loop futures with
    one call per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[int], int | BaseException]]]
    by_loop = {}
    for waiter, result in results:
        if isinstance(waiter, asyncio.Future):
            by_loop.setdefault(waiter.get_loop(), []).append((waiter, result))
        elif isinstance(result, BaseException):
            waiter.set_exception(result)
        else:
            waiter.set_result(result)
    for loop, waiting in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(_settle_on_loop, waiting)


def _settle_on_loop(waiting: list[tuple[asyncio.Future[int], int | BaseException]]) -> None:
    for waiter, result in waiting:
        if waiter.done():  # cancelled: the session went away
            continue
        if isinstance(result, BaseException):
            waiter.set_exception(result)
        else:
            waiter.set_result(result)


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
    """aiosmtpd's SMTP with connection caps, counted per server and per peer address."""

    def __init__(self, handler: InboundHandler, counter: ConnectionCounter, **kwargs: object):
        super().__init__(handler, **kwargs)  # type: ignore[arg-type]
        self._counter = counter
        self._counted_peer: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        host = peer[0] if isinstance(peer, tuple) else str(peer)
        if not self._counter.enter(host):
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(b"421 4.7.0 Too many connections, try again later\r\n")
            transport.close()
            return
        self._counted_peer = host
        super().connection_made(transport)

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
        CPU for a 10 KB mail. This reads up to CRLF.CRLF at once and then applies the same
        rules to the whole: dot-unstuffing, the line length limit (500 after the end, as
        RFC 5321 4.2.5 implies), the size limit (552, read to the end but not kept). Where
        the StreamReader is not the one this knows, aiosmtpd's own reading is used.
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
        content, too_big = await self._read_data(reader)
        if too_big:
            self._set_post_data_state()
            await self.push("552 Error: Too much mail data")
            return
        if content and len(max(content.split(b"\r\n"), key=len)) + 2 > self.line_length_limit:
            self._set_post_data_state()
            await self.push("500 Line too long (see RFC5321 4.5.3.1.6)")
            return
        # RFC 5321 4.5.2: the first dot of a line that starts with one is taken away.
        content = content.replace(b"\r\n.", b"\r\n")
        if content.startswith(b"."):
            content = content[1:]
        self.envelope.content = self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)

    async def _read_data(self, reader: asyncio.StreamReader) -> tuple[bytes, bool]:
        """The message up to the terminator (still dot-stuffed), and whether it was too big
        (then only its end was kept). `data` starts with the CRLF that ended the DATA line, so
        that a terminator right away (an empty message) is found like any other."""
        limit = self.data_size_limit or 2**31
        data = bytearray(b"\r\n")
        too_big = False
        saved = reader._limit  # type: ignore[attr-defined]
        # The whole message may be searched for the terminator, not just one line.
        reader._limit = limit  # type: ignore[attr-defined]
        try:
            while True:
                # How much of a terminator the data read so far may already end with: the
                # rest must follow at once, or the data goes on.
                have = next((k for k in (4, 3, 2, 1) if data.endswith(_END[:k])), 0)
                if have:
                    more = await reader.readexactly(len(_END) - have)
                    data += more
                    if more == _END[have:]:
                        break
                    continue
                try:
                    data += await reader.readuntil(_END)
                    break
                except asyncio.LimitOverrunError as exc:
                    # Too big: read on to the terminator, keeping only what may begin it.
                    too_big = True
                    data = bytearray((bytes(data) + await reader.readexactly(exc.consumed))[-4:])
                if len(data) > limit + len(_END):
                    # Grown by the small reads above alone (a stream of lone CRs): bounded too.
                    too_big = True
                    data = data[-4:]
        finally:
            reader._limit = saved  # type: ignore[attr-defined]
        return bytes(data[2 : -len(_END) + 2]), too_big

    def connection_lost(self, error: Exception | None) -> None:
        if self._counted_peer is not None:
            self._counter.leave(self._counted_peer)
            self._counted_peer = None
        super().connection_lost(error)


class ConnectionCounter:
    def __init__(self, total: int, per_peer: int) -> None:
        self.total, self.per_peer = total, per_peer
        self.count = 0
        self.by_peer: dict[str, int] = {}

    def enter(self, peer: str) -> bool:
        if self.count >= self.total or self.by_peer.get(peer, 0) >= self.per_peer:
            return False
        self.count += 1
        self.by_peer[peer] = self.by_peer.get(peer, 0) + 1
        return True

    def leave(self, peer: str) -> None:
        self.count -= 1
        left = self.by_peer.get(peer, 1) - 1
        if left:
            self.by_peer[peer] = left
        else:
            self.by_peer.pop(peer, None)


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
        self._counter = ConnectionCounter(
            handler.limits.max_connections, handler.limits.max_connections_per_peer
        )
        self._tls_context = tls_context
        self._server_hostname = server_hostname
        super().__init__(handler, hostname=host, port=port, ready_timeout=10)

    def factory(self) -> SMTP:
        limits: SmtpLimits = self.handler.limits
        smtp = GatewaySMTP(
            self.handler,
            self._counter,
            data_size_limit=limits.max_message_bytes,
            hostname=self._server_hostname,
            tls_context=self._tls_context,
            timeout=300,
        )
        # RFC 5321 4.5.3.1.6: 998 characters + CRLF; a longer line is refused, not wrapped.
        smtp.line_length_limit = 1001
        return smtp


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context
