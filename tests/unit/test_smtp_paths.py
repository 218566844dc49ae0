"""The SMTP server reads MAIL FROM and RCPT TO paths exactly as aiosmtpd does.

`GatewaySMTP` reads the plain `<local@domain>` form with a regex instead of the email
package's full parser (it is most of the accept path's CPU); for every path, plain or not, the
result must be aiosmtpd's own: the address, the parameters after it, or a refusal.
"""

from __future__ import annotations

import asyncio

from aiosmtpd.smtp import SMTP
from hypothesis import example, given, settings
from hypothesis import strategies as st

from channels.email.smtp import GatewaySMTP, InboundHandler, SmtpLimits
from channels.email.smtp_capacity import Capacity


class _Handler:
    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        return "250 OK"


def _servers() -> tuple[SMTP, GatewaySMTP]:
    loop = asyncio.new_event_loop()
    handler = InboundHandler(lambda _address: None, None, SmtpLimits())  # type: ignore[arg-type]
    plain = SMTP(_Handler(), loop=loop)
    ours = GatewaySMTP(handler, Capacity(1, 1), loop=loop)
    return plain, ours


PLAIN, OURS = _servers()


def read(server: SMTP, arg: str) -> object:
    """What the server makes of a path; the parser's own crash (it has some) counts too."""
    try:
        return server._getaddr(arg)
    except Exception as exc:  # noqa: BLE001 - compared, not handled
        return type(exc)


_pieces = st.sampled_from(
    [
        "a",
        "Bob",
        "b.c",
        ".",
        "..",
        "+",
        "-",
        "=",
        "_",
        "~",
        "1",
        "é",
        '"x y"',
        "(c)",
        " ",
        "\t",
        "[1.2.3.4]",
        "@",
        ":",
        ",",
        "<",
        ">",
        "\\",
    ]
)
_part = st.lists(_pieces, max_size=5).map("".join)
_params = st.sampled_from(["", " SIZE=10", "  BODY=8BITMIME", "(x) y", " (x)", "\tSIZE=1 ", "x"])


@settings(max_examples=3000, deadline=None)
@given(
    lead=st.sampled_from(["", " ", "\t"]),
    local=_part,
    domain=_part,
    params=_params,
    angle=st.booleans(),
)
@example(lead="", local="chris", domain="example.com", params=" SIZE=100", angle=True)
@example(lead="", local="a", domain="b", params=" (comment) SIZE=1", angle=True)
@example(lead="", local='"john doe"', domain="example.com", params="", angle=True)
@example(lead="", local="", domain="", params="", angle=True)  # the null sender <@>
def test_a_path_is_read_as_aiosmtpd_reads_it(
    lead: str, local: str, domain: str, params: str, angle: bool
) -> None:
    path = f"{local}@{domain}"
    arg = lead + (f"<{path}>" if angle else path) + params
    assert read(OURS, arg) == read(PLAIN, arg)


def test_the_null_sender_and_an_overlong_local_part_are_read_as_aiosmtpd_reads_them() -> None:
    for arg in ("<>", "<> SIZE=10", f"<{'x' * 65}@example.com>", f"<{'x' * 64}@example.com>"):
        assert read(OURS, arg) == read(PLAIN, arg)
