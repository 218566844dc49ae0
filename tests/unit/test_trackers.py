"""Telling every customer linked to a tracker (tickets/trackers.py), on SQLite and PostgreSQL:
each gets the message in their own conversation and language, the unreachable are reported,
a repeated request posts once, and the work is a fixed number of statements."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from tickets import services, trackers
from tickets.errors import InvalidValue
from tickets.models import (
    Agent,
    App,
    AuthorType,
    Channel,
    ChannelAddress,
    Conversation,
    Event,
    Message,
    Ticket,
)

NEWS = "Good news: the fix for the login problem is live. Please try again and tell us."
NEWS_DE = "Gute Nachricht: Das Anmeldeproblem ist behoben. Bitte versuchen Sie es noch einmal."


@pytest.fixture
def agent(session: Session, app: App, now: dt.datetime) -> Agent:
    return services.add_agent(session, app, "ana@acme.test", "Ana", now)


@pytest.fixture
def channel(session: Session, app: App, now: dt.datetime) -> Channel:
    channel = Channel(app_id=app.id, name="support", created_at=now)
    channel.addresses.append(ChannelAddress(address="support@acme.test"))
    session.add(channel)
    session.flush()
    return channel


@pytest.fixture
def tracker(session: Session, app: App, agent: Agent, now: dt.datetime) -> Ticket:
    reporter = services.customer_by_address(session, app, "first@example.com", now)
    conversation, _ = services.start_conversation(
        session, app, reporter, "email", "I cannot log in since this morning", now
    )
    return services.convert(session, conversation, agent, now, type="tracker")


def link(
    session: Session,
    app: App,
    agent: Agent,
    tracker: Ticket,
    now: dt.datetime,
    text: str,
    *,
    email: str | None = None,
    name: str | None = None,
    widget: bool = False,
) -> Conversation:
    customer = services.create_customer(session, app, now, name=name, email=email)
    if widget:
        customer.visitor_token_hash = f"{customer.id:064x}"
    via = "chat" if widget else "email"
    conversation, _ = services.start_conversation(session, app, customer, via, text, now)
    ticket = services.convert(session, conversation, agent, now)
    services.link_to_tracker(session, ticket, tracker, services.Actor.agent(agent), now)
    return conversation


@pytest.fixture
def four(session, app, agent, tracker, channel, now) -> dict[str, Conversation]:
    """Dana by email, Jonas by email writing German, Lee in the chat only, Zed bounced."""
    out = {
        "dana": link(
            session, app, agent, tracker, now, "I can't log in, it says my password is wrong.",
            email="dana@example.com", name="Dana",
        ),
        "jonas": link(
            session, app, agent, tracker, now,
            "Hallo, ich kann mich nicht anmelden und das Passwort ist richtig. Was ist los?",
            email="jonas@example.de", name="Jonas",
        ),
        "lee": link(
            session, app, agent, tracker, now, "login broken?", name="Lee", widget=True
        ),
        "zed": link(
            session, app, agent, tracker, now, "Login fails for me too.", email="zed@example.net"
        ),
    }  # fmt: skip
    zed = out["zed"].customer.addresses[0]
    zed.bounced_at, zed.bounce_reason = now, "550 no such user"
    session.flush()
    return out


def agent_texts(session: Session, conversation: Conversation) -> list[str]:
    return list(
        session.scalars(
            select(Message.text)
            .where(
                Message.conversation_id == conversation.id,
                Message.author_type == AuthorType.AGENT,
            )
            .order_by(Message.id)
        )
    )


def test_each_linked_customer_is_told_in_their_own_conversation(
    session, app, agent, tracker, four, now
):
    later = now + dt.timedelta(hours=3)
    told = trackers.tell_linked(session, tracker, agent, NEWS, later, versions={"de": NEWS_DE})
    assert [(x.conversation_id, x.route) for x in told.told] == [
        (four["dana"].id, "email"),
        (four["jonas"].id, "email"),
        (four["lee"].id, "widget"),
    ]
    assert agent_texts(session, four["dana"]) == [NEWS]
    assert agent_texts(session, four["jonas"]) == [NEWS_DE]  # guessed from his German
    assert agent_texts(session, four["lee"]) == [NEWS]
    session.expire_all()
    for name in ("dana", "jonas", "lee"):
        conversation = session.get(Conversation, four[name].id)
        assert conversation.email_pending_since == later  # goes on as every reply does
        assert conversation.messages[-1].delivery_state == "waiting"
        assert conversation.messages[-1].agent_id == agent.id
    # The tracker's own conversation got nothing public: it is the team's.
    assert agent_texts(session, tracker.conversation) == []


def test_a_customer_whose_address_bounced_is_reported_not_told(
    session, app, agent, tracker, four, now
):
    told = trackers.tell_linked(session, tracker, agent, NEWS, now)
    [zed] = told.not_told
    assert zed.conversation_id == four["zed"].id
    assert zed.why_not == "their email address bounced"
    assert agent_texts(session, four["zed"]) == []
    assert told.to_json()["not_told"] == [
        {
            "conversation": four["zed"].id,
            "customer": "<zed@example.net>",
            "reason": "their email address bounced",
        }
    ]


def test_who_was_told_is_recorded_per_conversation_and_on_the_tracker(
    session, app, agent, tracker, four, now
):
    trackers.tell_linked(session, tracker, agent, NEWS, now, key="k1")
    told_events = session.scalars(select(Event).where(Event.kind == "tracker.told")).all()
    assert {e.conversation_id: e.data["route"] for e in told_events} == {
        four["dana"].id: "email",
        four["jonas"].id: "email",
        four["lee"].id: "widget",
    }
    assert all(e.data["tracker"] == tracker.conversation_id for e in told_events)
    [broadcast] = session.scalars(select(Event).where(Event.kind == "tracker.broadcast")).all()
    assert broadcast.ticket_id == tracker.id
    assert broadcast.data["told"] == {
        "email": [four["dana"].id, four["jonas"].id],
        "widget": [four["lee"].id],
    }
    [note] = tracker.conversation.notes
    assert note.text.startswith("Told 3 linked customers.")
    assert "Dana <dana@example.com>" in note.text
    assert f"Not told: <zed@example.net> (#{four['zed'].id}, their email address bounced)" in (
        note.text
    )


def test_the_same_request_twice_posts_once_but_asking_twice_posts_twice(
    session, app, agent, tracker, four, now
):
    first = trackers.tell_linked(session, tracker, agent, NEWS, now, key="form-1")
    again = trackers.tell_linked(
        session, tracker, agent, NEWS, now + dt.timedelta(seconds=2), key="form-1"
    )
    assert again.repeated and not first.repeated
    assert [x.conversation_id for x in again.told] == [x.conversation_id for x in first.told]
    assert [x.why_not for x in again.not_told] == ["their email address bounced"]
    assert agent_texts(session, four["dana"]) == [NEWS]
    assert len(tracker.conversation.notes) == 1
    trackers.tell_linked(
        session, tracker, agent, "One more thing.", now + dt.timedelta(minutes=1), key="form-2"
    )
    trackers.tell_linked(session, tracker, agent, "And another.", now + dt.timedelta(minutes=2))
    assert agent_texts(session, four["dana"]) == [NEWS, "One more thing.", "And another."]


def test_only_a_tracker_can_tell_and_it_needs_text(session, app, agent, tracker, four, now):
    customer_ticket = four["dana"].ticket
    with pytest.raises(InvalidValue, match="is not a tracker"):
        trackers.tell_linked(session, customer_ticket, agent, NEWS, now)
    with pytest.raises(InvalidValue, match="needs text"):
        trackers.tell_linked(session, tracker, agent, "  \n ", now)


def test_a_tracker_with_nobody_linked_tells_nobody(session, app, agent, tracker, channel, now):
    told = trackers.tell_linked(session, tracker, agent, NEWS, now)
    assert told.told == [] and told.not_told == []
    assert tracker.conversation.notes[0].text == "Told 0 linked customers."


def test_the_preview_counts_the_routes(session, app, agent, tracker, four, now):
    preview = trackers.preview(trackers.linked(session, tracker))
    assert (preview.email, preview.widget, preview.unreachable, preview.total) == (2, 1, 1, 4)


def test_without_an_email_channel_email_customers_are_not_told(session, app, agent, tracker, now):
    conversation = link(session, app, agent, tracker, now, "hi", email="solo@example.com")
    told = trackers.tell_linked(session, tracker, agent, NEWS, now)
    assert [(x.conversation_id, x.why_not) for x in told.not_told] == [
        (conversation.id, "no email channel is connected")
    ]


@contextmanager
def counting(session: Session) -> Iterator[list[str]]:
    statements: list[str] = []
    connection = session.connection()

    def count(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    event.listen(connection, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(connection, "before_cursor_execute", count)


def test_the_number_of_statements_does_not_grow_with_the_customers(
    session, app, agent, tracker, channel, now
):
    statements_seen: list[str] = []

    def tell(n: int, start: int) -> int:
        for i in range(start, start + n):
            text = "Ich kann mich nicht anmelden, bitte helfen Sie"
            link(session, app, agent, tracker, now, text, email=f"c{i}@example.com")
        session.flush()
        session.expire_all()
        with counting(session) as statements:
            trackers.tell_linked(
                session, session.get(Ticket, tracker.id), agent, NEWS, now, versions={"de": "x"}
            )
        statements_seen[:] = statements
        return len(statements)

    few = tell(3, 0)
    many = tell(40, 100)
    assert many == few, "\n".join(s[:100] for s in statements_seen)
