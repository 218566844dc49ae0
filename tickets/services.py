"""Domain services: every change to conversations, messages, notes and tickets goes through here.

Each service takes a Session and `now`, changes rows, and records an audit event; it never
commits. The caller owns the unit of work (`with session.begin():`) and, after the commit, hands
the events of `take_events(session)` on (to actors, notifications).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import Select, Table, func, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from tickets import delivery, sla
from tickets.business_time import MAX_DURATION
from tickets.deferred import DeferredWrites
from tickets.errors import InvalidValue, NotAllowed, NotFound
from tickets.models import (
    Agent,
    AgentAddress,
    App,
    AuthorType,
    Conversation,
    ConversationState,
    ConversationTag,
    Customer,
    CustomerAddress,
    Event,
    Message,
    Note,
    Priority,
    Role,
    Tag,
    Ticket,
    TicketStatus,
    TicketType,
    Via,
)

SUBJECT_FROM_CHAT_CHARS = 80


@dataclass(frozen=True)
class Actor:
    """Who did something: an agent, the customer, or the gateway itself."""

    type: Literal["agent", "customer", "system"]
    id: int | None = None

    @classmethod
    def agent(cls, agent: Agent) -> Actor:
        return cls("agent", agent.id)

    @classmethod
    def customer(cls, customer: Customer) -> Actor:
        return cls("customer", customer.id)


SYSTEM = Actor("system")


E = TypeVar("E", Priority, TicketStatus, TicketType, Role)


def _parse_enum(cls: type[E], value: str | E, what: str) -> E:
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(m.value for m in cls)
        raise InvalidValue(f"{value!r} is not a {what} (one of: {allowed})") from None


def parse_priority(value: str | Priority) -> Priority:
    return _parse_enum(Priority, value, "priority")


def parse_status(value: str | TicketStatus) -> TicketStatus:
    aliases = {"waiting": "waiting_on_customer", "in-progress": "in_progress"}
    if isinstance(value, str):
        value = aliases.get(value, value)
    return _parse_enum(TicketStatus, value, "status")


def parse_ticket_type(value: str | TicketType) -> TicketType:
    return _parse_enum(TicketType, value, "ticket type")


def parse_role(value: str | Role) -> Role:
    return _parse_enum(Role, value, "role")


_SINGLE_LABEL_HOST = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def normalize_address(address: str) -> str:
    """A syntactically valid address, lowercased; InvalidValue otherwise.

    Single-label domains (`support@localhost`, an intranet host) and reserved names are
    accepted: this checks syntax; whether mail can be delivered is the convert-time check's job.
    """
    candidate = address.strip()
    local, _, domain = candidate.rpartition("@")
    if local and _SINGLE_LABEL_HOST.match(domain.lower()):
        candidate, single_label = f"{local}@example.com", domain.lower()
    else:
        single_label = None
    try:
        result = validate_email(candidate, check_deliverability=False, test_environment=True)
    except EmailNotValidError as exc:
        raise InvalidValue(f"{address!r} is not a valid email address: {exc}") from None
    if single_label is not None:
        return f"{result.local_part.lower()}@{single_label}"
    return result.normalized.lower()


# --- events -------------------------------------------------------------------------------

_EVENTS_KEY = "gateway.pending_events"


def record(
    session: Session,
    *,
    app_id: int,
    kind: str,
    actor: Actor,
    now: dt.datetime,
    conversation: Conversation | None = None,
    ticket: Ticket | None = None,
    **data: Any,
) -> Event:
    event = Event(
        app_id=app_id,
        conversation_id=conversation.id if conversation else None,
        ticket_id=ticket.id if ticket else None,
        actor_type=actor.type,
        actor_id=actor.id,
        kind=kind,
        data=data,
        created_at=now,
    )
    session.add(event)
    session.info.setdefault(_EVENTS_KEY, []).append(event)
    return event


def take_events(session: Session) -> list[Event]:
    """The events recorded in this session since the last call, for hand-off after commit."""
    events: list[Event] = session.info.pop(_EVENTS_KEY, [])
    return events


# --- apps, agents, customers --------------------------------------------------------------


def ensure_app(
    session: Session, name: str, brand: str, now: dt.datetime, default_locale: str = "en"
) -> App:
    app = session.scalar(select(App).where(App.name == name))
    if app is None:
        app = App(name=name, brand=brand, default_locale=default_locale, created_at=now)
        session.add(app)
        session.flush()
    else:
        app.brand = brand
        app.default_locale = default_locale
    return app


def get_app(session: Session, name: str) -> App:
    app = session.scalar(select(App).where(App.name == name))
    if app is None:
        raise NotFound(f"no app named {name!r}")
    return app


def add_agent(
    session: Session,
    app: App,
    email: str,
    name: str,
    now: dt.datetime,
    role: str | Role = Role.AGENT,
) -> Agent:
    address = normalize_address(email)
    role = parse_role(role)
    if not name.strip():
        raise InvalidValue("an agent needs a name")
    if session.scalar(select(Agent).where(Agent.app_id == app.id, Agent.email == address)):
        raise InvalidValue(f"agent {address} exists already")
    agent = Agent(app_id=app.id, email=address, name=name.strip(), role=role, created_at=now)
    # The address an admin registers an agent with is the one they vouch for.
    agent.addresses.append(AgentAddress(app_id=app.id, address=address, verified=True))
    session.add(agent)
    session.flush()
    record(session, app_id=app.id, kind="agent.added", actor=SYSTEM, now=now, agent=address)
    return agent


def add_agent_address(
    session: Session, agent: Agent, email: str, now: dt.datetime, *, verified: bool = True
) -> AgentAddress:
    """Another address of an agent; a verified one (an admin vouches for it) may answer
    notifications by email in the agent's name. Adding it again sets `verified`."""
    address = normalize_address(email)
    owner = session.scalar(
        select(AgentAddress).where(
            AgentAddress.app_id == agent.app_id, AgentAddress.address == address
        )
    )
    if owner is not None:
        if owner.agent_id != agent.id:
            raise InvalidValue(f"{address} is already an address of another agent")
        owner.verified = verified
        return owner
    row = AgentAddress(app_id=agent.app_id, address=address, verified=verified)
    agent.addresses.append(row)
    session.flush()
    record(
        session,
        app_id=agent.app_id,
        kind="agent.address_added",
        actor=SYSTEM,
        now=now,
        agent=agent.email,
        address=address,
        verified=verified,
    )
    return row


def find_agent(session: Session, app: App, email: str) -> Agent:
    address = email.strip().lower()
    agent = session.scalar(
        select(Agent)
        .join(AgentAddress, AgentAddress.agent_id == Agent.id)
        .where(Agent.app_id == app.id, AgentAddress.address == address, Agent.active.is_(True))
    )
    if agent is None:
        raise NotFound(f"no agent {email} in app {app.name}")
    return agent


def list_agents(session: Session, app: App) -> Sequence[Agent]:
    return session.scalars(select(Agent).where(Agent.app_id == app.id).order_by(Agent.id)).all()


def create_customer(
    session: Session,
    app: App,
    now: dt.datetime,
    *,
    name: str | None = None,
    email: str | None = None,
    locale: str | None = None,
) -> Customer:
    # An empty collection, known as such: adding the first address asks the database nothing.
    customer = Customer(app_id=app.id, name=name, locale=locale, created_at=now, addresses=[])
    session.add(customer)
    if email:
        add_customer_address(session, customer, email, now, app=app)
    session.flush()
    return customer


def add_customer_address(
    session: Session, customer: Customer, email: str, now: dt.datetime, *, app: App | None = None
) -> CustomerAddress:
    address = normalize_address(email)
    existing = session.scalar(
        select(CustomerAddress).where(
            CustomerAddress.app_id == customer.app_id, CustomerAddress.address == address
        )
    )
    if existing is not None:
        if existing.customer_id != customer.id and existing.customer is not customer:
            raise NotAllowed(f"{address} belongs to another customer")
        return existing
    row = CustomerAddress(app_id=customer.app_id, address=address, created_at=now)
    customer.addresses.append(row)
    return row


def find_customer_by_address(session: Session, app: App, address: str) -> Customer | None:
    return session.scalar(
        select(Customer)
        .join(CustomerAddress, CustomerAddress.customer_id == Customer.id)
        .where(CustomerAddress.app_id == app.id, CustomerAddress.address == address.lower())
    )


def customer_by_address(
    session: Session, app: App, address: str, now: dt.datetime, name: str | None = None
) -> Customer:
    """The customer who owns this address, created on first sight."""
    customer = find_customer_by_address(session, app, normalize_address(address))
    if customer is None:
        customer = create_customer(session, app, now, name=name, email=address)
    elif name and not customer.name:
        customer.name = name
    return customer


# --- conversations and messages -----------------------------------------------------------


def get_conversation(session: Session, app: App, conversation_id: int) -> Conversation:
    conversation = session.get(Conversation, conversation_id)
    # Another app's conversation is reported exactly like a missing one: ids are not oracles.
    if conversation is None or conversation.app_id != app.id:
        raise NotFound(f"no conversation {conversation_id}")
    return conversation


def _subject_from_text(text: str) -> str:
    line = " ".join(text.split())
    if len(line) <= SUBJECT_FROM_CHAT_CHARS:
        return line
    cut = line[:SUBJECT_FROM_CHAT_CHARS].rsplit(" ", 1)[0]
    return cut + "…"


def start_conversation(
    session: Session,
    app: App,
    customer: Customer,
    via: str | Via,
    text: str,
    now: dt.datetime,
    *,
    subject: str | None = None,
    channel_id: int | None = None,
    **message_fields: Any,
) -> tuple[Conversation, Message]:
    """A new conversation in the Inbox with the customer's first message."""
    via = Via(via)
    conversation = Conversation(
        app_id=app.id,
        customer=customer,
        channel_id=channel_id,
        started_via=via,
        subject=(subject or "").strip() or _subject_from_text(text),
        state=ConversationState.OPEN,
        created_at=now,
        updated_at=now,
        ticket=None,  # known: a new conversation has none, so nothing asks the database
        last_customer_message_at=None if message_fields.get("is_auto_reply") else now,
    )
    session.add(conversation)
    session.flush()
    record(
        session,
        app_id=app.id,
        kind="conversation.started",
        actor=Actor.customer(customer),
        now=now,
        conversation=conversation,
        via=via.value,
    )
    message = add_customer_message(session, conversation, text, via, now, **message_fields)
    return conversation, message


def add_customer_message(
    session: Session,
    conversation: Conversation,
    text: str,
    via: str | Via,
    now: dt.datetime,
    *,
    is_auto_reply: bool = False,
    **fields: Any,
) -> Message:
    """A message from the customer, with its effects on the conversation and its ticket.

    An auto-reply is kept on the conversation but has no effect: it must never reopen, wake or
    start anything, or two autoresponders could talk to each other forever.
    """
    message = Message(
        conversation=conversation,
        author_type=AuthorType.CUSTOMER,
        via=Via(via),
        text=text,
        is_auto_reply=is_auto_reply,
        created_at=now,
        **fields,
    )
    session.add(message)
    conversation.updated_at = now
    if not is_auto_reply:
        conversation.last_customer_message_at = now  # before the flush: one UPDATE, not two
    session.flush()
    actor = Actor("customer", conversation.customer_id)
    record(
        session,
        app_id=conversation.app_id,
        kind="message.customer",
        actor=actor,
        now=now,
        conversation=conversation,
        ticket=conversation.ticket,
        message_id=message.id,
        auto_reply=is_auto_reply,
    )
    if is_auto_reply:
        return message
    if conversation.state == ConversationState.SNOOZED:
        _wake(session, conversation, actor, now, reason="customer message")
    if conversation.state in (ConversationState.RESOLVED, ConversationState.CLOSED):
        reopen(session, conversation, actor, now)
    ticket = conversation.ticket
    if ticket is not None and ticket.status == TicketStatus.WAITING_ON_CUSTOMER:
        _set_status(session, ticket, TicketStatus.OPEN, actor, now)
    if ticket is not None:
        sla.on_customer_message(session, ticket, now)
        # Debounced: the sweep refreshes it once no message has come for a while.
        ticket.summary_due_at = now
    return message


def insert_rows(session: Session, model: type[Any], rows: list[dict[str, Any]]) -> list[int]:
    """Core INSERT .. RETURNING id of `rows` into the model's table, in order."""
    statement = _INSERTS.get(model)
    if statement is None:
        # Built once: constructing a statement costs more than SQLAlchemy's cached execution.
        table = _table(model)
        statement = _INSERTS[model] = table.insert().returning(
            table.c.id, sort_by_parameter_order=True
        )
    return [int(row_id) for row_id in session.execute(statement, rows).scalars()]


_INSERTS: dict[type[Any], Any] = {}


def _table(model: type[Any]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


def insert_customer(
    session: Session, app_id: int, address: str, now: dt.datetime, *, name: str | None = None
) -> int:
    """A new customer with one address that no customer of the app has (the caller looked),
    written with two Core statements; `create_customer` does the same through the ORM."""
    [customer_id] = insert_rows(
        session,
        Customer,
        [{"app_id": app_id, "name": name, "locale": None, "created_at": now}],
    )
    insert_rows(
        session,
        CustomerAddress,
        [
            {
                "app_id": app_id,
                "customer_id": customer_id,
                "address": normalize_address(address),
                "created_at": now,
            }
        ],
    )
    return customer_id


def add_customer_message_without_effects(
    session: Session,
    app_id: int,
    customer_id: int,
    conversation: Conversation | None,
    via: Via,
    text: str,
    now: dt.datetime,
    *,
    subject: str | None = None,
    channel_id: int | None = None,
    is_auto_reply: bool = False,
    later: DeferredWrites | None = None,
    **fields: Any,
) -> tuple[int, int] | None:
    """`start_conversation` / `add_customer_message` for the common case, as a few Core
    statements instead of ORM flushes: (conversation id, message id), the same rows and events.
    With `later`, the events are written when the caller flushes it (with the batch's others).

    The common case is a new conversation, or an open one without a ticket: a customer message
    there changes nothing but the conversation's times. Anything else (a ticket's status and
    SLA timers, waking a snoozed conversation, reopening a resolved one) returns None, and the
    caller uses the ORM services, which own those rules. Inbound mail goes through here in
    bulk, under SQLite's single write lock, where every statement saved is throughput.
    """
    if conversation is not None and (
        conversation.state != ConversationState.OPEN or conversation.ticket is not None
    ):
        return None
    events: list[dict[str, Any]] = []
    base = {"app_id": app_id, "ticket_id": None, "actor_type": "customer", "actor_id": customer_id}
    if conversation is None:
        [conversation_id] = insert_rows(
            session,
            Conversation,
            [
                {
                    "app_id": app_id,
                    "customer_id": customer_id,
                    "channel_id": channel_id,
                    "started_via": via,
                    "subject": (subject or "").strip() or _subject_from_text(text),
                    "state": ConversationState.OPEN,
                    "created_at": now,
                    "updated_at": now,
                    "last_customer_message_at": None if is_auto_reply else now,
                }
            ],
        )
        events.append(
            {
                **base,
                "conversation_id": conversation_id,
                "kind": "conversation.started",
                "data": {"via": via.value},
                "created_at": now,
            }
        )
    else:
        conversation_id = conversation.id
        times: dict[str, Any] = {"updated_at": now}
        if not is_auto_reply:
            times["last_customer_message_at"] = now
        table = _table(Conversation)
        session.execute(table.update().where(table.c.id == conversation_id).values(**times))
        for key, value in times.items():
            set_committed_value(conversation, key, value)  # the loaded object stays true
    [message_id] = insert_rows(
        session,
        Message,
        [
            {
                "conversation_id": conversation_id,
                "author_type": AuthorType.CUSTOMER,
                "agent_id": None,
                "via": via,
                "text": text,
                "is_auto_reply": is_auto_reply,
                "created_at": now,
                **fields,
            }
        ],
    )
    events.append(
        {
            **base,
            "conversation_id": conversation_id,
            "kind": "message.customer",
            "data": {"message_id": message_id, "auto_reply": is_auto_reply},
            "created_at": now,
        }
    )
    if later is not None:
        later.add(_EVENT_INSERT, events)
    else:
        session.execute(_EVENT_INSERT, events)
    return conversation_id, message_id


_EVENT_INSERT = _table(Event).insert()


def add_agent_message(
    session: Session,
    conversation: Conversation,
    agent: Agent,
    text: str,
    now: dt.datetime,
    *,
    via: str | Via = Via.CHAT,
    **fields: Any,
) -> Message:
    """A public reply by an agent: the customer will see it (in the widget or by email)."""
    if agent.app_id != conversation.app_id:
        raise NotFound(f"no conversation {conversation.id}")
    if not text.strip():
        raise InvalidValue("a reply needs text")
    message = Message(
        conversation=conversation,
        author_type=AuthorType.AGENT,
        agent=agent,
        via=Via(via),
        text=text,
        created_at=now,
        **fields,
    )
    session.add(message)
    conversation.updated_at = now
    delivery.await_customer(conversation, message, now)
    session.flush()
    record(
        session,
        app_id=conversation.app_id,
        kind="message.agent",
        actor=Actor.agent(agent),
        now=now,
        conversation=conversation,
        ticket=conversation.ticket,
        message_id=message.id,
    )
    if conversation.ticket is not None:
        sla.on_agent_reply(session, conversation.ticket, now)
    return message


def add_system_message(
    session: Session, conversation: Conversation, text: str, now: dt.datetime
) -> Message:
    message = Message(
        conversation=conversation,
        author_type=AuthorType.SYSTEM,
        via=Via.CHAT,
        text=text,
        created_at=now,
    )
    session.add(message)
    delivery.await_customer(conversation, message, now)
    session.flush()
    record(
        session,
        app_id=conversation.app_id,
        kind="message.system",
        actor=SYSTEM,
        now=now,
        conversation=conversation,
        message_id=message.id,
    )
    return message


def add_note(
    session: Session,
    conversation: Conversation,
    agent: Agent | None,
    text: str,
    now: dt.datetime,
) -> Note:
    """An internal note: team only, it never reaches the customer."""
    if agent is not None and agent.app_id != conversation.app_id:
        raise NotFound(f"no conversation {conversation.id}")
    if not text.strip():
        raise InvalidValue("a note needs text")
    note = Note(conversation=conversation, agent=agent, text=text, created_at=now)
    session.add(note)
    session.flush()
    record(
        session,
        app_id=conversation.app_id,
        kind="note.added",
        actor=Actor.agent(agent) if agent else SYSTEM,
        now=now,
        conversation=conversation,
        ticket=conversation.ticket,
        note_id=note.id,
    )
    return note


# --- the ticket layer ---------------------------------------------------------------------


def convert(
    session: Session,
    conversation: Conversation,
    by: Agent,
    now: dt.datetime,
    *,
    type: str | TicketType = TicketType.CUSTOMER,
    priority: str | Priority = Priority.NORMAL,
    assignee: Agent | None = None,
    category: str | None = None,
) -> Ticket:
    """Put the ticket layer on a conversation; it stays in the Inbox and shows under Tickets.

    The ticket inherits the customer, the history and the tags by sharing the conversation:
    nothing is copied, so nothing can drift apart.
    """
    ticket_type = parse_ticket_type(type)
    level = parse_priority(priority)
    if by.app_id != conversation.app_id:
        raise NotFound(f"no conversation {conversation.id}")
    if conversation.ticket is not None:
        raise NotAllowed(f"conversation {conversation.id} is already converted")
    if assignee is not None and assignee.app_id != conversation.app_id:
        raise NotFound(f"no agent {assignee.email}")
    number = (
        session.scalar(select(func.max(Ticket.number)).where(Ticket.app_id == conversation.app_id))
        or 0
    ) + 1
    ticket = Ticket(
        app_id=conversation.app_id,
        number=number,
        conversation=conversation,
        type=ticket_type,
        status=TicketStatus.OPEN,
        priority=level,
        category=(category or None),
        assignee=assignee,
        created_by_id=by.id,
        snoozed_until=conversation.snoozed_until,
        # The convert-time email check and the first title and summary are due at once.
        email_check_due_at=now if ticket_type == TicketType.CUSTOMER else None,
        summary_due_at=now,
        created_at=now,
        updated_at=now,
    )
    session.add(ticket)
    session.flush()
    record(
        session,
        app_id=conversation.app_id,
        kind="ticket.converted",
        actor=Actor.agent(by),
        now=now,
        conversation=conversation,
        ticket=ticket,
        type=ticket_type.value,
        priority=level.value,
        assignee=assignee.email if assignee else None,
    )
    sla.on_converted(session, ticket, now)
    return ticket


def require_ticket(conversation: Conversation) -> Ticket:
    if conversation.ticket is None:
        raise NotAllowed(f"conversation {conversation.id} is not converted")
    return conversation.ticket


def _ticket_event(
    session: Session, ticket: Ticket, kind: str, actor: Actor, now: dt.datetime, **data: Any
) -> None:
    ticket.updated_at = now
    record_ticket_event(session, ticket, kind, actor, now, **data)


def record_ticket_event(
    session: Session, ticket: Ticket, kind: str, actor: Actor, now: dt.datetime, **data: Any
) -> Event:
    """An event about a ticket (and its conversation) that changes nothing the team edits."""
    return record(
        session,
        app_id=ticket.app_id,
        kind=kind,
        actor=actor,
        now=now,
        conversation=ticket.conversation,
        ticket=ticket,
        **data,
    )


def assign(
    session: Session, ticket: Ticket, assignee: Agent | None, by: Actor, now: dt.datetime
) -> None:
    if assignee is not None and assignee.app_id != ticket.app_id:
        raise NotFound(f"no agent {assignee.email}")
    previous = ticket.assignee.email if ticket.assignee else None
    ticket.assignee = assignee
    _ticket_event(
        session,
        ticket,
        "ticket.assigned",
        by,
        now,
        assignee=assignee.email if assignee else None,
        previous=previous,
    )


def _set_status(
    session: Session, ticket: Ticket, status: TicketStatus, by: Actor, now: dt.datetime
) -> None:
    previous = ticket.status
    if previous == status:
        return
    ticket.status = status
    ticket.resolved_at = now if status == TicketStatus.RESOLVED else None
    _ticket_event(
        session, ticket, "ticket.status", by, now, status=status.value, previous=previous.value
    )
    sla.on_status(session, ticket, previous, now)


def set_status(
    session: Session, ticket: Ticket, status: str | TicketStatus, by: Actor, now: dt.datetime
) -> None:
    """Change the ticket's status; resolving resolves the conversation and reopening reopens it."""
    value = parse_status(status)
    conversation = ticket.conversation
    if value == TicketStatus.RESOLVED:
        resolve(session, conversation, by, now)
        return
    if conversation.state in (ConversationState.RESOLVED, ConversationState.CLOSED):
        reopen(session, conversation, by, now)
    _set_status(session, ticket, value, by, now)


def set_priority(
    session: Session, ticket: Ticket, priority: str | Priority, by: Actor, now: dt.datetime
) -> None:
    value = parse_priority(priority)
    if value == ticket.priority:
        return
    previous = ticket.priority
    ticket.priority = value
    _ticket_event(
        session, ticket, "ticket.priority", by, now, priority=value.value, previous=previous.value
    )
    sla.on_policy_inputs(session, ticket, now)


def set_category(
    session: Session, ticket: Ticket, category: str | None, by: Actor, now: dt.datetime
) -> None:
    value = (category or "").strip() or None
    if value is not None and len(value) > 100:
        raise InvalidValue("a category is at most 100 characters")
    ticket.category = value
    _ticket_event(session, ticket, "ticket.category", by, now, category=value)
    sla.on_policy_inputs(session, ticket, now)


def _tag(session: Session, app_id: int, name: str) -> Tag:
    clean = name.strip().lower()
    if not clean or len(clean) > 100 or any(c.isspace() for c in clean):
        raise InvalidValue(f"{name!r} is not a tag (one word, at most 100 characters)")
    tag = session.scalar(select(Tag).where(Tag.app_id == app_id, Tag.name == clean))
    if tag is None:
        tag = Tag(app_id=app_id, name=clean)
        session.add(tag)
        session.flush()
    return tag


def add_tag(
    session: Session, conversation: Conversation, name: str, by: Actor, now: dt.datetime
) -> None:
    tag = _tag(session, conversation.app_id, name)
    if tag in conversation.tags:
        return
    conversation.tags.append(tag)
    record(
        session,
        app_id=conversation.app_id,
        kind="tag.added",
        actor=by,
        now=now,
        conversation=conversation,
        ticket=conversation.ticket,
        tag=tag.name,
    )


def remove_tag(
    session: Session, conversation: Conversation, name: str, by: Actor, now: dt.datetime
) -> None:
    clean = name.strip().lower()
    for tag in list(conversation.tags):
        if tag.name == clean:
            conversation.tags.remove(tag)
            record(
                session,
                app_id=conversation.app_id,
                kind="tag.removed",
                actor=by,
                now=now,
                conversation=conversation,
                ticket=conversation.ticket,
                tag=clean,
            )


def snooze(
    session: Session,
    conversation: Conversation,
    until: dt.datetime,
    by: Actor,
    now: dt.datetime,
) -> None:
    """Hide the conversation until `until` or the customer's next message, whichever is first."""
    if until <= now:
        raise InvalidValue("snooze needs a time in the future")
    # The bound of a snooze duration holds for a time too: one near year 9999 (or past it in
    # UTC) cannot be stored, nor have the SLA's business time added to it.
    if until - now > MAX_DURATION:
        raise InvalidValue(
            f"snooze until {until.isoformat()} is too far in the future (at most 10 years)"
        )
    if conversation.state in (ConversationState.RESOLVED, ConversationState.CLOSED):
        raise NotAllowed(f"conversation {conversation.id} is {conversation.state.value}")
    conversation.state = ConversationState.SNOOZED
    conversation.snoozed_until = until
    conversation.updated_at = now
    if conversation.ticket is not None:
        conversation.ticket.snoozed_until = until
        sla.on_snoozed(session, conversation.ticket, now)
    record(
        session,
        app_id=conversation.app_id,
        kind="conversation.snoozed",
        actor=by,
        now=now,
        conversation=conversation,
        ticket=conversation.ticket,
        until=until.isoformat(),
    )


def _wake(
    session: Session, conversation: Conversation, by: Actor, now: dt.datetime, *, reason: str
) -> None:
    conversation.state = ConversationState.OPEN
    conversation.snoozed_until = None
    conversation.updated_at = now
    ticket = conversation.ticket
    if ticket is not None:
        ticket.snoozed_until = None
        sla.on_woken(session, ticket, now)
    record(
        session,
        app_id=conversation.app_id,
        kind="conversation.woke",
        actor=by,
        now=now,
        conversation=conversation,
        ticket=ticket,
        reason=reason,
        # Who is to be told it is back (none: the team).
        assignee=ticket.assignee.email if ticket is not None and ticket.assignee else None,
    )


def unsnooze(
    session: Session, conversation: Conversation, by: Actor, now: dt.datetime, *, reason: str
) -> bool:
    """Wake a snoozed conversation; False (and no change) if it is not snoozed, so it is safe
    to run twice."""
    if conversation.state != ConversationState.SNOOZED:
        return False
    _wake(session, conversation, by, now, reason=reason)
    return True


def resolve(session: Session, conversation: Conversation, by: Actor, now: dt.datetime) -> None:
    if conversation.state == ConversationState.RESOLVED:
        return
    conversation.state = ConversationState.RESOLVED
    conversation.snoozed_until = None
    conversation.updated_at = now
    record(
        session,
        app_id=conversation.app_id,
        kind="conversation.resolved",
        actor=by,
        now=now,
        conversation=conversation,
        ticket=conversation.ticket,
    )
    if conversation.ticket is not None:
        conversation.ticket.snoozed_until = None
        _set_status(session, conversation.ticket, TicketStatus.RESOLVED, by, now)


def reopen(session: Session, conversation: Conversation, by: Actor, now: dt.datetime) -> None:
    if conversation.state not in (ConversationState.RESOLVED, ConversationState.CLOSED):
        return
    conversation.state = ConversationState.OPEN
    conversation.updated_at = now
    record(
        session,
        app_id=conversation.app_id,
        kind="conversation.reopened",
        actor=by,
        now=now,
        conversation=conversation,
        ticket=conversation.ticket,
    )
    if conversation.ticket is not None and conversation.ticket.status == TicketStatus.RESOLVED:
        _set_status(session, conversation.ticket, TicketStatus.OPEN, by, now)


def link_to_tracker(
    session: Session, ticket: Ticket, tracker: Ticket | None, by: Actor, now: dt.datetime
) -> None:
    """Link a customer ticket to a tracker (one problem, many customers); None unlinks."""
    if tracker is not None:
        if tracker.app_id != ticket.app_id:
            raise NotFound(f"no conversation {tracker.conversation_id}")
        if tracker.type != TicketType.TRACKER:
            raise InvalidValue(f"conversation {tracker.conversation_id} is not a tracker")
        if ticket.type != TicketType.CUSTOMER:
            raise InvalidValue("only customer tickets can be linked to a tracker")
    ticket.tracker = tracker
    _ticket_event(
        session,
        ticket,
        "ticket.linked",
        by,
        now,
        tracker=tracker.conversation_id if tracker else None,
    )


def linked_tickets(session: Session, tracker: Ticket) -> Sequence[Ticket]:
    return session.scalars(
        select(Ticket).where(Ticket.tracker_id == tracker.id).order_by(Ticket.id)
    ).all()


# --- listings -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ListFilter:
    """Filters of the Inbox and Tickets listings; None means 'any'."""

    view: Literal["inbox", "tickets"] = "inbox"
    state: str | None = None
    via: str | None = None  # how the conversation started: chat or email
    status: str | None = None
    priority: str | None = None
    type: str | None = None
    category: str | None = None
    assignee_id: int | None = None
    unassigned: bool = False
    tag: str | None = None
    customer_email: str | None = None
    text: str | None = None
    limit: int = 100
    offset: int = 0


def _filtered(app: App, f: ListFilter) -> Select[Conversation]:
    query = select(Conversation).where(Conversation.app_id == app.id)
    if f.view == "tickets":
        query = query.join(Ticket, Ticket.conversation_id == Conversation.id)
    elif f.view != "inbox":
        raise InvalidValue(f"{f.view!r} is not a view (one of: inbox, tickets)")
    if f.state:
        try:
            query = query.where(Conversation.state == ConversationState(f.state))
        except ValueError:
            raise InvalidValue(f"{f.state!r} is not a conversation state") from None
    if f.via:
        try:
            query = query.where(Conversation.started_via == Via(f.via))
        except ValueError:
            raise InvalidValue(f"{f.via!r} is not a channel (one of: chat, email)") from None
    ticket_filters = [f.status, f.priority, f.type, f.category, f.assignee_id, f.unassigned]
    if any(v not in (None, False) for v in ticket_filters) and f.view != "tickets":
        query = query.join(Ticket, Ticket.conversation_id == Conversation.id)
    if f.status:
        query = query.where(Ticket.status == parse_status(f.status))
    if f.priority:
        query = query.where(Ticket.priority == parse_priority(f.priority))
    if f.type:
        query = query.where(Ticket.type == parse_ticket_type(f.type))
    if f.category:
        query = query.where(Ticket.category == f.category)
    if f.assignee_id is not None:
        query = query.where(Ticket.assignee_id == f.assignee_id)
    if f.unassigned:
        query = query.where(Ticket.assignee_id.is_(None))
    if f.tag:
        query = query.where(
            Conversation.id.in_(
                select(ConversationTag.conversation_id)
                .join(Tag, Tag.id == ConversationTag.tag_id)
                .where(Tag.app_id == app.id, Tag.name == f.tag.strip().lower())
            )
        )
    if f.customer_email:
        query = query.where(
            Conversation.customer_id.in_(
                select(CustomerAddress.customer_id).where(
                    CustomerAddress.app_id == app.id,
                    CustomerAddress.address == f.customer_email.strip().lower(),
                )
            )
        )
    if f.text:
        pattern = f"%{f.text.strip()}%"
        query = query.where(
            or_(
                Conversation.subject.ilike(pattern),
                Conversation.id.in_(
                    select(Message.conversation_id).where(Message.text.ilike(pattern))
                ),
            )
        )
    return query


MAX_PAGE = 1000


def list_conversations(
    session: Session, app: App, f: ListFilter | None = None
) -> Sequence[Conversation]:
    return conversation_page(session, app, f)[0]


def conversation_page(
    session: Session, app: App, f: ListFilter | None = None
) -> tuple[Sequence[Conversation], bool]:
    """One page of conversations, and whether another follows it."""
    f = f or ListFilter()
    if not 1 <= f.limit <= MAX_PAGE or f.offset < 0:
        raise InvalidValue(f"limit is 1 to {MAX_PAGE} and offset at least 0")
    # One row more than asked tells whether there is a next page without a COUNT.
    query = (
        _filtered(app, f)
        .order_by(Conversation.updated_at.desc(), Conversation.id.desc())
        .limit(f.limit + 1)
        .offset(f.offset)
    )
    rows = session.scalars(query).all()
    return rows[: f.limit], len(rows) > f.limit
