"""Auto-reply detection against the fixture corpus in tests/fixtures/autoreplies.

Each ``<case>.eml`` has a ``<case>.json`` sidecar: ``{"auto": bool}``, optionally the expected
``reason`` and the SMTP ``envelope_from`` to pass along.
"""

from __future__ import annotations

import email
import email.policy
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import Message
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from channels.email.autoreply import auto_reply_reason

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "autoreplies"
CASES = sorted(FIXTURES.glob("*.eml"))


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
    logger = logging.getLogger("channels.email.autoreply")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
    assert not handler.records, handler.records[0].exc_info


def _parse(raw: bytes) -> Message:
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def _case_id(path: Path) -> str:
    return f"autoreplies/{path.stem}"


@pytest.mark.parametrize("path", CASES, ids=_case_id)
def test_fixture(path: Path) -> None:
    expected = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    reason = auto_reply_reason(_parse(path.read_bytes()), expected.get("envelope_from"))

    if not expected["auto"]:
        assert reason is None
        return
    assert reason is not None
    if "reason" in expected:
        assert reason == expected["reason"]


def test_every_language_is_covered() -> None:
    languages = {p.stem.split("_")[1] for p in CASES if p.stem.startswith("oof_")}
    assert {"en", "de", "fr", "es", "it", "nl", "pt", "pl", "sv", "da", "no", "ru"} <= languages


def _msg(headers: str) -> Message:
    return _parse(f"From: a@example.com\r\n{headers}\r\n\r\nbody\r\n".encode())


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ("Auto-Submitted: AUTO-REPLIED (vacation)", "Auto-Submitted: auto-replied (vacation)"),
        ("Auto-Submitted: No", None),
        ("Precedence: first-class", None),
        ("Precedence: BULK", "Precedence: bulk"),
        ("X-Auto-Response-Suppress: DR,OOF", "X-Auto-Response-Suppress"),
        ("Return-Path: < >", None),
    ],
)
def test_header_values(headers: str, expected: str | None) -> None:
    assert auto_reply_reason(_msg(headers)) == expected


def test_envelope_none_means_unknown_not_empty() -> None:
    assert auto_reply_reason(_msg("Subject: hi"), None) is None
    assert auto_reply_reason(_msg("Subject: hi"), "") == "empty return path"
    assert auto_reply_reason(_msg("Subject: hi"), "<>") == "empty return path"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_never_raises_on_random_bytes(raw: bytes) -> None:
    with _no_internal_errors():
        result = auto_reply_reason(_parse(raw), None)
    assert result is None or isinstance(result, str)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([p.read_bytes() for p in CASES]),
    st.integers(min_value=0, max_value=400),
    st.binary(min_size=1, max_size=30),
    st.one_of(st.none(), st.text(max_size=40)),
)
def test_never_raises_on_mutated_fixtures(
    raw: bytes, pos: int, junk: bytes, envelope: str | None
) -> None:
    mutated = raw[:pos] + junk + raw[pos:]
    with _no_internal_errors():
        result = auto_reply_reason(_parse(mutated), envelope)
    assert result is None or isinstance(result, str)
