"""Scores of the autoreplies task on each public corpus (issue 14).

A source of this task is a folder `tests/corpora/<source>/cases/` whose `<case>.json` sidecars
carry the upstream's verdict as `"auto": true|false` (and the SMTP `"envelope_from"` when the
upstream test gave one) beside `<case>.eml`. Right means: flagged when the upstream says the
mail is automatic, not flagged when it says a person wrote it.

One more row, "human mail", holds every message a person wrote that the corpora hold: the
upstream's own "not automatic" cases above, and the bodies of the quote-stripping corpora
(any `cases/<case>.txt|.html` whose sidecar has the `"reply"` a person typed), each sent as
a customer's reply. None of them may be flagged.

No Python library we could install detects auto-replies on whole messages (django-helpdesk's
header-only `is_autoreply` cannot be imported outside a configured Django project), so the
library column stays empty.
"""

from __future__ import annotations

import email
import email.policy
import json
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any

from channels.email.autoreply import auto_reply_reason
from tests.understanding.score import CORPORA, Score, tally

TASK = "autoreplies"
TARGET = 0.95
HUMAN_SOURCE = "human mail"


class Case:
    """One message and the upstream's verdict on it."""

    def __init__(self, raw: bytes, auto: bool, envelope_from: str | None = None) -> None:
        self.raw = raw
        self.auto = auto
        self.envelope_from = envelope_from

    def message(self) -> Message:
        return email.message_from_bytes(self.raw, policy=email.policy.compat32)


def _sidecar(path: Path) -> dict[str, Any]:
    data = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def _sources() -> list[Path]:
    return sorted(
        folder
        for folder in CORPORA.glob("*")
        if any("auto" in _sidecar(p) for p in folder.glob("cases/*.eml"))
    )


def source_cases(folder: Path) -> Iterator[tuple[str, Case]]:
    for path in sorted(folder.glob("cases/*.eml")):
        meta = _sidecar(path)
        if "auto" in meta:
            case = Case(path.read_bytes(), bool(meta["auto"]), meta.get("envelope_from"))
            yield f"{folder.name}/{path.stem}", case


def _as_customer_reply(body: str, html: bool) -> bytes:
    """A person's text as the customer's reply to one of our emails would carry it."""
    kind = "html" if html else "plain"
    head = (
        "From: Robin Customer <robin@customer.example>\r\n"
        "To: support@shop.example\r\n"
        "Subject: Re: Your order 1042\r\n"
        "In-Reply-To: <reply-1@shop.example>\r\n"
        "Message-ID: <human-1@customer.example>\r\n"
        "MIME-Version: 1.0\r\n"
        f"Content-Type: text/{kind}; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
    )
    return head.encode() + body.replace("\r\n", "\n").replace("\n", "\r\n").encode()


def human_cases() -> Iterator[tuple[str, Case]]:
    for folder in _sources():
        for name, case in source_cases(folder):
            if not case.auto:
                yield name, case
    for path in sorted(CORPORA.glob("*/cases/*")):
        if path.suffix not in (".txt", ".html") or not path.with_suffix(".json").exists():
            continue
        if "reply" not in _sidecar(path):
            continue
        body = path.read_text(encoding="utf-8", errors="replace")
        raw = _as_customer_reply(body, path.suffix == ".html")
        yield f"{path.parent.parent.name}/{path.name}", Case(raw, False)


def ours(case: Case) -> bool:
    flagged = auto_reply_reason(case.message(), case.envelope_from) is not None
    return flagged == case.auto


def scores() -> list[Score]:
    rows = [
        tally(Score(TASK, folder.name, TARGET), source_cases(folder), ours) for folder in _sources()
    ]
    rows.append(tally(Score(TASK, HUMAN_SOURCE, 1.0), human_cases(), ours))
    return rows
