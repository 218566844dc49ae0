"""What a row of the Inbox or Tickets list shows beyond the conversation itself: a preview of
its latest message and the SLA clock that is due next.

Previews are read for a whole page in one query, so a list of fifty costs two queries, not
fifty-one. Notes never appear in a preview (they are not messages), and neither do a
customer's auto-replies.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tickets.models import Message, Ticket, TimerState

PREVIEW_CHARS = 140


def previews(session: Session, conversation_ids: Collection[int]) -> dict[int, str]:
    """The start of each conversation's latest message, on one line."""
    if not conversation_ids:
        return {}
    latest = (
        select(func.max(Message.id))
        .where(Message.conversation_id.in_(list(conversation_ids)), ~Message.is_auto_reply)
        .group_by(Message.conversation_id)
    )
    rows = session.execute(
        select(Message.conversation_id, func.substr(Message.text, 1, PREVIEW_CHARS * 2)).where(
            Message.id.in_(latest)
        )
    )
    return {conversation_id: _one_line(text) for conversation_id, text in rows}


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= PREVIEW_CHARS else flat[: PREVIEW_CHARS - 1].rstrip() + "…"


@dataclass(frozen=True)
class SlaDue:
    kind: str  # first_response, next_response, resolution
    due_at: dt.datetime | None  # None while paused
    state: str  # running, paused, breached


def next_due(ticket: Ticket | None) -> SlaDue | None:
    """The ticket's clock that needs attention first: a breached one, else the running one due
    soonest, else a paused one; None when every clock is met (or there are none)."""
    if ticket is None:
        return None
    live = [t for t in ticket.timers if t.state != TimerState.MET]
    breached = [t for t in live if t.state == TimerState.BREACHED]
    running = [t for t in live if t.state == TimerState.RUNNING and t.due_at is not None]
    paused = [t for t in live if t.state == TimerState.PAUSED]
    if breached:
        timer = min(breached, key=lambda t: t.due_at or dt.datetime.max.replace(tzinfo=dt.UTC))
    elif running:
        timer = min(running, key=lambda t: t.due_at or dt.datetime.max.replace(tzinfo=dt.UTC))
    elif paused:
        timer = paused[0]
    else:
        return None
    return SlaDue(timer.kind.value, timer.due_at, timer.state.value)
