"""Scores of reading a forwarded message (who wrote it, its subject, its text, the forwarder's
note above it) on the public forward samples with structured answers: quotequail's `unwrap`
tests (`tests/corpora/quotequail/unwrap_forwards.json`, its own answers as the truth).

A case is right when the original sender's address, the subject, the forwarded text and the
text above the forward all equal the upstream's. Beside ours, quotequail's `unwrap` (the only
library that installs here and reads these fields: `test` extra) on the same texts; they are its
own tests, so its 100 % there says little: ours is the figure to watch.
"""

from __future__ import annotations

import json
from typing import Any

from channels.email.forwarded import parse_forwarded, read_address
from tests.understanding.score import CORPORA, Score, tally

try:
    import quotequail
except ImportError:  # the test extra is not installed: the table shows ours alone
    quotequail = None

TARGET = 0.95
LIBRARY = "quotequail 0.5"

Case = tuple[str, dict[str, Any]]  # the text, the upstream's answer


def _fields(sender: str, subject: str, text: str, note: str) -> tuple[str, str, str, str]:
    return read_address(sender)[1], " ".join(subject.split()), text.strip(), note.strip()


def _expected(answer: dict[str, Any]) -> tuple[str, str, str, str]:
    return _fields(
        answer.get("from", ""),
        answer.get("subject", ""),
        answer["text"],
        answer.get("text_top", ""),
    )


def ours(case: Case) -> bool:
    text, answer = case
    found = parse_forwarded(text)
    if found is None:
        return False
    return (found.from_address, found.subject, found.text, found.note) == _expected(answer)


def theirs(case: Case) -> bool:
    assert quotequail is not None
    text, answer = case
    got = quotequail.unwrap(text) or {}
    if got.get("type") != "forward":
        return False
    return _fields(
        got.get("from", ""), got.get("subject", ""), got.get("text", ""), got.get("text_top", "")
    ) == _expected(answer)


def scores() -> list[Score]:
    source = CORPORA / "quotequail"
    answers = json.loads((source / "unwrap_forwards.json").read_text())
    cases = [
        (name, ((source / "cases" / f"{name}.txt").read_text(), answer))
        for name, answer in sorted(answers.items())
    ]
    score = Score("forwards", "quotequail", TARGET, library=LIBRARY)
    return [tally(score, cases, ours, theirs if quotequail is not None else None)]
