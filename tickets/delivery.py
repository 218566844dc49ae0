"""Where a team message goes: the widget, and the customer's inbox if they do not read it there.

A public message by an agent (or the system) starts out `waiting` and sets the conversation's
`email_pending_since`. The customer reading the conversation in the widget settles it (`read`);
otherwise, once the grace period has passed and the customer is not in the widget, everything
still waiting goes out in one email (`queued`, then `sent`, `failed`, `held` or `bounced`). All
of that is rows and times in the database, so any sweep can pick it up after a restart.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from tickets.models import AuthorType, Conversation, Customer, Message, TicketType

WAITING = "waiting"
READ = "read"
QUEUED = "queued"


def await_customer(conversation: Conversation, message: Message, now: dt.datetime) -> None:
    """A new public team message: the customer has not seen it yet."""
    message.delivery_state = WAITING
    if conversation.email_pending_since is None:
        conversation.email_pending_since = now


def waiting_messages(session: Session, conversation: Conversation) -> list[Message]:
    return list(
        session.scalars(
            select(Message)
            .where(
                Message.conversation_id == conversation.id,
                Message.author_type != AuthorType.CUSTOMER,
                Message.delivery_state == WAITING,
            )
            .order_by(Message.id)
        )
    )


def mark_read(session: Session, conversation: Conversation, now: dt.datetime) -> int:
    """The customer saw the conversation in the widget: nothing of it is emailed any more."""
    conversation.customer_last_read_at = now
    count = 0
    for message in waiting_messages(session, conversation):
        if message.created_at <= now:
            message.delivery_state = READ
            count += 1
    if not waiting_messages(session, conversation):
        conversation.email_pending_since = None
    return count


def customer_seen(customer: Customer, now: dt.datetime) -> None:
    if customer.last_seen_at is None or customer.last_seen_at < now:
        customer.last_seen_at = now


def is_online(customer: Customer, now: dt.datetime, window: dt.timedelta) -> bool:
    return customer.last_seen_at is not None and now - customer.last_seen_at <= window


def email_allowed(conversation: Conversation) -> bool:
    """Back-office and tracker conversations are the team's: nothing of them is emailed."""
    ticket = conversation.ticket
    return ticket is None or ticket.type == TicketType.CUSTOMER


def due_conversations(session: Session, pending_before: dt.datetime, limit: int) -> Sequence[int]:
    return session.scalars(
        select(Conversation.id)
        .where(Conversation.email_pending_since <= pending_before)
        .order_by(Conversation.email_pending_since)
        .limit(limit)
    ).all()


def rearm(session: Session, customer: Customer, now: dt.datetime) -> None:
    """Messages that waited for an address (or a channel) get another chance now."""
    conversations = session.scalars(
        select(Conversation).where(Conversation.customer_id == customer.id)
    ).all()
    for conversation in conversations:
        if waiting_messages(session, conversation):
            conversation.email_pending_since = conversation.email_pending_since or now
            conversation.delivery_warning = None
