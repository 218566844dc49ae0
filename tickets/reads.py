"""Read markers: when each agent last opened each conversation, and so which conversations
hold customer messages that agent has not seen (the unread badges and counts of the console).

A conversation is unread for an agent when its customer wrote after the agent last opened it
(`Conversation.last_customer_message_at`, which auto-replies do not move), or when the agent
never opened it and the customer wrote at all. The tab counts take open conversations only: a
history import or years of closed threads would otherwise leave thousands "unread" that no one
needs to look at.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import and_, func, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from tickets.models import Conversation, ConversationRead, ConversationState, Ticket


def mark_read(session: Session, agent_id: int, conversation_id: int, now: dt.datetime) -> None:
    """The agent has seen the conversation as of `now` (the conversation page calls this when
    it is shown). The caller has already checked the conversation is of the agent's app.

    An upsert, so two tabs opening the same conversation at once do not collide; a marker never
    moves back in time.
    """
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = insert(ConversationRead).values(
        agent_id=agent_id, conversation_id=conversation_id, read_at=now
    )
    excluded = statement.excluded.read_at
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["agent_id", "conversation_id"],
            set_={"read_at": excluded},
            where=ConversationRead.read_at < excluded,
        )
    )


def _unread(agent_id: int) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    """The join of the agent's markers onto conversations, and the unread condition."""
    joined = and_(
        ConversationRead.conversation_id == Conversation.id,
        ConversationRead.agent_id == agent_id,
    )
    unread = and_(
        Conversation.last_customer_message_at.is_not(None),
        or_(
            ConversationRead.read_at.is_(None),
            Conversation.last_customer_message_at > ConversationRead.read_at,
        ),
    )
    return joined, unread


def unread_ids(session: Session, agent_id: int, conversation_ids: Collection[int]) -> set[int]:
    """Which of these conversations hold customer messages the agent has not seen."""
    if not conversation_ids:
        return set()
    joined, unread = _unread(agent_id)
    rows = session.scalars(
        select(Conversation.id)
        .outerjoin(ConversationRead, joined)
        .where(Conversation.id.in_(list(conversation_ids)), unread)
    )
    return set(rows)


@dataclass(frozen=True)
class UnreadCounts:
    inbox: int
    tickets: int


def unread_counts(session: Session, app_id: int, agent_id: int) -> UnreadCounts:
    """The agent's unread open conversations: all of them (Inbox) and the converted (Tickets)."""
    joined, unread = _unread(agent_id)
    inbox, tickets = session.execute(
        select(func.count(Conversation.id), func.count(Ticket.id))
        .select_from(Conversation)
        .outerjoin(ConversationRead, joined)
        .outerjoin(Ticket, Ticket.conversation_id == Conversation.id)
        .where(
            Conversation.app_id == app_id,
            Conversation.state == ConversationState.OPEN,
            unread,
        )
    ).one()
    return UnreadCounts(int(inbox), int(tickets))
