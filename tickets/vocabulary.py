"""The vocabulary guard: finds internal words in system-written, customer-facing text.

The customer never learns that a ticket layer exists. Every path that writes to a customer
(email templates, headers, subjects, widget system text) runs what the *system* wrote through
`find_internal_words` before it leaves; text a person wrote (the customer's own subject, an
agent's reply) is checked by the caller only around it, never inside it, since a customer may
well ask about a concert ticket.

The text is normalised first (Unicode compatibility forms, confusable letters, invisible
characters, separators inside words) so that "T\u200bicket", "ＴＩＣＫＥＴ" or "Тicket" with a
Cyrillic T are found as well.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

# Letters from other scripts that look like Latin ones, as used to dodge word filters.
_CONFUSABLES = str.maketrans(
    {
        "а": "a",
        "е": "e",
        "о": "o",
        "р": "p",
        "с": "c",
        "у": "y",
        "х": "x",
        "к": "k",
        "т": "t",
        "і": "i",
        "ј": "j",
        "ѕ": "s",
        "А": "a",
        "В": "b",
        "Е": "e",
        "К": "k",
        "М": "m",
        "Н": "h",
        "О": "o",
        "Р": "p",
        "С": "c",
        "Т": "t",
        "Х": "x",
        "І": "i",
        "Ј": "j",
        "Ѕ": "s",
        "ο": "o",
        "Ο": "o",
        "α": "a",
        "Α": "a",
        "Ε": "e",
        "Τ": "t",
        "Κ": "k",
        "ι": "i",
        "Ι": "i",
        "ν": "v",
        "ρ": "p",
        "τ": "t",
        "κ": "k",
        "|": "l",
        "ı": "i",
        "ł": "l",
    }
)
_INVISIBLE = re.compile(
    r"[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200f"
    r"\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0]"
)
# Digits that stand in for letters in "t1cket", "t!cket", "tick3t".
_LEETSPEAK = str.maketrans({"1": "i", "!": "i", "3": "e", "0": "o", "$": "s", "@": "a", "4": "a"})

# Internal words, matched on the normalised text with letters separated by at most one
# non-letter (so "t-i-c-k-e-t" and "t.i.c.k.e.t" count, "tick et" too).
_WORDS: dict[str, tuple[str, ...]] = {
    "ticket": (
        "ticket",
        "tickets",
        "ticketing",
        "tiket",
        "tickt",
        "tkt",
        "tix",
        "tiquet",
        "tiquete",
        "biglietto",
    ),
    "status": (
        "in_progress",
        "in progress",
        "waiting_on_customer",
        "waiting on customer",
        "ticket status",
        "status:",
    ),
    "priority": (
        "priority",
        "priorität",
        "prioritat",
        "priorité",
        "priorite",
        "prioridad",
        "low priority",
        "high priority",
        "urgent priority",
    ),
    "sla": (
        "sla",
        "slas",
        "service level",
        "service-level",
        "first response time",
        "next response time",
        "resolution time",
        "breach",
        "breached",
        "escalated",
    ),
    "note": ("internal note", "interne notiz", "note interne", "nota interna"),
    "assignee": ("assignee", "assigned to", "back office", "back_office", "tracker"),
}

# Ticket references: "#123", "No. 123", "[ID: 123]", "T-123", "case 123".
_ID_PATTERNS = (
    re.compile(r"#\s?\d+"),
    re.compile(r"\b(?:t|tkt|case|req|inc|id)\s?[-:#]\s?\d+\b"),
    re.compile(r"\[\s?(?:id|ref)\s?[:#]?\s?\d+\s?\]"),
    re.compile(r"\bcase\s+(?:no\.?|number)?\s*\d+\b"),
)


@dataclass(frozen=True)
class Finding:
    kind: str  # ticket, status, priority, sla, note, assignee, id
    match: str  # the normalised text that matched


def normalize(text: str) -> str:
    """Fold the ways a word can be disguised into plain lowercase Latin text."""
    text = _INVISIBLE.sub("", text)
    text = unicodedata.normalize("NFKC", text)
    # Strip accents that are not part of our word list (ticket with a combining mark).
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return text.translate(_CONFUSABLES).casefold()


def _word_regex(word: str) -> re.Pattern[str]:
    parts = []
    for ch in word:
        if ch == " ":
            parts.append(r"[\s_\-]+")
        elif ch.isalpha():
            parts.append(re.escape(ch) + r"[^\w\s]?")
        else:
            parts.append(re.escape(ch))
    # Word boundaries on the outside only: "tickets" and "e-ticket" are words, "sticky" is not.
    return re.compile(r"(?<![a-z])" + "".join(parts).removesuffix(r"[^\w\s]?") + r"(?![a-z])")


_WORD_PATTERNS = [
    (kind, _word_regex(normalize(word).translate(_LEETSPEAK)))
    for kind, words in _WORDS.items()
    for word in words
]
# One more pass with spaced-out letters collapsed: "t i c k e t".
_SPACED = re.compile(r"(?<![a-z])(?:[a-z][ .\-_]){3,}[a-z](?![a-z])")


def find_internal_words(text: str, *, ticket_refs: Iterable[str | int] = ()) -> list[Finding]:
    """Every internal word or reference in `text`; an empty list means it may go to a customer.

    `ticket_refs` are this deployment's own ticket numbers/ids to look for as plain numbers
    too, e.g. the number of the ticket behind the conversation being written about.
    """
    folded = normalize(text)
    candidates = [folded, folded.translate(_LEETSPEAK)]
    candidates.append(_SPACED.sub(lambda m: re.sub(r"[ .\-_]", "", m.group(0)), candidates[1]))
    findings: list[Finding] = []
    seen: set[tuple[str, str]] = set()

    def add(kind: str, match: str) -> None:
        if (kind, match) not in seen:
            seen.add((kind, match))
            findings.append(Finding(kind, match))

    for candidate in candidates:
        for kind, pattern in _WORD_PATTERNS:
            for m in pattern.finditer(candidate):
                add(kind, m.group(0))
    for pattern in _ID_PATTERNS:
        for m in pattern.finditer(folded):
            add("id", m.group(0))
    for ref in ticket_refs:
        for m in re.finditer(rf"(?<!\d){re.escape(str(ref))}(?!\d)", folded):
            add("id", m.group(0))
    return findings


class InternalWordsFound(Exception):
    """Raised by `check`: system-written customer text would reveal the ticket layer."""

    def __init__(self, where: str, findings: list[Finding]) -> None:
        self.where = where
        self.findings = findings
        words = ", ".join(sorted({f.match for f in findings}))
        super().__init__(f"internal vocabulary in {where}: {words}")


def check(where: str, text: str, *, ticket_refs: Iterable[str | int] = ()) -> None:
    findings = find_internal_words(text, ticket_refs=ticket_refs)
    if findings:
        raise InternalWordsFound(where, findings)
