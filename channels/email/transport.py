"""Outbound transports: hand one finished message to a relay (`smtp`) or to a folder (`file`).

A transport reports how an attempt ended in the one way the outbox needs to know it:
- it returned: the relay (or the folder) has the message;
- `DeliveryError(permanent=False)`: it certainly does not, try again later;
- `DeliveryError(permanent=True)`: a 5xx for this message, trying again will not help;
- `DeliveryUnknown`: the connection broke after the whole message was sent and before the
  relay answered, so it may have been accepted (RFC 1047). Resending could deliver it twice,
  so the outbox holds such a row for an agent instead of retrying.

That is why the SMTP transport runs the DATA phase itself rather than through `sendmail`: it has
to know whether the final dot went out.
"""

from __future__ import annotations

import contextlib
import os
import re
import smtplib
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from channels.email.egress import HostPolicy, HostRefused, smtp_client


class DeliveryError(Exception):
    """The message was not accepted; `permanent` says whether a retry could change that, and
    `at_rcpt` whether the relay refused the recipients (RCPT TO) rather than the message."""

    def __init__(
        self,
        reason: str,
        *,
        permanent: bool,
        at_rcpt: bool = False,
        connection: bool = False,
        in_step: bool = False,
    ) -> None:
        super().__init__(reason)
        self.permanent = permanent
        self.at_rcpt = at_rcpt
        # No connection to the relay could be had: the next message would fare the same.
        self.connection = connection
        # The relay answered and the connection is ready for the next transaction.
        self.in_step = in_step


class DeliveryUnknown(Exception):
    """The message may or may not have been accepted: never retried automatically."""


class Transport(Protocol):
    # Whether each recipient can be its own transaction under its own return path (VERP).
    per_recipient: bool

    def send(self, envelope_from: str, recipients: list[str], raw: bytes, message_id: str) -> None:
        """Deliver or raise DeliveryError / DeliveryUnknown."""

    def delivered(self, message_id: str) -> bool | None:
        """Whether a message with this Message-ID was delivered; None if it cannot tell."""


_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]")


def eml_name(message_id: str) -> str:
    return _UNSAFE.sub("_", message_id.strip("<>")) + ".eml"


class FileTransport:
    """Writes each message as `<Message-ID>.eml` into a folder: the embedded default.

    The file appears by an atomic rename, so after a crash it either exists whole (the message
    was delivered) or not at all (safe to write again): `delivered` can always tell. The
    envelope sender goes in front as `Return-Path`, as a delivering MTA writes it. Mail is
    customers' data: the files are the gateway user's only (0600, the folder 0700). One file
    per message, so one transaction for all its recipients: nothing bounces back to a folder.
    """

    per_recipient = False

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def send(self, envelope_from: str, recipients: list[str], raw: bytes, message_id: str) -> None:
        final = self.directory / eml_name(message_id)
        tmp = final.with_suffix(f".tmp{os.getpid()}-{threading.get_ident()}")
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(f"Return-Path: <{envelope_from}>\r\n".encode() + raw)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except BaseException as exc:
            # A full disk (ENOSPC), a file size limit, an I/O error or an interruption: the
            # partial file goes, so the folder holds whole messages only and the retry starts
            # clean.
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                reason = f"cannot write to {self.directory}: {exc.strerror}"
                raise DeliveryError(reason, permanent=False) from None
            raise

    def delivered(self, message_id: str) -> bool | None:
        return (self.directory / eml_name(message_id)).exists()


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    starttls: bool = False
    tls: bool = False  # implicit TLS (port 465)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 30.0
    local_hostname: str | None = None
    tls_context: ssl.SSLContext | None = None
    # An app admin's relay: only hosts the operator allows (channels.email.egress).
    policy: HostPolicy | None = None
    connections: int = 4  # open to this relay at most, shared by every sending thread
    max_idle: float = 60.0  # seconds a kept connection may sit unused before it is closed


def _reply(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {' '.join(text.split())}"


class SmtpTransport:
    """Submits to a relay over SMTP through a bounded pool of reused connections.

    A relay takes many messages on one connection (RFC 5321 3.3: MAIL FROM starts the next
    transaction after the last one's 250), and the handshake (greeting, EHLO, STARTTLS, AUTH)
    costs several round trips, so connections are kept and lent out one at a time: at most
    `settings.connections` to this relay at once, whatever the number of worker threads. A
    connection goes back to the pool only while the conversation with the relay is in step (a
    reply was read; after a refused transaction, RSET answered); any other failure closes it
    and the next message opens a fresh one. One idle for longer than `settings.max_idle` is
    closed rather than reused (relays drop idle clients, RFC 5321 4.5.3.2.7).

    Authentication and TLS failures count as temporary: they are the relay's configuration,
    not this message's fault, and a fixed password should still let queued mail through.
    """

    per_recipient = True

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self._slots = threading.BoundedSemaphore(settings.connections)
        self._lock = threading.Lock()
        self._idle: list[tuple[smtplib.SMTP, float]] = []  # last returned last: LIFO
        self.opened = 0  # connections made so far (a figure for benches and logs)

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        context = s.tls_context or ssl.create_default_context()
        conn = smtp_client(
            s.policy,
            s.host,
            s.port,
            tls=s.tls,
            timeout=s.timeout,
            context=context,
            local_hostname=s.local_hostname,
        )
        try:
            conn.ehlo()
            if s.starttls:
                conn.starttls(context=context)
                conn.ehlo()
            if s.username:
                conn.login(s.username, s.password or "")
        except BaseException:
            _close(conn)
            raise
        # Commands are small writes followed by a read: without this, Nagle's algorithm and
        # delayed ACKs add tens of milliseconds to every exchange.
        if conn.sock is not None:
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self.opened += 1
        return conn

    def _take_idle(self) -> smtplib.SMTP | None:
        """The most recently returned idle connection; those idle too long are closed."""
        now = time.monotonic()
        stale = []
        conn = None
        with self._lock:
            while self._idle:
                candidate, since = self._idle.pop()
                if now - since <= self.settings.max_idle:
                    conn = candidate
                    break
                stale.append(candidate)
        for old in stale:
            _close(old)
        return conn

    def _give_back(self, conn: smtplib.SMTP) -> None:
        with self._lock:
            self._idle.append((conn, time.monotonic()))

    def close(self) -> None:
        """Close the idle connections (those lent out close when their sender is done)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            _close(conn)

    def send(self, envelope_from: str, recipients: list[str], raw: bytes, message_id: str) -> None:
        # Waiting for a free connection is bounded like any step of talking to the relay.
        if not self._slots.acquire(timeout=self.settings.timeout):
            raise DeliveryError(
                f"all {self.settings.connections} connections to the relay stayed busy",
                permanent=False,
                connection=True,
            )
        try:
            self._send_pooled(envelope_from, recipients, raw)
        finally:
            self._slots.release()

    def _send_pooled(self, envelope_from: str, recipients: list[str], raw: bytes) -> None:
        conn = self._take_idle()
        # A kept connection the relay has closed meanwhile fails before anything is sent:
        # then once more on a new one.
        for fresh in (False, True) if conn is not None else (True,):
            if conn is None:
                conn = self._open()
            try:
                self._send(conn, envelope_from, recipients, raw)
            except _Stale:
                _close(conn)
                conn = None
                if fresh:
                    raise DeliveryError(
                        "the relay closed the connection", permanent=False, connection=True
                    ) from None
                continue
            except DeliveryError as exc:
                if exc.in_step:
                    self._give_back(conn)
                else:
                    _close(conn)
                raise
            except BaseException:
                _close(conn)
                raise
            self._give_back(conn)
            return

    def _open(self) -> smtplib.SMTP:
        try:
            return self._connect()
        except HostRefused as exc:
            raise DeliveryError(f"relay: {exc}", permanent=False, connection=True) from None
        except smtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(
                f"relay refused the login: {_reply(exc.smtp_code, exc.smtp_error)}",
                permanent=False,
                connection=True,
            ) from None
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(
                f"relay: {_reply(exc.smtp_code, exc.smtp_error)}", permanent=False, connection=True
            ) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(
                f"cannot reach the relay: {exc}", permanent=False, connection=True
            ) from None

    def _send(
        self, conn: smtplib.SMTP, envelope_from: str, recipients: list[str], raw: bytes
    ) -> None:
        """One transaction on `conn`. A DeliveryError with `in_step` leaves the connection
        ready for the next transaction; `_Stale` means it broke before the data went out."""
        try:
            code, text = conn.mail(envelope_from)
        except (OSError, smtplib.SMTPServerDisconnected):
            raise _Stale() from None
        if code == 421:  # the relay is closing this connection (RFC 5321 3.8)
            raise _Stale()
        if code != 250:
            raise DeliveryError(
                f"MAIL FROM: {_reply(code, text)}", permanent=code >= 500, in_step=_rset(conn)
            )
        refused: list[tuple[int, str]] = []
        try:
            for rcpt in recipients:
                code, text = conn.rcpt(rcpt)
                if code not in (250, 251):
                    refused.append((code, _reply(code, text)))
            if len(refused) == len(recipients):
                raise DeliveryError(
                    "RCPT TO: " + "; ".join(r for _, r in refused),
                    permanent=all(c >= 500 for c, _ in refused),
                    at_rcpt=True,
                    in_step=_rset(conn),
                )
            conn.putcmd("data")
            code, text = conn.getreply()
        except (OSError, smtplib.SMTPServerDisconnected):
            raise _Stale() from None  # the message is not out yet: safe on a new connection
        if code != 354:
            raise DeliveryError(
                f"DATA: {_reply(code, text)}", permanent=code >= 500, in_step=_rset(conn)
            )
        payload = smtplib._quote_periods(raw)  # type: ignore[attr-defined]
        if not payload.endswith(b"\r\n"):
            payload += b"\r\n"
        try:
            # One write, the final dot last: if it raises, the dot never reached the kernel,
            # so the relay must discard the partial message and a retry is safe.
            conn.send(payload + b".\r\n")
        except (OSError, smtplib.SMTPServerDisconnected) as exc:
            raise DeliveryError(f"connection lost during DATA: {exc}", permanent=False) from None
        try:
            code, text = conn.getreply()
        except (OSError, smtplib.SMTPServerDisconnected) as exc:
            raise DeliveryUnknown(
                f"connection lost after the message was sent, before the relay answered: {exc}"
            ) from None
        if code != 250:
            # The transaction is over either way (RFC 5321 4.1.1.4): the connection goes on.
            raise DeliveryError(
                f"after DATA: {_reply(code, text)}", permanent=code >= 500, in_step=code != 421
            )

    def delivered(self, message_id: str) -> bool | None:
        return None


class _Stale(Exception):
    """The connection broke (or the relay said it is closing it) before any of the message's
    data went out: nothing was sent, so the message can go on another connection."""


def _rset(conn: smtplib.SMTP) -> bool:
    """Reset a refused transaction; whether the relay answered, so the connection is in step."""
    try:
        code, _ = conn.rset()
    except (OSError, smtplib.SMTPException):
        return False
    return code == 250


def _close(conn: smtplib.SMTP) -> None:
    try:
        conn.quit()
    except (OSError, smtplib.SMTPException):
        with contextlib.suppress(OSError):
            conn.close()
