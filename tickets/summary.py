"""Title and summary of a ticket: the `Summarizer` port and its offline, extractive default.

A summary is for the team only (it lives on the ticket, never in `CustomerView`). It is built
from the customer's own messages (auto-replies left out), so it says what the customer asked in
their words. The offline default needs no model: it keeps the sentences that share the most
words with the rest of what the customer wrote. An LLM provider (gateway/summarizer.py) plugs in
behind the same port and falls back to this one.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import update
from sqlalchemy.orm import Session

from tickets.due import due_ids
from tickets.models import AuthorType, Ticket

TITLE_CHARS = 80
SUMMARY_CHARS = 400
MAX_SENTENCES = 3

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_FACT = re.compile(r"\b\w*\d[\w/.-]*")
_WORD = re.compile(r"[^\W\d_]{3,}", re.UNICODE)
# Words that say nothing about the problem; common English only, it is a ranking heuristic.
_FILLER = frozenset(
    {
        "the",
        "and",
        "for",
        "you",
        "your",
        "are",
        "was",
        "were",
        "this",
        "that",
        "with",
        "have",
        "has",
        "had",
        "but",
        "not",
        "can",
        "could",
        "would",
        "will",
        "please",
        "thanks",
        "thank",
        "hello",
        "dear",
        "regards",
        "best",
        "there",
        "their",
        "they",
        "them",
        "from",
        "what",
        "when",
        "which",
        "who",
        "how",
        "why",
        "just",
        "also",
        "any",
        "all",
        "our",
        "out",
        "about",
        "into",
        "been",
        "being",
        "get",
        "got",
        "its",
        "it's",
        "hi",
        "hey",
        "yes",
        "no",
        "ok",
        "okay",
    }
)


@dataclass(frozen=True)
class SummaryInput:
    subject: str
    customer_texts: tuple[str, ...]
    locale: str = "en"


@dataclass(frozen=True)
class Summary:
    title: str
    summary: str
    source: str  # which summarizer wrote it: "offline" or the provider's name


class Summarizer(Protocol):
    def summarize(self, item: SummaryInput) -> Summary: ...


def _clip(text: str, limit: int) -> str:
    line = " ".join(text.split())
    if len(line) <= limit:
        return line
    return line[:limit].rsplit(" ", 1)[0].rstrip(",;:") + "…"


def _sentences(texts: tuple[str, ...]) -> list[str]:
    out = []
    for text in texts:
        out += [s.strip() for s in _SENTENCE_END.split(text) if len(s.strip()) > 2]
    # Greetings and thanks ("Hi there!", "Thanks.") say nothing about the problem.
    content = [s for s in out if _words(s)]
    return content or out


def _words(text: str) -> list[str]:
    return [w for w in (m.lower() for m in _WORD.findall(text)) if w not in _FILLER]


class ExtractiveSummarizer:
    """Offline: the title is the customer's subject (or first sentence); the summary their most
    telling sentences, in the order they wrote them."""

    def summarize(self, item: SummaryInput) -> Summary:
        sentences = _sentences(item.customer_texts)
        # The subject the customer wrote. A chat has none: its subject is the start of the
        # first line, greeting and all, and the first sentence about the problem reads better.
        subject = item.subject.strip()
        first_line = " ".join(item.customer_texts[0].split()) if item.customer_texts else ""
        from_chat = first_line.startswith(subject.removesuffix("…").strip())
        if sentences and (not subject or from_chat):
            subject = sentences[0]
        title = _clip(subject, TITLE_CHARS)
        if not sentences:
            return Summary(title=title, summary="", source="offline")
        freq = Counter(w for s in sentences for w in set(_words(s)))

        def score(i: int) -> tuple[float, int]:
            words = set(_words(sentences[i]))
            # Facts with digits (order numbers, dates, amounts) are what the team looks up.
            facts = len(_FACT.findall(sentences[i]))
            return (-(sum(freq[w] for w in words) / (1 + len(words) ** 0.5) + 2 * facts), i)

        # The first sentence usually states the problem; keep it, then the best-scored others.
        chosen = {0}
        for i in sorted(range(len(sentences)), key=score):
            if len(chosen) >= MAX_SENTENCES:
                break
            chosen.add(i)
        return Summary(
            title=title,
            summary=_clip(" ".join(sentences[i] for i in sorted(chosen)), SUMMARY_CHARS),
            source="offline",
        )


def summary_input(ticket: Ticket) -> SummaryInput:
    conversation = ticket.conversation
    texts = tuple(
        m.text
        for m in conversation.messages
        if m.author_type == AuthorType.CUSTOMER and not m.is_auto_reply and m.text.strip()
    )
    return SummaryInput(
        subject=conversation.subject,
        customer_texts=texts,
        locale=conversation.customer.locale or "en",
    )


def due_ticket_ids(session: Session, before: dt.datetime, limit: int) -> list[int]:
    return due_ids(session, Ticket.id, Ticket.summary_due_at, before, limit)


def store(session: Session, ticket_id: int, summary: Summary, *, due_seen: dt.datetime) -> bool:
    """Store a summary computed from the ticket as it was when `due_seen` was its due time.

    A message that arrived meanwhile moved the due time on; then the summary is stored but the
    ticket stays due, so the newer message is summarized too. False if nothing was due.
    """
    ticket = session.get(Ticket, ticket_id, populate_existing=True)
    if ticket is None or ticket.summary_due_at is None:
        return False
    ticket.title = summary.title[:300] or ticket.title
    ticket.summary = summary.summary
    session.execute(
        update(Ticket)
        .where(Ticket.id == ticket_id, Ticket.summary_due_at == due_seen)
        .values(summary_due_at=None)
        .execution_options(synchronize_session=False)
    )
    return True
