"""Read markers and list rows (tickets/reads.py, tickets/listing.py) on SQLite and PostgreSQL:
the marker upsert never moves back, unread follows the customer's messages, the counts take
open conversations of one app, previews skip auto-replies."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from tickets import listing, reads, services
from tickets.models import App, ConversationRead


def test_unread_follows_customer_messages_and_markers(
    session: Session, app: App, now: dt.datetime
) -> None:
    ana = services.add_agent(session, app, "ana@acme.example", "Ana", now)
    ben = services.add_agent(session, app, "ben@acme.example", "Ben", now)
    kim = services.customer_by_address(session, app, "kim@example.com", now)
    first, _ = services.start_conversation(session, app, kim, "email", "Hello", now)
    second, _ = services.start_conversation(session, app, kim, "chat", "Hi again", now)
    other = services.ensure_app(session, "other", "Other", now)
    zed = services.customer_by_address(session, other, "zed@example.net", now)
    services.start_conversation(session, other, zed, "chat", "Not yours", now)
    ids = [first.id, second.id]

    assert reads.unread_ids(session, ana.id, ids) == set(ids)
    assert reads.unread_counts(session, app.id, ana.id) == reads.UnreadCounts(2, 0)

    later = now + dt.timedelta(minutes=5)
    reads.mark_read(session, ana.id, first.id, later)
    reads.mark_read(session, ana.id, first.id, now)  # an older view does not move it back
    reads.mark_read(session, ana.id, first.id, later)  # the same twice is no conflict
    session.expire_all()
    assert session.get(ConversationRead, (ana.id, first.id)).read_at == later  # type: ignore[union-attr]
    assert reads.unread_ids(session, ana.id, ids) == {second.id}
    assert reads.unread_ids(session, ben.id, ids) == set(ids)

    services.add_customer_message(
        session, first, "Auto: away", "email", later + dt.timedelta(minutes=1), is_auto_reply=True
    )
    assert reads.unread_ids(session, ana.id, ids) == {second.id}
    services.add_customer_message(
        session, first, "Any news?", "email", later + dt.timedelta(minutes=2)
    )
    services.convert(session, first, ana, later)
    assert reads.unread_counts(session, app.id, ana.id) == reads.UnreadCounts(2, 1)

    services.resolve(session, second, services.Actor.agent(ana), later)
    assert reads.unread_counts(session, app.id, ana.id) == reads.UnreadCounts(1, 1)
    assert listing.previews(session, ids) == {first.id: "Any news?", second.id: "Hi again"}


def test_next_due_is_the_clock_to_watch(session: Session, app: App, now: dt.datetime) -> None:
    ana = services.add_agent(session, app, "ana@acme.example", "Ana", now)
    kim = services.customer_by_address(session, app, "kim@example.com", now)
    conv, _ = services.start_conversation(session, app, kim, "email", "Hello", now)
    assert listing.next_due(conv.ticket) is None
    ticket = services.convert(session, conv, ana, now)
    due = listing.next_due(ticket)
    if ticket.timers:  # the app's policy starts clocks
        assert due is not None and due.state == "running" and due.due_at is not None
    else:
        assert due is None
