"""Bounce detection against the fixture corpus in tests/fixtures/bounces.

Each ``<family>/<case>.eml`` has a ``<case>.json`` sidecar holding the expected ``Bounce``
fields, or ``null`` for messages that must not be taken for a bounce (``not_bounces/``).
"""

from __future__ import annotations

import email
import email.policy
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import Message
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from channels.email.bounce import Bounce, detect_bounce

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "bounces"
CASES = sorted(FIXTURES.glob("*/*.eml"))
FAMILIES = ("rfc3464", "postfix", "exim", "qmail", "exchange", "gmail", "yahoo", "generic")


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def _no_internal_errors() -> Iterator[None]:
    """The public function swallows internal errors; the fuzz tests must still see them."""
    handler = _Collect()
    logger = logging.getLogger("channels.email.bounce")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
    assert not handler.records, handler.records[0].exc_info


def _parse(raw: bytes) -> Message:
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def _case_id(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def test_corpus_covers_every_family() -> None:
    counts = {family: len(list((FIXTURES / family).glob("*.eml"))) for family in FAMILIES}
    assert all(n >= 2 for n in counts.values()), counts
    assert len(list((FIXTURES / "not_bounces").glob("*.eml"))) >= 2
    temporary = {
        p.parent.name
        for p in CASES
        if (exp := json.loads(p.with_suffix(".json").read_text())) and not exp["permanent"]
    }
    assert len(temporary) >= 4, temporary


@pytest.mark.parametrize("path", CASES, ids=_case_id)
def test_fixture(path: Path) -> None:
    expected = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    got = detect_bounce(_parse(path.read_bytes()))

    if expected is None:
        assert got is None
        return
    assert isinstance(got, Bounce)
    assert got.permanent is expected["permanent"]
    assert list(got.recipients) == expected["recipients"]
    assert got.original_message_id == expected["original_message_id"]
    assert got.family == expected.get("family", path.parent.name)
    if expected.get("diagnostic_contains"):
        assert expected["diagnostic_contains"].lower() in got.diagnostic.lower()
    assert len(got.diagnostic) <= 200


def test_human_mail_without_structure_is_not_a_bounce() -> None:
    raw = (
        b"From: Kim <kim@example.com>\r\nTo: support@acme-help.example\r\n"
        b"Subject: Delivery Status Notification (Failure)\r\n\r\n"
        b"Delivery to the following recipient failed permanently:\r\n\r\n"
        b"     friend@example.com\r\n"
    )
    assert detect_bounce(_parse(raw)) is None


def test_mixed_report_keeps_only_the_verdicts_recipients() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.example.com\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nReport.\r\n"
        b"--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mx.example.com\r\n\r\n"
        b"Final-Recipient: rfc822; slow@example.com\r\nAction: delayed\r\nStatus: 4.4.1\r\n\r\n"
        b"Final-Recipient: rfc822; Gone@Example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
        b"--b--\r\n"
    )
    got = detect_bounce(_parse(raw))
    assert got == Bounce(
        permanent=True,
        recipients=("gone@example.com",),
        family="rfc3464",
        original_message_id=None,
        diagnostic="5.1.1",
    )


def test_expired_4xx_failure_is_not_permanent() -> None:
    # Action: failed with 4.4.7 means our message is lost, not that the address is bad.
    raw = (
        b"From: MAILER-DAEMON@mx.example.com\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mx.example.com\r\n\r\n"
        b"Final-Recipient: rfc822; a@example.com\r\nAction: failed\r\nStatus: 4.4.7\r\n"
        b"Diagnostic-Code: smtp; 421 4.4.7 message expired\r\n\r\n"
        b"--b--\r\n"
    )
    got = detect_bounce(_parse(raw))
    assert got is not None
    assert got.permanent is False
    assert got.diagnostic == "421 4.4.7 message expired"


# Fragments that steer mutations into the MIME and RFC 2047 parsing paths, where real
# failures hid (NUL in a charset parameter, bad base64 in an encoded word).
_TOKENS = [
    b"=?utf-8?B?",
    b"=?x?Q?",
    b"?=",
    b"\r\n\r\n",
    b"--",
    b'"',
    b"<>",
    b"@",
    b"; charset=\x00",
    b"Content-Type: message/delivery-status\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b"*0*=''",
]


def _mutations() -> st.SearchStrategy[bytes]:
    sources = [p.read_bytes() for p in CASES]

    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(st.sampled_from(sources)))
        for _ in range(draw(st.integers(0, 8))):
            if not data:
                break
            pos = draw(st.integers(0, len(data) - 1))
            action = draw(st.sampled_from(["flip", "cut", "insert", "truncate"]))
            if action == "flip":
                data[pos] = draw(st.integers(0, 255))
            elif action == "cut":
                del data[pos : pos + draw(st.integers(1, 200))]
            elif action == "insert":
                data[pos:pos] = draw(st.one_of(st.binary(max_size=40), st.sampled_from(_TOKENS)))
            else:
                del data[pos:]
        return bytes(data)

    return mutate()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=2000), _mutations()))
def test_never_raises(raw: bytes) -> None:
    with _no_internal_errors():
        result = detect_bounce(_parse(raw))
    assert result is None or isinstance(result, Bounce)


@settings(max_examples=100, deadline=None)
@given(
    st.text(max_size=300),
    st.sampled_from(["Action: failed", "Action: delayed", "Status: 5.1.1", "Status: 9.9"]),
)
def test_never_raises_on_garbage_reports(garbage: str, field: str) -> None:
    raw = (
        "From: MAILER-DAEMON@mx.example.com\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        f"--b\r\nContent-Type: message/delivery-status\r\n\r\n{field}\r\n"
        f"Final-Recipient: {garbage}\r\n\r\n--b--\r\n"
    ).encode("utf-8", errors="surrogateescape")
    with _no_internal_errors():
        result = detect_bounce(_parse(raw))
    assert result is None or isinstance(result, Bounce)


def test_x_failed_recipients_and_in_reply_to_are_fallbacks() -> None:
    raw = (
        b"From: Mail Delivery System <Mailer-Daemon@mx.example.de>\r\n"
        b"X-Failed-Recipients: Kunde@Example.de\r\n"
        b"In-Reply-To: <20240601.1@acme-help.example>\r\n"
        b"Subject: Unzustellbar\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        b"Ihre Nachricht konnte nicht zugestellt werden.\r\n"
    )
    got = detect_bounce(_parse(raw))
    assert got is not None
    assert got.recipients == ("kunde@example.de",)
    assert got.original_message_id == "<20240601.1@acme-help.example>"
    assert got.family == "generic"


@pytest.mark.parametrize(
    "body",
    [
        "<" * 190_000,
        "a@" * 90_000,
        "<script" * 25_000,
        "Delivery to the following recipient failed permanently:\n\n" + "a@" * 90_000,
        "  a@b.example\n" * 12_000,
        "Message-ID: " + "<" * 190_000,
    ],
    ids=["angles", "at-signs", "script-tags", "gmail-at-signs", "address-lines", "message-id"],
)
@pytest.mark.parametrize("ctype", ["text/plain", "text/html"])
def test_hostile_bodies_stay_fast(body: str, ctype: str) -> None:
    # Regexes with ambiguous repetition went quadratic or worse on inputs like these.
    raw = (
        "From: MAILER-DAEMON@mx.example.com\r\nReturn-Path: <>\r\n"
        f"Content-Type: {ctype}\r\n\r\n{body}"
    ).encode()
    msg = _parse(raw)
    # This thread's CPU time, not the wall clock: a loaded machine must not fail it, and a
    # regex gone quadratic takes minutes of CPU, far above the limit.
    started = time.thread_time()
    detect_bounce(msg)
    assert time.thread_time() - started < 3.0


def test_a_bounce_returning_a_large_original_stays_fast() -> None:
    # flufl.bounce, our fallback, reads every text payload line by line: a notice none of our
    # layouts reads,
    # returning a 6 MB attachment, must not take it minutes.
    attachment = ("QUJD" * 19 + "\r\n") * 80_000
    raw = (
        "From: MAILER-DAEMON@mx.example.com\r\nReturn-Path: <>\r\nSubject: Returned mail\r\n"
        'Content-Type: multipart/mixed; boundary="B"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\n'
        "Something went wrong, see the attached message.\r\n\r\n"
        "--B\r\nContent-Type: message/rfc822\r\n\r\nFrom: us@example.com\r\nTo: ann@example.org\r\n"
        'Content-Type: multipart/mixed; boundary="C"\r\n\r\n--C\r\nContent-Type: text/plain\r\n\r\n'
        "Hello\r\n--C\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        f"{attachment}--C--\r\n--B--\r\n"
    ).encode()
    started = time.thread_time()  # CPU time, as above
    detect_bounce(_parse(raw))
    assert time.thread_time() - started < 3.0
