"""JSON shapes of the team's views (CONTRACT.md), shared by the CLI and the HTTP API."""

from __future__ import annotations

import datetime as dt
from typing import Any

from tickets import convert_hints
from tickets.models import Agent, Conversation, Event, Outbox, Participant, Ticket
from tickets.notifications import preferences


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def _customer(conversation: Conversation) -> dict[str, Any]:
    customer = conversation.customer
    addresses = [a.address for a in customer.addresses]
    return {
        "id": customer.id,
        "name": customer.name,
        "email": addresses[0] if addresses else None,
        "emails": addresses,
        "undeliverable": [a.address for a in customer.addresses if a.bounced_at is not None],
    }


def agent_json(agent: Agent) -> dict[str, Any]:
    return {
        "id": agent.id,
        "email": agent.email,
        "name": agent.name,
        "role": agent.role.value,
        "active": agent.active,
        "addresses": [{"address": a.address, "verified": a.verified} for a in agent.addresses],
        "notifications": preferences(agent).to_json(),
    }


def ticket_summary(ticket: Ticket | None) -> dict[str, Any] | None:
    if ticket is None:
        return None
    return {
        "number": ticket.number,
        "type": ticket.type.value,
        "status": ticket.status.value,
        "priority": ticket.priority.value,
        "category": ticket.category,
        "assignee": ticket.assignee.email if ticket.assignee else None,
        "snoozed_until": _iso(ticket.snoozed_until),
    }


def ticket_detail(ticket: Ticket | None) -> dict[str, Any] | None:
    summary = ticket_summary(ticket)
    if ticket is None or summary is None:
        return None
    summary.update(
        {
            "title": ticket.title,
            "summary": ticket.summary,
            "email_check": ticket.email_check,
            "tracker": ticket.tracker.conversation_id if ticket.tracker else None,
            "created_at": _iso(ticket.created_at),
            "resolved_at": _iso(ticket.resolved_at),
            "sla": [
                {
                    "kind": t.kind.value,
                    "policy": t.policy,
                    "state": t.state.value,
                    "due_at": _iso(t.due_at),
                    "warned": t.warned,
                }
                for t in ticket.timers
            ],
        }
    )
    return summary


def conversation_summary(conversation: Conversation) -> dict[str, Any]:
    return {
        "id": conversation.id,
        "customer": _customer(conversation),
        "state": conversation.state.value,
        "subject": conversation.subject,
        "started_via": conversation.started_via.value,
        "snoozed_until": _iso(conversation.snoozed_until),
        "tags": [t.name for t in conversation.tags],
        "created_at": _iso(conversation.created_at),
        "updated_at": _iso(conversation.updated_at),
        "ticket": ticket_summary(conversation.ticket),
        # Why the team's messages wait in the chat instead of going out by email, if they do.
        "delivery_warning": conversation.delivery_warning,
    }


def participant_json(participant: Participant) -> dict[str, Any]:
    return {
        "email": participant.address,
        "name": participant.name,
        "added_by": participant.added_by,
        # A permanent bounce: no longer copied until an agent adds them again.
        "undeliverable": participant.bounced_at is not None,
        "created_at": _iso(participant.created_at),
    }


def event_json(event: Event) -> dict[str, Any]:
    return {
        "kind": event.kind,
        "actor_type": event.actor_type,
        "actor_id": event.actor_id,
        "data": event.data,
        "created_at": _iso(event.created_at),
    }


def conversation_detail(
    conversation: Conversation, events: list[Event] | None = None
) -> dict[str, Any]:
    data = conversation_summary(conversation)
    data["messages"] = [
        {
            "id": m.id,
            "author_type": m.author_type.value,
            "author": m.agent.email if m.agent else None,
            "via": m.via.value,
            "text": m.text,
            "quoted_text": m.quoted_text,
            "signature": m.signature,
            "from": m.from_address,
            "is_auto_reply": m.is_auto_reply,
            "flags": m.flags,
            "delivery_state": m.delivery_state,
            "delivery_error": m.delivery_error,
            "attachments": [
                {"id": a.id, "filename": a.filename, "content_type": a.content_type, "size": a.size}
                for a in m.attachments
            ],
            "created_at": _iso(m.created_at),
        }
        for m in conversation.messages
    ]
    data["notes"] = [
        {
            "id": n.id,
            "author": n.agent.email if n.agent else None,
            "text": n.text,
            "created_at": _iso(n.created_at),
        }
        for n in conversation.notes
    ]
    data["participants"] = [participant_json(p) for p in conversation.participants]
    data["ticket"] = ticket_detail(conversation.ticket)
    # Why the team might convert it (a hint, never a rule); null once it is converted.
    data["convert_hints"] = convert_hints.for_conversation(conversation, events)
    if events is not None:
        data["events"] = [event_json(e) for e in events]
    return data


def outbox_json(row: Outbox) -> dict[str, Any]:
    return {
        "id": row.id,
        "kind": row.kind,
        "state": row.state.value,
        "conversation_id": row.conversation_id,
        "message_id": row.message_id_header,
        "recipients": list(row.recipients),
        "messages": list(row.message_ids),
        "attempts": row.attempts,
        "next_attempt_at": _iso(row.next_attempt_at),
        "last_error": row.last_error,
        "created_at": _iso(row.created_at),
        "sent_at": _iso(row.sent_at),
    }
