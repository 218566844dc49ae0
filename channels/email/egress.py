"""Where an app's mail connections may go: the operator's allow-list of IMAP and SMTP hosts.

An app admin names the IMAP account and relay of a channel, and the gateway then logs in there
with the channel's password. Without a limit that is a way to send a password (or, through a
test that reports what it saw, a port scan) anywhere, including the gateway's own network. So
every connection made for an admin-given target goes through a `HostPolicy`: the host must be
one the operator listed for the app, every address it resolves to is checked, and the
connection goes to a checked address (never to a second lookup of the name, which a DNS
rebinding answer could point somewhere else). Loopback, private, link-local and other
non-public addresses are reachable only through a network the operator listed explicitly.

A connection that fails is reported as "could not connect to HOST:PORT" whatever the cause
(refused, filtered, no greeting), so the answer does not tell which ports are open.
"""

from __future__ import annotations

import contextlib
import imaplib
import ipaddress
import re
import smtplib
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from imapclient import IMAPClient, imap4, tls
from imapclient.exceptions import IMAPClientError

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAME = re.compile(r"^(\*\.)?([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9_-]{1,63}$")


class HostRefused(Exception):
    """The operator does not allow this target for the app; the message says why, plainly."""


class CouldNotConnect(OSError):
    """No mail server could be reached at a checked address; deliberately without the cause."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(f"could not connect to {host}:{port}")


@dataclass(frozen=True)
class HostRule:
    """One allow-list entry: a host name (`*.` for its subdomains) or an IP network, with an
    optional port."""

    name: str | None
    network: IpNetwork | None
    port: int | None

    def allows_port(self, port: int) -> bool:
        return self.port is None or self.port == port

    def matches_name(self, host: str) -> bool:
        if self.name is None:
            return False
        if self.name.startswith("*."):
            return host.endswith(self.name[1:]) and host != self.name[2:]
        return host == self.name


def parse_rule(text: str) -> HostRule:
    """`smtp.example.com`, `*.example.com:587`, `10.0.0.5`, `10.0.0.0/8:143`, `[::1]:25`."""
    entry = text.strip().lower()
    port: int | None = None
    if entry.startswith("["):
        entry, bracket, rest = entry[1:].partition("]")
        if not bracket:
            raise ValueError(f"{text!r} is not a host name: the [ of an IPv6 address is not closed")
        if rest:
            port = _port(rest.removeprefix(":") if rest.startswith(":") else "x", text)
    elif entry.count(":") == 1:
        entry, _, number = entry.partition(":")
        port = _port(number, text)
    with contextlib.suppress(ValueError):
        return HostRule(None, ipaddress.ip_network(entry, strict=False), port)
    if not _NAME.match(entry):
        raise ValueError(
            f"{text!r} is not a host name, *.domain, IP address or network (with an optional :port)"
        )
    return HostRule(entry, None, port)


def _port(number: str, text: str) -> int:
    if not number.isdigit() or not 0 < int(number) <= 65535:
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
    return int(number)


def _plain(address: IpAddress) -> IpAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True)
class HostPolicy:
    """The hosts the operator allows one app's channels to use."""

    rules: tuple[HostRule, ...] = ()

    @classmethod
    def parse(cls, entries: Sequence[str]) -> HostPolicy:
        return cls(tuple(parse_rule(e) for e in entries))

    def check(self, host: str, port: int, *, resolve: bool = True) -> list[str]:
        """The addresses a connection to host:port may use, every one checked; HostRefused if
        the operator does not allow it. Without `resolve` a name the list allows by name is
        accepted as it stands (its addresses are checked when it is connected to)."""
        name = host.strip().lower().rstrip(".")
        rules = [r for r in self.rules if r.allows_port(port)]
        networks = [r.network for r in rules if r.network is not None]
        by_name = any(r.matches_name(name) for r in rules)
        try:
            literal: IpAddress | None = _plain(ipaddress.ip_address(name.strip("[]")))
        except ValueError:
            literal = None
        if literal is None and not by_name and not networks:
            raise HostRefused(self._not_listed(host, port))
        if literal is None and by_name and not resolve:
            return []
        addresses = [literal] if literal is not None else _resolve(host, port)
        for address in addresses:
            if any(address in network for network in networks):
                continue
            if by_name and address.is_global:
                continue
            if by_name:
                raise HostRefused(
                    f"{host} resolves to a private or local address, which the operator does "
                    "not allow for this app"
                )
            raise HostRefused(self._not_listed(host, port))
        return [str(a) for a in addresses]

    def _not_listed(self, host: str, port: int) -> str:
        if not self.rules:
            return (
                f"{host}:{port}: the operator allows no IMAP or SMTP hosts for this app "
                "(allowed_hosts of the app in the config file)"
            )
        return f"{host}:{port} is not among the hosts the operator allows for this app"


def _resolve(host: str, port: int) -> list[IpAddress]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise HostRefused(f"cannot find the host {host}: DNS has no address for it") from None
    seen: dict[IpAddress, None] = {}
    for info in infos:
        seen[_plain(ipaddress.ip_address(str(info[4][0]).partition("%")[0]))] = None
    if not seen:
        raise HostRefused(f"cannot find the host {host}: DNS has no address for it")
    return list(seen)


def connect_checked(
    policy: HostPolicy, host: str, port: int, timeout: float | None
) -> socket.socket:
    """A TCP connection to host:port through `policy`: to the first checked address that
    answers. Any failure is the same CouldNotConnect."""
    for address in policy.check(host, port):
        try:
            return socket.create_connection((address, port), timeout=timeout)
        except OSError:
            continue
    raise CouldNotConnect(host, port)


# --- clients that connect only to checked addresses -------------------------------------------
# TLS still verifies the certificate for the host NAME: only the TCP connection is pinned.


class CheckedSMTP(smtplib.SMTP):
    def __init__(self, policy: HostPolicy, host: str, port: int, **kwargs: Any) -> None:
        self.policy = policy
        super().__init__(host, port, **kwargs)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return connect_checked(self.policy, host, port, timeout)


class CheckedSMTP_SSL(smtplib.SMTP_SSL):
    def __init__(self, policy: HostPolicy, host: str, port: int, **kwargs: Any) -> None:
        self.policy = policy
        super().__init__(host, port, **kwargs)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = connect_checked(self.policy, host, port, timeout)
        return self.context.wrap_socket(sock, server_hostname=self._host)  # type: ignore[attr-defined]


def smtp_client(
    policy: HostPolicy | None,
    host: str,
    port: int,
    *,
    tls: bool,
    timeout: float,
    context: ssl.SSLContext,
    local_hostname: str | None = None,
) -> smtplib.SMTP:
    """An SMTP connection: through `policy` when the target came from an app admin, straight
    to the host when the operator configured it (policy None)."""
    if policy is None:
        if tls:
            return smtplib.SMTP_SSL(
                host, port, timeout=timeout, context=context, local_hostname=local_hostname
            )
        return smtplib.SMTP(host, port, timeout=timeout, local_hostname=local_hostname)
    try:
        if tls:
            return CheckedSMTP_SSL(
                policy, host, port, timeout=timeout, context=context, local_hostname=local_hostname
            )
        return CheckedSMTP(policy, host, port, timeout=timeout, local_hostname=local_hostname)
    except CouldNotConnect:
        raise
    except (OSError, smtplib.SMTPException):
        # Every failure before the greeting reads the same: no port scan by error message.
        raise CouldNotConnect(host, port) from None


class _CheckedIMAP4(imap4.IMAP4WithTimeout):
    def __init__(self, policy: HostPolicy, host: str, port: int, timeout: float | None) -> None:
        self.policy = policy
        super().__init__(host, port, timeout)

    def _create_socket(self, timeout: float | None = None) -> socket.socket:
        return connect_checked(self.policy, self.host, self.port, timeout or self._timeout)


class _CheckedIMAP4TLS(tls.IMAP4_TLS):
    def __init__(
        self,
        policy: HostPolicy,
        host: str,
        port: int,
        context: ssl.SSLContext | None,
        timeout: float | None,
    ) -> None:
        self.policy = policy
        super().__init__(host, port, context, timeout)

    def _create_socket(self, timeout: float | None = None) -> socket.socket:
        sock = connect_checked(self.policy, self.host, self.port, timeout or self._timeout)
        return tls.wrap_socket(sock, self.ssl_context, self.host)


class CheckedIMAPClient(IMAPClient):
    """IMAPClient whose connection goes only to addresses `policy` checked."""

    def __init__(self, policy: HostPolicy, host: str, **kwargs: Any) -> None:
        self.policy = policy
        super().__init__(host, **kwargs)

    def _create_IMAP4(self) -> imaplib.IMAP4:
        timeout = getattr(self._timeout, "connect", None)
        if self.ssl:
            return _CheckedIMAP4TLS(self.policy, self.host, self.port, self.ssl_context, timeout)
        return _CheckedIMAP4(self.policy, self.host, self.port, timeout)


def imap_client(
    policy: HostPolicy | None,
    host: str,
    port: int,
    *,
    use_ssl: bool,
    context: ssl.SSLContext,
    timeout: float,
) -> IMAPClient:
    """An IMAP connection, through `policy` when the target came from an app admin."""
    if policy is None:
        return IMAPClient(host, port=port, ssl=use_ssl, ssl_context=context, timeout=timeout)
    try:
        return CheckedIMAPClient(
            policy, host, port=port, ssl=use_ssl, ssl_context=context, timeout=timeout
        )
    except CouldNotConnect:
        raise
    except (OSError, EOFError, imaplib.IMAP4.error, IMAPClientError):
        # Every failure before the greeting reads the same: no port scan by error message.
        raise CouldNotConnect(host, port) from None
