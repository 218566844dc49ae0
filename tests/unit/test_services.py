"""The domain rules of conversations and the ticket layer, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy.orm import Session

from tickets import services
from tickets.customer_view import customer_view
from tickets.errors import InvalidValue, NotAllowed, NotFound
from tickets.models import (
    Agent,
    App,
    Conversation,
    ConversationState,
    Priority,
    TicketStatus,
    TicketType,
)

H = dt.timedelta(hours=1)


@pytest.fixture
def agent(session: Session, app: App, now: dt.datetime) -> Agent:
    return services.add_agent(session, app, "ana@acme.test", "Ana", now, role="admin")


@pytest.fixture
def other_agent(session: Session, app: App, now: dt.datetime) -> Agent:
    return services.add_agent(session, app, "bo@acme.test", "Bo", now)


@pytest.fixture
def conversation(session: Session, app: App, now: dt.datetime) -> Conversation:
    customer = services.customer_by_address(session, app, "Chris@Example.com", now, name="Chris")
    conversation, _ = services.start_conversation(
        session, app, customer, "chat", "My parcel never arrived, can you check?", now
    )
    return conversation


def kinds(session: Session) -> list[str]:
    return [e.kind for e in services.take_events(session)]


def test_start_conversation_via_chat_takes_subject_from_first_line(session, app, now):
    customer = services.create_customer(session, app, now, name="Dee")
    text = "Hello there, " + "I need help with my invoice " * 10
    conversation, message = services.start_conversation(session, app, customer, "chat", text, now)
    assert conversation.state == ConversationState.OPEN
    assert conversation.subject.startswith("Hello there, I need help")
    assert len(conversation.subject) <= services.SUBJECT_FROM_CHAT_CHARS + 1
    assert message.author_type.value == "customer"
    assert kinds(session) == ["conversation.started", "message.customer"]


def test_start_conversation_via_email_keeps_the_customers_subject(session, app, now):
    customer = services.customer_by_address(session, app, "x@example.com", now)
    conversation, _ = services.start_conversation(
        session, app, customer, "email", "body", now, subject="  Refund for order 12  "
    )
    assert conversation.subject == "Refund for order 12"
    assert conversation.started_via.value == "email"


def test_customer_addresses_are_normalised_and_owned_by_one_customer(session, app, now):
    chris = services.customer_by_address(session, app, "Chris@Example.com", now)
    assert services.customer_by_address(session, app, "chris@example.com", now) is chris
    other = services.create_customer(session, app, now, name="Other")
    with pytest.raises(NotAllowed):
        services.add_customer_address(session, other, "CHRIS@example.com", now)
    with pytest.raises(InvalidValue):
        services.customer_by_address(session, app, "not an address", now)


def test_convert_keeps_conversation_in_inbox_and_lists_it_under_tickets(
    session, app, agent, conversation, now
):
    services.add_tag(session, conversation, "shipping", services.SYSTEM, now)
    services.take_events(session)
    ticket = services.convert(session, conversation, agent, now + H, priority="high")
    assert kinds(session) == ["ticket.converted"]
    assert ticket.type == TicketType.CUSTOMER
    assert ticket.priority == Priority.HIGH
    assert ticket.status == TicketStatus.OPEN
    # Inherits customer, history and tags through the shared conversation.
    assert ticket.conversation.customer.addresses[0].address == "chris@example.com"
    assert [t.name for t in ticket.conversation.tags] == ["shipping"]
    assert len(ticket.conversation.messages) == 1
    inbox = services.list_conversations(session, app, services.ListFilter(view="inbox"))
    tickets = services.list_conversations(session, app, services.ListFilter(view="tickets"))
    assert conversation in inbox
    assert conversation in tickets


def test_convert_twice_is_refused(session, agent, conversation, now):
    services.convert(session, conversation, agent, now)
    with pytest.raises(NotAllowed):
        services.convert(session, conversation, agent, now)


def test_convert_rejects_bad_priority_and_type(session, agent, conversation, now):
    with pytest.raises(InvalidValue, match="not a priority"):
        services.convert(session, conversation, agent, now, priority="sky-high")
    with pytest.raises(InvalidValue, match="not a ticket type"):
        services.convert(session, conversation, agent, now, type="incident")


def test_ticket_numbers_count_per_app(session, app, agent, conversation, now):
    first = services.convert(session, conversation, agent, now)
    customer = services.create_customer(session, app, now)
    second_conv, _ = services.start_conversation(session, app, customer, "chat", "hi", now)
    second = services.convert(session, second_conv, agent, now)
    assert (first.number, second.number) == (1, 2)
    other_app = services.ensure_app(session, "globex", "Globex", now)
    other_agent = services.add_agent(session, other_app, "z@globex.test", "Zed", now)
    other_customer = services.create_customer(session, other_app, now)
    conv, _ = services.start_conversation(session, other_app, other_customer, "chat", "yo", now)
    assert services.convert(session, conv, other_agent, now).number == 1


def test_assign_status_priority_category_record_events(
    session, agent, other_agent, conversation, now
):
    ticket = services.convert(session, conversation, agent, now)
    services.take_events(session)
    by = services.Actor.agent(agent)
    services.assign(session, ticket, other_agent, by, now)
    services.set_status(session, ticket, "in_progress", by, now)
    services.set_priority(session, ticket, "urgent", by, now)
    services.set_category(session, ticket, "billing", by, now)
    events = services.take_events(session)
    assert [e.kind for e in events] == [
        "ticket.assigned",
        "ticket.status",
        "ticket.priority",
        "ticket.category",
    ]
    assert all(e.actor_type == "agent" and e.actor_id == agent.id for e in events)
    assert events[0].data == {"assignee": "bo@acme.test", "previous": None}
    assert (ticket.assignee, ticket.status, ticket.priority, ticket.category) == (
        other_agent,
        TicketStatus.IN_PROGRESS,
        Priority.URGENT,
        "billing",
    )
    with pytest.raises(InvalidValue):
        services.set_status(session, ticket, "closed-forever", by, now)


def test_resolve_and_a_customer_message_reopens(session, agent, conversation, now):
    ticket = services.convert(session, conversation, agent, now)
    services.resolve(session, conversation, services.Actor.agent(agent), now)
    assert conversation.state == ConversationState.RESOLVED
    assert ticket.status == TicketStatus.RESOLVED and ticket.resolved_at == now
    services.add_customer_message(session, conversation, "Still broken!", "email", now + H)
    assert conversation.state == ConversationState.OPEN
    assert ticket.status == TicketStatus.OPEN and ticket.resolved_at is None


def test_an_auto_reply_never_reopens_or_wakes(session, agent, conversation, now):
    ticket = services.convert(session, conversation, agent, now)
    services.resolve(session, conversation, services.SYSTEM, now)
    services.add_customer_message(
        session, conversation, "I am out of office", "email", now + H, is_auto_reply=True
    )
    assert conversation.state == ConversationState.RESOLVED
    assert ticket.status == TicketStatus.RESOLVED
    services.reopen(session, conversation, services.SYSTEM, now + H)
    services.snooze(session, conversation, now + 5 * H, services.SYSTEM, now + H)
    services.add_customer_message(
        session, conversation, "Auto: away", "email", now + 2 * H, is_auto_reply=True
    )
    assert conversation.state == ConversationState.SNOOZED


def test_customer_message_moves_waiting_ticket_back_to_open(session, agent, conversation, now):
    ticket = services.convert(session, conversation, agent, now)
    services.set_status(session, ticket, "waiting", services.SYSTEM, now)
    assert ticket.status == TicketStatus.WAITING_ON_CUSTOMER
    services.add_customer_message(session, conversation, "Here is the photo", "chat", now + H)
    assert ticket.status == TicketStatus.OPEN


def test_snooze_and_wake_on_customer_message(session, agent, conversation, now):
    ticket = services.convert(session, conversation, agent, now)
    services.snooze(session, conversation, now + 48 * H, services.SYSTEM, now)
    assert conversation.state == ConversationState.SNOOZED
    assert ticket.snoozed_until == now + 48 * H
    services.take_events(session)
    services.add_customer_message(session, conversation, "any news?", "chat", now + H)
    assert conversation.state == ConversationState.OPEN
    assert conversation.snoozed_until is None and ticket.snoozed_until is None
    assert "conversation.woke" in kinds(session)


def test_snooze_needs_a_future_time_and_unsnooze_is_idempotent(session, conversation, now):
    with pytest.raises(InvalidValue):
        services.snooze(session, conversation, now - H, services.SYSTEM, now)
    services.snooze(session, conversation, now + H, services.SYSTEM, now)
    assert services.unsnooze(session, conversation, services.SYSTEM, now, reason="manual")
    assert not services.unsnooze(session, conversation, services.SYSTEM, now, reason="manual")


def test_snoozing_a_conversation_without_ticket(session, conversation, now):
    services.snooze(session, conversation, now + H, services.SYSTEM, now)
    assert conversation.state == ConversationState.SNOOZED
    assert conversation.ticket is None


def test_tags_are_normalised_and_validated(session, conversation, now):
    services.add_tag(session, conversation, "Refund", services.SYSTEM, now)
    services.add_tag(session, conversation, "refund", services.SYSTEM, now)
    assert [t.name for t in conversation.tags] == ["refund"]
    with pytest.raises(InvalidValue):
        services.add_tag(session, conversation, "two words", services.SYSTEM, now)
    services.remove_tag(session, conversation, "REFUND", services.SYSTEM, now)
    assert conversation.tags == []


def test_link_customer_tickets_to_a_tracker(session, app, agent, conversation, now):
    ticket = services.convert(session, conversation, agent, now)
    customer = services.create_customer(session, app, now)
    tracker_conv, _ = services.start_conversation(session, app, customer, "chat", "outage", now)
    tracker = services.convert(session, tracker_conv, agent, now, type="tracker")
    services.link_to_tracker(session, ticket, tracker, services.SYSTEM, now)
    assert services.linked_tickets(session, tracker) == [ticket]
    with pytest.raises(InvalidValue, match="not a tracker"):
        services.link_to_tracker(session, tracker, ticket, services.SYSTEM, now)


def test_notes_are_team_only(session, agent, conversation, now):
    services.add_note(session, conversation, agent, "customer sounds angry; refund ok", now)
    ticket = services.convert(session, conversation, agent, now, priority="urgent")
    app = session.get(App, conversation.app_id)
    view = customer_view(app, conversation)
    dumped = json.dumps(view.to_json())
    assert "angry" not in dumped
    assert "urgent" not in dumped
    for internal in ("ticket", "priority", "status", "note", "assignee", str(ticket.id)):
        assert internal not in view.to_json()
    assert not hasattr(view, "ticket") and not hasattr(view, "notes")


def test_customer_view_shows_agent_names_and_brand_for_system(session, agent, conversation, now):
    services.add_agent_message(session, conversation, agent, "I'll check right away.", now)
    services.add_system_message(session, conversation, "We usually answer within a day.", now)
    app = session.get(App, conversation.app_id)
    view = customer_view(app, conversation)
    assert [(m.author, m.author_name) for m in view.messages] == [
        ("customer", "Chris"),
        ("team", "Ana"),
        ("team", "Acme"),
    ]


def test_empty_reply_and_note_are_refused(session, agent, conversation, now):
    with pytest.raises(InvalidValue):
        services.add_agent_message(session, conversation, agent, "   ", now)
    with pytest.raises(InvalidValue):
        services.add_note(session, conversation, agent, "", now)


def test_another_apps_conversation_is_not_found(session, app, conversation, now):
    other = services.ensure_app(session, "globex", "Globex", now)
    with pytest.raises(NotFound):
        services.get_conversation(session, other, conversation.id)
    intruder = services.add_agent(session, other, "eve@globex.test", "Eve", now)
    with pytest.raises(NotFound):
        services.add_agent_message(session, conversation, intruder, "hi", now)
    with pytest.raises(NotFound):
        services.convert(session, conversation, intruder, now)


def test_unknown_agent_is_not_found(session, app):
    with pytest.raises(NotFound, match=r"no agent nobody@acme\.test"):
        services.find_agent(session, app, "nobody@acme.test")


def test_listing_filters(session, app, agent, other_agent, now):
    def start(email: str, text: str) -> Conversation:
        customer = services.customer_by_address(session, app, email, now)
        return services.start_conversation(session, app, customer, "chat", text, now)[0]

    a = start("a@example.com", "printer on fire")
    b = start("b@example.com", "invoice question")
    c = start("c@example.com", "login broken")
    services.convert(session, a, agent, now, priority="urgent", assignee=other_agent)
    services.convert(session, b, agent, now, category="billing")
    services.add_tag(session, c, "vip", services.SYSTEM, now)
    services.snooze(session, c, now + H, services.SYSTEM, now)

    def ids(**kw: object) -> set[int]:
        f = services.ListFilter(**kw)  # type: ignore[arg-type]
        return {x.id for x in services.list_conversations(session, app, f)}

    assert ids() == {a.id, b.id, c.id}
    assert ids(view="tickets") == {a.id, b.id}
    assert ids(view="tickets", priority="urgent") == {a.id}
    assert ids(view="tickets", assignee_id=other_agent.id) == {a.id}
    assert ids(view="tickets", unassigned=True) == {b.id}
    assert ids(category="billing") == {b.id}
    assert ids(tag="vip") == {c.id}
    assert ids(state="snoozed") == {c.id}
    assert ids(customer_email="B@example.com") == {b.id}
    assert ids(text="PRINTER") == {a.id}
    with pytest.raises(InvalidValue):
        ids(view="archive")
    with pytest.raises(InvalidValue):
        ids(state="deleted")


def test_agent_emails_are_unique_per_app(session, app, agent, now):
    with pytest.raises(InvalidValue, match="exists already"):
        services.add_agent(session, app, "ANA@acme.test", "Ana again", now)
    with pytest.raises(InvalidValue, match="not a role"):
        services.add_agent(session, app, "new@acme.test", "New", now, role="owner")


def _rows(session: Session, conversation_id: int) -> dict[str, object]:
    """What a conversation, its messages and its events hold, without ids and owners."""
    from sqlalchemy import select

    from tickets.models import Event, Message

    session.expire_all()
    conversation = session.get(Conversation, conversation_id)
    assert conversation is not None
    messages = session.scalars(select(Message).where(Message.conversation_id == conversation_id))
    events = session.scalars(
        select(Event).where(Event.conversation_id == conversation_id).order_by(Event.id)
    )
    return {
        "conversation": {
            k: getattr(conversation, k)
            for k in (
                "started_via",
                "subject",
                "state",
                "channel_id",
                "created_at",
                "updated_at",
                "last_customer_message_at",
            )
        },
        "messages": [
            (m.author_type, m.via, m.text, m.is_auto_reply, m.flags, m.from_address, m.created_at)
            for m in messages
        ],
        "events": [
            (
                e.kind,
                e.actor_type,
                e.ticket_id,
                {k: v for k, v in e.data.items() if k != "message_id"},
            )
            for e in events
        ],
    }


@pytest.mark.parametrize("auto_reply", [False, True])
def test_the_core_path_writes_what_the_orm_services_write(session, app, now, auto_reply):
    """Inbound mail takes add_customer_message_without_effects; it must leave the same rows
    and events as start_conversation and add_customer_message would."""
    fields = {"from_address": "dee@example.com", "flags": {"thread_rule": "x"}}
    orm_customer = services.create_customer(session, app, now, name="Dee", email="d1@example.com")
    core_customer = services.create_customer(session, app, now, name="Dee", email="d2@example.com")
    orm, _ = services.start_conversation(
        session,
        app,
        orm_customer,
        "email",
        "First",
        now,
        subject="Hello",
        is_auto_reply=auto_reply,
        **fields,
    )
    made = services.add_customer_message_without_effects(
        session,
        app.id,
        core_customer.id,
        None,
        services.Via.EMAIL,
        "First",
        now,
        subject="Hello",
        is_auto_reply=auto_reply,
        **fields,
    )
    assert made is not None
    core_id = made[0]
    later = now + H
    services.add_customer_message(
        session, orm, "Second", "email", later, is_auto_reply=auto_reply, **fields
    )
    core = session.get(Conversation, core_id)
    assert (
        services.add_customer_message_without_effects(
            session,
            app.id,
            core_customer.id,
            core,
            services.Via.EMAIL,
            "Second",
            later,
            is_auto_reply=auto_reply,
            **fields,
        )
        is not None
    )
    session.flush()
    assert _rows(session, core_id) == _rows(session, orm.id)


def test_the_core_path_declines_a_message_with_effects(session, app, now, conversation, agent):
    services.convert(session, conversation, agent, now)
    snoozed_customer = services.create_customer(session, app, now, email="s@example.com")
    snoozed, _ = services.start_conversation(session, app, snoozed_customer, "chat", "Hi", now)
    services.snooze(session, snoozed, now + H, services.Actor.agent(agent), now)
    for taken in (conversation, snoozed):
        made = services.add_customer_message_without_effects(
            session, app.id, taken.customer_id, taken, services.Via.EMAIL, "Again", now
        )
        assert made is None
