"""The gateway reads DATA exactly as aiosmtpd does, only faster.

GatewaySMTP reads a message up to CRLF.CRLF in large chunks instead of line by line. Two real
servers on loopback, aiosmtpd's own and the gateway's, are sent the same bytes, cut into TCP
writes at random places (the terminator split across writes included), and must answer the
same and hand the same message bytes to the handler: dot-unstuffing, an empty message, a
line that is only dots, bare CR or LF, a line too long (500), a message too big (552), and
what follows the end of a message.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from channels.email.smtp import Capacity, GatewaySMTP

SIZE_LIMIT = 3000


class Capture:
    def __init__(self) -> None:
        self.contents: list[bytes] = []

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.contents.append(envelope.original_content)  # type: ignore[attr-defined]
        return "250 OK"


class PlainController(Controller):
    def factory(self) -> SMTP:
        return SMTP(self.handler, data_size_limit=SIZE_LIMIT, hostname="plain")


class GatewayController(Controller):
    def factory(self) -> SMTP:
        return GatewaySMTP(
            self.handler,  # type: ignore[arg-type]
            Capacity(100, 100),
            data_size_limit=SIZE_LIMIT,
            hostname="plain",
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[tuple[int, Capture], tuple[int, Capture]]]:
    started = []
    for cls in (PlainController, GatewayController):
        capture = Capture()
        port = free_port()
        controller = cls(capture, hostname="127.0.0.1", port=port)
        controller.start()
        started.append((controller, port, capture))
    yield (started[0][1], started[0][2]), (started[1][1], started[1][2])
    for controller, _, _ in started:
        controller.stop()


def converse(port: int, payload: bytes, cuts: list[int]) -> bytes:
    """Greet, send one message's DATA in pieces, QUIT; everything the server said."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(b"EHLO test\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n")
        replies = b""
        while replies.count(b"\r\n250 ") + replies.startswith(b"250 ") < 3:
            replies += sock.recv(65536)
        sock.sendall(b"DATA\r\n")
        while b"354 " not in replies:
            replies += sock.recv(65536)
        start = 0
        try:
            for cut in [*sorted(cuts), len(payload)]:
                if cut > start:
                    sock.sendall(payload[start:cut])
                    time.sleep(0.0005)  # a separate TCP segment, most of the time
                    start = cut
            sock.sendall(b"QUIT\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server hung up (too many bad commands after an early end): both must
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            replies += chunk
    # The greeting names the server's host; the rest must be the same.
    return replies.split(b"\r\n", 1)[1]


_pieces = st.sampled_from(
    [
        b"Hello",
        b"a" * 300,
        b".",
        b"..",
        b"...",
        b" ",
        b"\r",
        b"\n",
        b"\r\n",
        b".\r\n",
        b"\r\n.",
        b"\r\n..\r\n",
        b"Subject: x\r\n",
        b"\xc3\xa9",
        b"\t",
        b"QUIT",
        b"=2E",
    ]
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=st.lists(_pieces, max_size=25).map(b"".join), data=st.data())
@example(body=b"", data=None)
@example(body=b"one line\r\n", data=None)
@example(body=b".\r\n..\r\n.hidden\r\n", data=None)
@example(body=b"x" * 1200 + b"\r\n", data=None)  # a line too long: 500
@example(body=(b"y" * 900 + b"\r\n") * 4, data=None)  # too big: 552
def test_the_gateway_reads_data_as_aiosmtpd_does(servers, body: bytes, data) -> None:
    payload = body + (b"" if body.endswith(b"\r\n") or not body else b"\r\n") + b".\r\n"
    cuts = (
        data.draw(st.lists(st.integers(0, len(payload)), max_size=6))
        if data is not None
        else [len(payload) - 4, len(payload) - 2]  # the terminator split across writes
    )
    (plain_port, plain), (ours_port, ours) = servers
    plain.contents.clear()
    ours.contents.clear()
    assert converse(ours_port, payload, cuts) == converse(plain_port, payload, cuts)
    assert ours.contents == plain.contents
