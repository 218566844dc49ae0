"""Other MTAs' real bounces, replayed to an email's VERP return path through the gateway's real
SMTP server (smtplib on loopback, from the null sender as a remote MTA sends them), on SQLite
and PostgreSQL.

The bounces are public samples from `tests/corpora/` (Postfix, qmail, Yahoo, Exchange 5.5 that
names no address, GroupWise, SMTP32 and one-off layouts that only flufl.bounce reads): each
is tied to exactly the email and recipient its return path names, whatever it says inside,
and a warning (a delay) never marks the address undeliverable.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.security.test_bounces import (  # noqa: F401 - importing registers the fixture
    address_row,
    answered,
    gateway,
    inbound,
    send,
)
from tests.understanding.score import CORPORA

PERMANENT = (
    "flufl_bounce/postfix/postfix_01.txt",
    "flufl_bounce/qmail/qmail_01.txt",
    "flufl_bounce/yahoo/yahoo_03.txt",
    "flufl_bounce/groupwise/groupwise_01.txt",
    "flufl_bounce/other/smtp32_01.txt",
    "flufl_bounce/simple-match/simple_20.txt",
    "bounced/freetext/tt_bounce_11.eml",  # Exchange 5.5: a display name, no address
)
WARNINGS = sorted((CORPORA / "flufl_bounce" / "warning").iterdir())


def _sample(name: str | Path) -> bytes:
    """The sample as it travels over SMTP: CRLF line ends (smtplib sends bytes as they are)."""
    return re.sub(rb"\r?\n", b"\r\n", (CORPORA / name).read_bytes())


def test_a_real_bounce_of_any_layout_to_the_return_path_marks_that_recipient(gateway, relay):  # noqa: F811
    for n, name in enumerate(PERMANENT):
        customer = f"customer{n}@litware.test"
        sent = answered(gateway, relay, customer, f"Question {n}")
        row = send(gateway, _sample(name), mail_from="", to=sent.mail_from)
        reason = inbound(gateway, row).reason or ""
        assert f"marked undeliverable: {customer}" in reason, (name, reason)
        assert address_row(gateway, customer).bounced_at is not None, name


def test_a_real_delay_warning_never_marks_the_address(gateway, relay):  # noqa: F811
    customer = "waiting@litware.test"
    sent = answered(gateway, relay, customer, "Where is my parcel")
    for name in WARNINGS:
        row = send(gateway, _sample(name), mail_from="", to=sent.mail_from)
        reason = inbound(gateway, row).reason or ""
        assert "bounce (temporary" in reason and "marked undeliverable: none" in reason, (
            name,
            reason,
        )
    assert address_row(gateway, customer).bounced_at is None
