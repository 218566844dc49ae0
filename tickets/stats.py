"""Counts for `gateway status` and `/metrics`: what came in, what went out, what is open or due."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from tickets.models import (
    Conversation,
    ConversationState,
    InboundMail,
    InboundState,
    Outbox,
    OutboxState,
    SlaTimer,
    Ticket,
    TicketStatus,
    TimerState,
)


def _count_by(session: Session, column: Any) -> dict[str, int]:
    rows = session.execute(select(column, func.count()).group_by(column)).all()
    return {str(value): count for value, count in rows}


def status_counts(session: Session, now: dt.datetime) -> dict[str, Any]:
    inbound = _count_by(session, InboundMail.state)
    outbox = _count_by(session, Outbox.state)
    conversations_open = session.scalar(
        select(func.count()).where(
            Conversation.state.in_([ConversationState.OPEN, ConversationState.SNOOZED])
        )
    )
    tickets_open = session.scalar(
        select(func.count()).where(Ticket.status != TicketStatus.RESOLVED)
    )
    timers_due = session.scalar(
        select(func.count()).where(
            SlaTimer.state == TimerState.RUNNING,
            or_(
                SlaTimer.due_at <= now,
                (SlaTimer.warn_due_at <= now) & SlaTimer.warned.is_(False),
            ),
        )
    )
    pending = inbound.get(InboundState.PENDING.value, 0)
    processed = inbound.get(InboundState.PROCESSED.value, 0)
    quarantined = inbound.get(InboundState.QUARANTINED.value, 0)
    discarded = inbound.get(InboundState.DISCARDED.value, 0)
    return {
        "inbound": {
            "accepted": pending + processed + quarantined + discarded,
            "processed": processed,
            "quarantined": quarantined,
            "pending": pending,
            "discarded": discarded,
        },
        "outbox": {
            "pending": outbox.get(OutboxState.PENDING.value, 0)
            + outbox.get(OutboxState.SENDING.value, 0),
            "sent": outbox.get(OutboxState.SENT.value, 0),
            "failed": outbox.get(OutboxState.FAILED.value, 0),
            "held": outbox.get(OutboxState.HELD.value, 0),
        },
        "conversations_open": conversations_open or 0,
        "tickets_open": tickets_open or 0,
        "timers_due": timers_due or 0,
    }
