"""End-to-end checks of an email channel: IMAP, the SMTP relay, and a round trip through both.

Each step either passes or stops the check with a `CheckFailed` that says in plain words what
went wrong and what to do about it: an unknown host, a refused port, a TLS mismatch, a refused
password, a missing folder, a mail that never came back. Nothing here touches the database; the
gateway decides what a passing check means (the channel is verified).
"""

from __future__ import annotations

import contextlib
import imaplib
import secrets
import smtplib
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError

from channels.email.egress import CouldNotConnect, HostPolicy, HostRefused, imap_client, smtp_client
from channels.email.loop import LOOP_HEADER, loop_mark
from channels.email.tokens import Keyring

CHECK_HEADER = "X-Gateway-Channel-Test"


@dataclass(frozen=True)
class ImapTarget:
    host: str
    port: int
    ssl: bool
    starttls: bool
    username: str
    password: str | None = field(repr=False)
    folder: str = "INBOX"
    # Set when an app admin chose the host: only hosts the operator allows, and a failure to
    # connect says no more than "could not connect" (see channels.email.egress).
    policy: HostPolicy | None = None

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    starttls: bool
    tls: bool
    username: str | None
    password: str | None = field(repr=False)
    policy: HostPolicy | None = None

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass
class Step:
    name: str
    ok: bool
    detail: str
    hint: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "hint": self.hint}


class CheckFailed(Exception):
    def __init__(self, step: str, detail: str, hint: str) -> None:
        super().__init__(detail)
        self.step = Step(step, False, detail, hint)


@dataclass
class Report:
    steps: list[Step] = field(default_factory=list)
    # Told of each step as it ends, so a page can show a running check step by step.
    listener: Callable[[Step], None] | None = None

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(s.ok for s in self.steps)

    def add(self, step: Step) -> None:
        self.steps.append(step)
        if self.listener is not None:
            self.listener(step)

    def passed(self, name: str, detail: str) -> None:
        self.add(Step(name, True, detail))


# --- what a network error means -----------------------------------------------------------

_TLS_PORTS = "IMAP: 993 with ssl, 143 with starttls; SMTP: 465 with tls, 587 or 25 with starttls"


def _explain(step: str, where: str, exc: BaseException, timeout: float) -> CheckFailed:
    host = where.rpartition(":")[0]
    if isinstance(exc, socket.gaierror):
        return CheckFailed(
            step,
            f"cannot find the host {host}: DNS has no address for it",
            "check the spelling of the host name, and that it resolves from this machine",
        )
    if isinstance(exc, ConnectionRefusedError):
        return CheckFailed(
            step,
            f"{where} refused the connection: nothing listens on that port",
            f"check the port and that the server runs ({_TLS_PORTS})",
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return CheckFailed(
            step,
            f"the TLS certificate of {where} is not trusted: {exc.verify_message}",
            f"the server must present a certificate valid for {host} from a trusted authority",
        )
    if isinstance(exc, ssl.SSLError):
        return CheckFailed(
            step,
            f"TLS mismatch with {where}: the TLS handshake failed ({exc.reason or exc})",
            "the port and the TLS setting do not match: a port that starts in plain text needs "
            f"starttls, a port that starts with TLS needs ssl/tls ({_TLS_PORTS})",
        )
    if isinstance(exc, TimeoutError | socket.timeout):
        return CheckFailed(
            step,
            f"no answer from {where} within {timeout:g} seconds",
            "a firewall may drop the connection, or the port expects TLS from the first byte "
            f"while the check spoke plain text ({_TLS_PORTS})",
        )
    if isinstance(exc, ConnectionError | EOFError | imaplib.IMAP4.abort):
        return CheckFailed(
            step,
            f"{where} closed the connection unexpectedly",
            f"the port may expect TLS from the first byte, or plain text ({_TLS_PORTS})",
        )
    return CheckFailed(step, f"{where}: {exc}", "check the server's settings")


@contextlib.contextmanager
def _connecting(step: str, policy: HostPolicy | None, where: str, timeout: float) -> Iterator[None]:
    """Around the connection to an admin-given host: any failure to reach a mail server is
    the same answer after the same time (the whole timeout), whether the port was closed,
    filtered or open to something else, so the check cannot be used as a port scanner."""
    started = time.monotonic()
    try:
        yield
    except CouldNotConnect as exc:
        if policy is None:
            raise
        time.sleep(max(0.0, started + timeout - time.monotonic()))
        raise CheckFailed(
            step,
            f"could not connect to {where}",
            "check the host, the port and the TLS setting, and that the server runs "
            f"({_TLS_PORTS})",
        ) from exc


@contextlib.contextmanager
def _step(report: Report, name: str, where: str, timeout: float) -> Iterator[None]:
    try:
        yield
    except CheckFailed:
        raise
    except HostRefused as exc:
        raise CheckFailed(
            name, str(exc), "ask the operator to allow the host (allowed_hosts of the app)"
        ) from exc
    except (OSError, EOFError, imaplib.IMAP4.error, smtplib.SMTPException) as exc:
        raise _explain(name, where, exc, timeout) from exc


# --- IMAP ---------------------------------------------------------------------------------


def _imap_connect(target: ImapTarget, report: Report, timeout: float) -> IMAPClient:
    context = ssl.create_default_context()
    with (
        _step(report, "imap connect", target.where, timeout),
        _connecting("imap connect", target.policy, target.where, timeout),
    ):
        client = _imap(target, context, timeout)
    report.passed(
        "imap connect", f"connected to {target.where}" + (" over TLS" if target.ssl else "")
    )
    if target.starttls and not target.ssl:
        with _step(report, "imap tls", target.where, timeout):
            try:
                client.starttls(context)
            except IMAPClientError as exc:
                raise CheckFailed(
                    "imap tls",
                    f"{target.where} does not offer STARTTLS ({exc})",
                    "turn starttls off only if the server is on a trusted network; otherwise "
                    "use the server's TLS port with ssl on",
                ) from exc
        report.passed("imap tls", "STARTTLS negotiated, certificate trusted")
    return client


def _imap_login(client: IMAPClient, target: ImapTarget, report: Report, timeout: float) -> None:
    if not target.password:
        raise CheckFailed(
            "imap login",
            f"no password for {target.username}",
            "set the password (password_env or password_file in the config, or through the "
            "admin API)",
        )
    with _step(report, "imap login", target.where, timeout):
        try:
            client.login(target.username, target.password)
        except LoginError as exc:
            raise CheckFailed(
                "imap login",
                f"{target.where} refused the login of {target.username}: wrong user name or "
                "password",
                "check the user name and password; some providers need an app password or "
                "IMAP access turned on",
            ) from exc
    report.passed("imap login", f"logged in as {target.username}")


def _imap_select(client: IMAPClient, target: ImapTarget, report: Report, timeout: float) -> None:
    with _step(report, "imap folder", target.where, timeout):
        try:
            info = client.select_folder(target.folder, readonly=True)
        except IMAPClientError as exc:
            folders = ", ".join(sorted(f[2] for f in client.list_folders()))[:300]
            raise CheckFailed(
                "imap folder",
                f"the folder {target.folder!r} does not exist for {target.username}",
                f"choose one of the account's folders: {folders}",
            ) from exc
    report.passed("imap folder", f"{target.folder} has {info.get(b'EXISTS', 0)} messages")


def _imap(target: ImapTarget, context: ssl.SSLContext, timeout: float) -> IMAPClient:
    return imap_client(
        target.policy,
        target.host,
        target.port,
        use_ssl=target.ssl,
        context=context,
        timeout=timeout,
    )


def check_imap(target: ImapTarget, report: Report, timeout: float = 15.0) -> None:
    """Connect, TLS, login and select; raises CheckFailed at the first failing step."""
    client = _imap_connect(target, report, timeout)
    try:
        _imap_login(client, target, report, timeout)
        _imap_select(client, target, report, timeout)
    finally:
        with contextlib.suppress(Exception):
            client.logout()


def find_in_imap(target: ImapTarget, token: str, timeout: float = 15.0) -> bool:
    """Whether the check mail with `token` is in the folder; it is deleted once found.

    The account passed its own check just before, so an error here is transient: the answer is
    "not yet" and the round trip keeps waiting."""
    try:
        return _find_and_delete(target, token, timeout)
    except (OSError, EOFError, imaplib.IMAP4.error, HostRefused):
        return False


def _find_and_delete(target: ImapTarget, token: str, timeout: float) -> bool:
    client = _imap(target, ssl.create_default_context(), timeout)
    try:
        if target.starttls and not target.ssl:
            client.starttls(ssl.create_default_context())
        client.login(target.username, target.password or "")
        client.select_folder(target.folder)
        uids = client.search(["HEADER", CHECK_HEADER, token])
        if uids:
            # The check mail has done its job; it should not sit in the support mailbox.
            client.delete_messages(uids)
            client.expunge()
        return bool(uids)
    finally:
        with contextlib.suppress(Exception):
            client.logout()


# --- SMTP relay ---------------------------------------------------------------------------


def _smtp_connect(target: SmtpTarget, report: Report, timeout: float) -> smtplib.SMTP:
    context = ssl.create_default_context()
    with (
        _step(report, "smtp connect", target.where, timeout),
        _connecting("smtp connect", target.policy, target.where, timeout),
    ):
        client = smtp_client(
            target.policy,
            target.host,
            target.port,
            tls=target.tls,
            timeout=timeout,
            context=context,
        )
    with _step(report, "smtp connect", target.where, timeout):
        client.ehlo()
    report.passed(
        "smtp connect", f"connected to {target.where}" + (" over TLS" if target.tls else "")
    )
    if target.starttls and not target.tls:
        with _step(report, "smtp tls", target.where, timeout):
            if not client.has_extn("starttls"):
                raise CheckFailed(
                    "smtp tls",
                    f"the relay {target.where} does not offer STARTTLS",
                    "use the relay's submission port (587) or its TLS port (465, tls on)",
                )
            client.starttls(context=context)
            client.ehlo()
        report.passed("smtp tls", "STARTTLS negotiated, certificate trusted")
    return client


def _smtp_auth(client: smtplib.SMTP, target: SmtpTarget, report: Report, timeout: float) -> None:
    if not target.username:
        report.passed("smtp auth", "no login configured (the relay trusts this host)")
        return
    with _step(report, "smtp auth", target.where, timeout):
        try:
            client.login(target.username, target.password or "")
        except smtplib.SMTPAuthenticationError as exc:
            raise CheckFailed(
                "smtp auth",
                f"the relay {target.where} refused the login of {target.username}: wrong user "
                f"name or password ({exc.smtp_code})",
                "check the relay's user name and password (password_env in the config)",
            ) from exc
        except smtplib.SMTPNotSupportedError as exc:
            raise CheckFailed(
                "smtp auth",
                f"the relay {target.where} offers no login here",
                "most relays offer AUTH only after STARTTLS: turn starttls on",
            ) from exc
    report.passed("smtp auth", f"logged in as {target.username}")


def check_smtp(target: SmtpTarget, report: Report, timeout: float = 15.0) -> smtplib.SMTP:
    """Connect, STARTTLS and AUTH; returns the logged-in connection for the caller to use."""
    client = _smtp_connect(target, report, timeout)
    try:
        _smtp_auth(client, target, report, timeout)
    except BaseException:
        with contextlib.suppress(Exception):
            client.quit()
        raise
    return client


def check_mail(address: str, token: str, keyring: Keyring | None = None) -> EmailMessage:
    """The verification mail: from and to the channel address, with our signed loop mark so
    the gateway's inbound pipeline drops it as its own mail instead of opening a
    conversation."""
    msg = EmailMessage()
    msg["From"] = address
    msg["To"] = address
    msg["Subject"] = "Channel check"
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = f"<check-{token}@{address.rpartition('@')[2]}>"
    msg[CHECK_HEADER] = token
    if keyring is not None:
        msg[LOOP_HEADER] = loop_mark(keyring, 0, str(msg["Message-ID"]))
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content("This message checks that mail to this address reaches the support gateway.")
    return msg


def new_token() -> str:
    return secrets.token_hex(12)


def round_trip(
    client: smtplib.SMTP,
    address: str,
    token: str,
    arrived: Callable[[], bool],
    report: Report,
    timeout: float,
    poll_seconds: float = 0.5,
    keyring: Keyring | None = None,
) -> None:
    """Send the verification mail through the relay and wait until `arrived()` is true; the
    keyring signs its loop mark."""
    where = "the relay"
    with _step(report, "round trip", where, timeout):
        try:
            client.send_message(check_mail(address, token, keyring))
        except smtplib.SMTPRecipientsRefused as exc:
            raise CheckFailed(
                "round trip",
                f"the relay refused to send to {address}: {_reply(exc.recipients)}",
                "the relay must accept mail from this gateway for the channel's address",
            ) from exc
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if arrived():
            report.passed("round trip", f"a mail sent through the relay came back to {address}")
            return
        time.sleep(poll_seconds)
    raise CheckFailed(
        "round trip",
        f"a mail sent through the relay to {address} did not come back within {timeout:g} seconds",
        f"check that mail for {address} reaches the gateway: its MX record or forwarding points "
        "at this gateway's SMTP server, or the IMAP account receives it",
    )


def _reply(recipients: dict[str, tuple[int, bytes]]) -> str:
    return "; ".join(f"{code} {msg.decode(errors='replace')}" for code, msg in recipients.values())
