"""A throwaway SMTP relay (aiosmtpd) with STARTTLS and AUTH, for tests of outbound and checks.

It accepts mail only after STARTTLS and a login, like a real submission server, and hands each
message to `deliver(recipient, raw)`: a test wires that to Dovecot to make a mailbox receive
mail, or leaves it out to model a relay whose mail never arrives anywhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.support.certs import SelfSignedCert
from tests.support.http import free_port

Deliver = Callable[[str, bytes], object]


class _Handler:
    def __init__(self, deliver: Deliver | None) -> None:
        self.deliver = deliver
        self.received: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), raw))
        if self.deliver is not None:
            for rcpt in envelope.rcpt_tos:
                await asyncio.to_thread(self.deliver, rcpt, raw)
        return "250 OK"


class Relay:
    def __init__(
        self,
        cert: SelfSignedCert,
        users: dict[str, str],
        deliver: Deliver | None = None,
    ) -> None:
        self.port = free_port()
        self.users = users
        self.handler = _Handler(deliver)
        self._controller = Controller(
            self.handler,
            hostname="127.0.0.1",
            port=self.port,
            server_hostname="localhost",
            tls_context=cert.server_context(),
            require_starttls=True,
            auth_required=True,
            authenticator=self._authenticate,
        )

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        if isinstance(data, LoginPassword):
            user, password = data.login.decode(), data.password.decode()
            if self.users.get(user) == password:
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    def start(self) -> Relay:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    @property
    def received(self) -> list[tuple[str, list[str], bytes]]:
        return self.handler.received
