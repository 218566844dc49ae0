"""An attacker's IMAP server on loopback: it greets, offers LOGIN without TLS and keeps every
user name and password a client sends it. Tests point channels at it to prove that no secret
of the server or of another app ever reaches a host the operator did not allow.
"""

from __future__ import annotations

import re
import socketserver
import threading
from dataclasses import dataclass, field

from tests.support.http import free_port

_ARG = re.compile(rb'"((?:[^"\\]|\\.)*)"|(\S+)')


def _args(text: bytes) -> list[str]:
    return [
        (quoted.replace(b'\\"', b'"').replace(b"\\\\", b"\\") if quoted else atom).decode()
        for quoted, atom in _ARG.findall(text)
    ]


@dataclass
class ImapTrap:
    port: int = field(default_factory=free_port)
    logins: list[tuple[str, str]] = field(default_factory=list)
    connections: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    _server: socketserver.ThreadingTCPServer | None = None

    def start(self) -> ImapTrap:
        trap = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                with trap.lock:
                    trap.connections += 1
                self.wfile.write(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n")
                for line in self.rfile:
                    tag, _, rest = line.strip().partition(b" ")
                    command, _, args = rest.partition(b" ")
                    verb = command.upper()
                    if verb == b"CAPABILITY":
                        self.wfile.write(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n")
                    elif verb == b"LOGIN":
                        user, password = ([*_args(args), "", ""])[:2]
                        with trap.lock:
                            trap.logins.append((user, password))
                    elif verb == b"LOGOUT":
                        self.wfile.write(b"* BYE\r\n" + tag + b" OK bye\r\n")
                        return
                    self.wfile.write(tag + b" OK done\r\n")

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
