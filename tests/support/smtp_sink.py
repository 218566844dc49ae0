"""A real SMTP relay stand-in for tests: aiosmtpd on loopback, keeping every message it accepts.

It can be stopped and started again on the same port (a relay outage), and told to answer DATA
with a given reply (a 4xx or 5xx) instead of accepting, or RCPT TO for given addresses. With
`record_logins` it offers AUTH (without TLS, as an attacker's server would) and keeps every user
name and password it is sent.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes

    @property
    def message(self) -> EmailMessage:
        parsed = BytesParser(policy=policy.default).parsebytes(self.raw)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class _Handler:
    sink: SmtpSink

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        with self.sink.lock:
            self.sink.greeted += 1
        session.host_name = hostname
        return responses

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        refusal = self.sink.refuse_rcpt.get(address.lower())
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.sink.answer is not None:
            return self.sink.answer
        with self.sink.lock:
            self.sink.messages.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content))
            )
        return "250 OK queued"


@dataclass
class SmtpSink:
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    answer: str | None = None  # e.g. "451 try later" or "550 no such user"
    # An answer to RCPT TO per address (lowercase), e.g. {"pat@example.org": "550 no such user"}
    refuse_rcpt: dict[str, str] = field(default_factory=dict)
    messages: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    record_logins: bool = False
    logins: list[tuple[str, str]] = field(default_factory=list)  # (user, password)
    greeted: int = 0  # EHLOs: how many clients talked to it
    _controller: Controller | None = None

    def start(self) -> SmtpSink:
        auth: dict[str, Any] = {}
        if self.record_logins:
            auth = {"authenticator": self._record, "auth_require_tls": False}
        self._controller = Controller(
            _Handler(self), hostname=self.host, port=self.port, data_size_limit=None, **auth
        )
        self._controller.start()
        return self

    def _record(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        if isinstance(data, LoginPassword):
            with self.lock:
                self.logins.append((data.login.decode(), data.password.decode()))
        return AuthResult(success=True)

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.messages) >= count:
                    return list(self.messages)
            time.sleep(0.02)
        with self.lock:
            return list(self.messages)


@pytest.fixture
def relay() -> Iterator[SmtpSink]:
    """An SmtpSink standing in for the outbound relay, stopped after the test."""
    sink = SmtpSink().start()
    yield sink
    sink.stop()
