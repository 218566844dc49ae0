"""Typed SQLAlchemy models: the gateway's whole state lives in these tables.

The conversation is the thread the customer knows; the ticket is an optional team-only layer on
top of exactly one conversation. Everything that must happen later (inbound mail to process,
outbox rows to send, SLA timers, snooze wake-ups) is a row here with its due time, so the broker
only ever delivers work the database already knows about.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

# Named constraints make migrations reproducible across SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[dt.datetime]):
    """Aware UTC datetimes in and out, on SQLite (which forgets the zone) as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


# SQLite only autoincrements INTEGER PRIMARY KEY; PostgreSQL gets BIGINT for busy tables.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dt.datetime: UtcDateTime(),
        dict[str, Any]: JSON(),
        list[Any]: JSON(),
    }


class StrEnum(enum.StrEnum):
    pass


class Role(StrEnum):
    AGENT = "agent"
    ADMIN = "admin"


class ConversationState(StrEnum):
    OPEN = "open"
    SNOOZED = "snoozed"
    RESOLVED = "resolved"
    CLOSED = "closed"


class Via(StrEnum):
    CHAT = "chat"
    EMAIL = "email"


class AuthorType(StrEnum):
    CUSTOMER = "customer"
    AGENT = "agent"
    SYSTEM = "system"


class TicketType(StrEnum):
    CUSTOMER = "customer"
    BACK_OFFICE = "back_office"
    TRACKER = "tracker"


class TicketStatus(StrEnum):
    OPEN = "open"
    IN_PROGRESS = "in_progress"
    WAITING_ON_CUSTOMER = "waiting_on_customer"
    RESOLVED = "resolved"


class Priority(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"


class InboundState(StrEnum):
    PENDING = "pending"
    PROCESSED = "processed"
    QUARANTINED = "quarantined"
    DISCARDED = "discarded"


class OutboxState(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    HELD = "held"


class TimerKind(StrEnum):
    FIRST_RESPONSE = "first_response"
    NEXT_RESPONSE = "next_response"
    RESOLUTION = "resolution"


class TimerState(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    MET = "met"
    BREACHED = "breached"


def _enum(cls: type[enum.Enum]) -> Enum:
    # Stored as plain strings (no native ENUM type): adding a value later needs no ALTER TYPE.
    return Enum(
        cls,
        native_enum=False,
        length=32,
        values_callable=lambda e: [m.value for m in e],
        validate_strings=True,
    )


class App(Base):
    __tablename__ = "apps"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    brand: Mapped[str] = mapped_column(String(200))
    default_locale: Mapped[str] = mapped_column(String(16), default="en")
    # The SLA policies of the config (with their calendars), synced like channels so that every
    # process, CLI or worker, starts and resumes timers by the same rules.
    sla_policies: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[dt.datetime]


class Agent(Base):
    __tablename__ = "agents"
    __table_args__ = (UniqueConstraint("app_id", "email", name="uq_agents_app_email"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id"), index=True)
    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[Role] = mapped_column(_enum(Role), default=Role.AGENT)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    notify_prefs: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # For signing in to the console with a password (tickets/sign_in.py); None: links only.
    password_hash: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[dt.datetime]

    addresses: Mapped[list[AgentAddress]] = relationship(
        back_populates="agent", cascade="all, delete-orphan"
    )


class AgentAddress(Base):
    """An address an agent may answer from; only verified ones are trusted for email replies."""

    __tablename__ = "agent_addresses"
    __table_args__ = (UniqueConstraint("app_id", "address", name="uq_agent_addresses_app_address"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id"))
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id"), index=True)
    address: Mapped[str] = mapped_column(String(320))
    verified: Mapped[bool] = mapped_column(Boolean, default=False)

    agent: Mapped[Agent] = relationship(back_populates="addresses")


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[dt.datetime]
    revoked_at: Mapped[dt.datetime | None]


class SignInLink(Base):
    """A one-time console sign-in link (tickets/sign_in.py); only its hash is stored."""

    __tablename__ = "sign_in_links"

    id: Mapped[int] = mapped_column(primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id"), index=True)
    link_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime]
    used_at: Mapped[dt.datetime | None]


class ConsoleSession(Base):
    """A signed-in browser of an agent; the cookie holds the secret, the row its hash."""

    __tablename__ = "console_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime]
    seen_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime]
    ended_at: Mapped[dt.datetime | None]


class ConversationRead(Base):
    """When an agent last opened a conversation: its customer messages after that are unread
    for that agent (tickets/reads.py)."""

    __tablename__ = "conversation_reads"

    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id"), primary_key=True)
    conversation_id: Mapped[int] = mapped_column(
        ForeignKey("conversations.id"), primary_key=True, index=True
    )
    read_at: Mapped[dt.datetime]


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id"), index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    locale: Mapped[str | None] = mapped_column(String(16))
    visitor_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    last_seen_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime]

    addresses: Mapped[list[CustomerAddress]] = relationship(
        back_populates="customer", cascade="all, delete-orphan", order_by="CustomerAddress.id"
    )


class CustomerAddress(Base):
    __tablename__ = "customer_addresses"
    __table_args__ = (
        UniqueConstraint("app_id", "address", name="uq_customer_addresses_app_address"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    address: Mapped[str] = mapped_column(String(320))
    bounced_at: Mapped[dt.datetime | None]
    bounce_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime]

    customer: Mapped[Customer] = relationship(back_populates="addresses")


class AddressClaim(Base):
    """An address a widget visitor gave, not theirs until they follow the link mailed to it.

    Kept apart from `customer_addresses` on purpose: a claim never routes mail, never receives
    any, and never makes two customers one. Only the link's hash is stored; it works once.
    """

    __tablename__ = "address_claims"

    id: Mapped[int] = mapped_column(primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id"))
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id"), index=True)
    address: Mapped[str] = mapped_column(String(320))
    link_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime]
    used_at: Mapped[dt.datetime | None]


class RateWindow(Base):
    """How often one key (a client address or a conversation, hashed, with the limit's name)
    was counted in the current fixed window: the widget's rate limits, shared by every
    gateway process through the database."""

    __tablename__ = "rate_windows"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    window_start: Mapped[dt.datetime] = mapped_column(index=True)
    count: Mapped[int] = mapped_column(Integer)


class Channel(Base):
    __tablename__ = "channels"
    __table_args__ = (UniqueConstraint("app_id", "name", name="uq_channels_app_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    verified_at: Mapped[dt.datetime | None]
    last_test: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[dt.datetime]

    addresses: Mapped[list[ChannelAddress]] = relationship(
        back_populates="channel", cascade="all, delete-orphan", order_by="ChannelAddress.id"
    )


class ChannelAddress(Base):
    """An address mail is accepted for; unique across apps so routing is unambiguous."""

    __tablename__ = "channel_addresses"

    id: Mapped[int] = mapped_column(primary_key=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id"), index=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)

    channel: Mapped[Channel] = relationship(back_populates="addresses")


class AppDomain(Base):
    """A mail domain an app may use, or is proving it may use.

    Proven means granted by the operator (`proof` "config" or "operator") or shown by the app
    with a DNS TXT record carrying `token` ("dns"). A domain is proven for at most one app (the
    partial unique index, so two concurrent proofs cannot both win); several apps may have a
    pending proof for the same domain, since starting one proves nothing.
    """

    __tablename__ = "app_domains"
    __table_args__ = (
        UniqueConstraint("app_id", "domain", name="uq_app_domains_app_domain"),
        Index(
            "uq_app_domains_proven_domain",
            "domain",
            unique=True,
            sqlite_where=text("proven_at IS NOT NULL"),
            postgresql_where=text("proven_at IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id"), index=True)
    domain: Mapped[str] = mapped_column(String(253))
    token: Mapped[str] = mapped_column(String(64))
    proof: Mapped[str | None] = mapped_column(String(16))  # config, operator, dns; None: pending
    created_at: Mapped[dt.datetime]
    proven_at: Mapped[dt.datetime | None]
    checked_at: Mapped[dt.datetime | None]
    last_check: Mapped[str | None] = mapped_column(Text)  # what the last DNS check found


class Tag(Base):
    __tablename__ = "tags"
    __table_args__ = (UniqueConstraint("app_id", "name", name="uq_tags_app_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id"))
    name: Mapped[str] = mapped_column(String(100))


class ConversationTag(Base):
    __tablename__ = "conversation_tags"

    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id"), primary_key=True)
    tag_id: Mapped[int] = mapped_column(ForeignKey("tags.id"), primary_key=True)


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (Index("ix_conversations_app_state", "app_id", "state", "updated_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    channel_id: Mapped[int | None] = mapped_column(ForeignKey("channels.id"))
    started_via: Mapped[Via] = mapped_column(_enum(Via))
    # The customer's own words: the subject they wrote, or the start of their first chat line.
    subject: Mapped[str] = mapped_column(String(998), default="")
    state: Mapped[ConversationState] = mapped_column(
        _enum(ConversationState), default=ConversationState.OPEN
    )
    snoozed_until: Mapped[dt.datetime | None] = mapped_column(index=True)
    last_customer_message_at: Mapped[dt.datetime | None]
    customer_last_read_at: Mapped[dt.datetime | None]
    # Set while public team messages wait for the customer; the email goes out once this is
    # older than the grace period and they are still unread (None: nothing waits).
    email_pending_since: Mapped[dt.datetime | None] = mapped_column(index=True)
    # Why waiting messages cannot go out by email (no channel, no deliverable address).
    delivery_warning: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]

    customer: Mapped[Customer] = relationship()
    messages: Mapped[list[Message]] = relationship(
        back_populates="conversation", order_by="Message.id", cascade="all, delete-orphan"
    )
    notes: Mapped[list[Note]] = relationship(
        back_populates="conversation", order_by="Note.id", cascade="all, delete-orphan"
    )
    ticket: Mapped[Ticket | None] = relationship(back_populates="conversation", uselist=False)
    tags: Mapped[list[Tag]] = relationship(secondary="conversation_tags", order_by="Tag.name")
    participants: Mapped[list[Participant]] = relationship(
        back_populates="conversation", order_by="Participant.id", cascade="all, delete-orphan"
    )


class Participant(Base):
    """An address kept in the loop of a conversation: copied by the customer on their mail, or
    added by an agent. Our replies Cc it and its answers thread in as its own; it is no customer
    (no conversations of its own come from being copied) and never an agent or one of ours."""

    __tablename__ = "participants"
    __table_args__ = (
        UniqueConstraint("conversation_id", "address", name="uq_participants_conversation_address"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id"))
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id"))
    address: Mapped[str] = mapped_column(String(320))
    name: Mapped[str | None] = mapped_column(String(200))
    added_by: Mapped[str] = mapped_column(String(16))  # customer (their Cc) or agent
    bounced_at: Mapped[dt.datetime | None]  # a permanent bounce: no longer copied
    created_at: Mapped[dt.datetime]

    conversation: Mapped[Conversation] = relationship(back_populates="participants")


class Message(Base):
    """A public entry of a conversation: the customer may see every row of this table."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id"), index=True)
    author_type: Mapped[AuthorType] = mapped_column(_enum(AuthorType))
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id"))
    via: Mapped[Via] = mapped_column(_enum(Via))
    text: Mapped[str] = mapped_column(Text)
    html: Mapped[str | None] = mapped_column(Text)
    # What stripping cut from an email, kept so an agent can always see it.
    quoted_text: Mapped[str | None] = mapped_column(Text)
    signature: Mapped[str | None] = mapped_column(Text)
    email_message_id: Mapped[str | None] = mapped_column(String(998))
    inbound_mail_id: Mapped[int | None] = mapped_column(ForeignKey("inbound_mail.id"))
    from_address: Mapped[str | None] = mapped_column(String(320))
    is_auto_reply: Mapped[bool] = mapped_column(Boolean, default=False)
    flags: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Delivery by email of an agent message: None (not by email), pending, sent, failed, bounced.
    delivery_state: Mapped[str | None] = mapped_column(String(16))
    delivery_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime]

    conversation: Mapped[Conversation] = relationship(back_populates="messages")
    agent: Mapped[Agent | None] = relationship()
    attachments: Mapped[list[Attachment]] = relationship(
        back_populates="message", cascade="all, delete-orphan", order_by="Attachment.id"
    )


class Attachment(Base):
    __tablename__ = "attachments"

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(Integer)
    content_id: Mapped[str | None] = mapped_column(String(998))
    inline: Mapped[bool] = mapped_column(Boolean, default=False)
    content: Mapped[bytes] = mapped_column(LargeBinary)

    message: Mapped[Message] = relationship(back_populates="attachments")


class Note(Base):
    """An internal entry: team only, never in anything the customer can reach."""

    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id"), index=True)
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id"))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime]

    conversation: Mapped[Conversation] = relationship(back_populates="notes")
    agent: Mapped[Agent | None] = relationship()


class Ticket(Base):
    __tablename__ = "tickets"
    __table_args__ = (
        UniqueConstraint("app_id", "number", name="uq_tickets_app_number"),
        Index("ix_tickets_app_status", "app_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id"))
    number: Mapped[int] = mapped_column(Integer)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id"), unique=True)
    type: Mapped[TicketType] = mapped_column(_enum(TicketType))
    status: Mapped[TicketStatus] = mapped_column(_enum(TicketStatus), default=TicketStatus.OPEN)
    priority: Mapped[Priority] = mapped_column(_enum(Priority), default=Priority.NORMAL)
    category: Mapped[str | None] = mapped_column(String(100))
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id"), index=True)
    tracker_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"), index=True)
    title: Mapped[str | None] = mapped_column(String(300))
    summary: Mapped[str | None] = mapped_column(Text)
    snoozed_until: Mapped[dt.datetime | None]
    # None while the convert-time check is pending.
    email_check: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Background work on this ticket that is due (NULL once done), indexed for the sweep.
    email_check_due_at: Mapped[dt.datetime | None] = mapped_column(index=True)
    summary_due_at: Mapped[dt.datetime | None] = mapped_column(index=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id"))
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]
    resolved_at: Mapped[dt.datetime | None]

    conversation: Mapped[Conversation] = relationship(back_populates="ticket")
    assignee: Mapped[Agent | None] = relationship(foreign_keys=[assignee_id])
    tracker: Mapped[Ticket | None] = relationship(remote_side=[id], foreign_keys=[tracker_id])
    timers: Mapped[list[SlaTimer]] = relationship(
        back_populates="ticket", order_by="SlaTimer.id", cascade="all, delete-orphan"
    )


class SlaTimer(Base):
    __tablename__ = "sla_timers"
    __table_args__ = (Index("ix_sla_timers_due", "state", "due_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    kind: Mapped[TimerKind] = mapped_column(_enum(TimerKind))
    policy: Mapped[str] = mapped_column(String(100))
    state: Mapped[TimerState] = mapped_column(_enum(TimerState), default=TimerState.RUNNING)
    started_at: Mapped[dt.datetime]
    due_at: Mapped[dt.datetime | None]
    warn_due_at: Mapped[dt.datetime | None] = mapped_column(index=True)
    warned: Mapped[bool] = mapped_column(Boolean, default=False)
    paused_at: Mapped[dt.datetime | None]
    # Business time already used when paused; due_at is recomputed from it on resume.
    used_seconds: Mapped[int] = mapped_column(Integer, default=0)
    target_seconds: Mapped[int] = mapped_column(Integer)
    ended_at: Mapped[dt.datetime | None]

    ticket: Mapped[Ticket] = relationship(back_populates="timers")


class InboundMail(Base):
    """A message the gateway has taken responsibility for: its bytes are kept until discarded."""

    __tablename__ = "inbound_mail"
    __table_args__ = (Index("ix_inbound_mail_state", "state", "received_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    app_id: Mapped[int | None] = mapped_column(ForeignKey("apps.id"))
    channel_id: Mapped[int | None] = mapped_column(ForeignKey("channels.id"))
    source: Mapped[str] = mapped_column(String(16))  # smtp, imap, import
    # Unique per source (IMAP account+UIDVALIDITY+UID, import file digest) so a re-fetch is a no-op.
    source_key: Mapped[str | None] = mapped_column(String(512), unique=True)
    peer: Mapped[str | None] = mapped_column(String(255))
    envelope_from: Mapped[str | None] = mapped_column(String(998))
    envelope_to: Mapped[list[Any]] = mapped_column(default=list)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    state: Mapped[InboundState] = mapped_column(_enum(InboundState), default=InboundState.PENDING)
    reason: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    received_at: Mapped[dt.datetime]
    processed_at: Mapped[dt.datetime | None]
    message_id: Mapped[int | None] = mapped_column(Integer)


class ImapFolder(Base):
    """How far the poller of one mailbox folder got, per UIDVALIDITY: the highest UID it has
    looked at (stored, found stored under another key, or left as older than the backfill
    window on the first poll).

    A bookmark, not the record: the stored source keys are. It is moved after a poll's mail
    is committed and marked, so after a crash it may lag behind, which only makes the next
    poll look at a few stored messages again; it never runs ahead of what was handled.
    """

    __tablename__ = "imap_folders"
    __table_args__ = (
        UniqueConstraint(
            "account", "folder", "uidvalidity", name="uq_imap_folders_account_folder_uidvalidity"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    account: Mapped[str] = mapped_column(String(200))
    folder: Mapped[str] = mapped_column(String(998))
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[dt.datetime]


class ThreadRef(Base):
    """Every Message-ID we know for an app, ours and theirs, pointing at its conversation."""

    __tablename__ = "thread_refs"
    __table_args__ = (Index("ix_thread_refs_lookup", "app_id", "message_id_header"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id"))
    message_id_header: Mapped[str] = mapped_column(String(998))
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id"), index=True)
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"))
    outbound: Mapped[bool] = mapped_column(Boolean, default=False)
    content_sha256: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime]


class Outbox(Base):
    """One email to send; its Message-ID is fixed before the first attempt."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_due", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id"))
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id"), index=True)
    channel_id: Mapped[int | None] = mapped_column(ForeignKey("channels.id"))
    kind: Mapped[str] = mapped_column(String(32))  # customer, agent_notification, system
    message_id_header: Mapped[str] = mapped_column(String(998), unique=True)
    mail_from: Mapped[str] = mapped_column(String(998))
    recipients: Mapped[list[Any]] = mapped_column(default=list)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    message_ids: Mapped[list[Any]] = mapped_column(default=list)  # the messages this email carries
    # Where each recipient stands (channels/email/outbox.py): one SMTP transaction each, so a
    # retry goes only to those the relay has not yet accepted. None on rows queued before.
    recipient_states: Mapped[list[Any] | None]
    state: Mapped[OutboxState] = mapped_column(_enum(OutboxState), default=OutboxState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    # The claim of the attempt in flight (state `sending`): only its holder may finish it.
    attempt_id: Mapped[str | None] = mapped_column(String(32))
    claimed_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime]
    sent_at: Mapped[dt.datetime | None]


class Event(Base):
    """The audit trail: who did what to which conversation or ticket, and when."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_conversation", "conversation_id", "id"),
        Index(
            "ix_events_unnotified",
            "id",
            sqlite_where=text("notified_at IS NULL"),
            postgresql_where=text("notified_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id"))
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id"))
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    actor_type: Mapped[str] = mapped_column(String(16))  # agent, customer, system
    actor_id: Mapped[int | None] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime]
    # Set once agent notifications for this event have been decided (tickets/notifications.py).
    notified_at: Mapped[dt.datetime | None]


class AgentNotification(Base):
    """One notification email an agent is owed about one conversation: the events of a short
    window, collected into one row until the email goes out (at once, or in a digest).

    While `sent_at` is NULL the row is pending and collects further events of its agent,
    conversation and stream (at most one such row: the partial unique index); once set the email
    is in the outbox (`outbox_id`; several rows share one when folded into a digest) and the row
    is history, which the next window and the hourly limit are measured against.
    """

    __tablename__ = "agent_notifications"
    __table_args__ = (
        Index("ix_agent_notifications_due", "sent_at", "due_at"),
        Index("ix_agent_notifications_agent_sent", "agent_id", "sent_at"),
        Index("ix_agent_notifications_conversation", "conversation_id", "agent_id"),
        Index(
            "uq_agent_notifications_pending",
            "agent_id",
            "conversation_id",
            "stream",
            "digest",
            unique=True,
            sqlite_where=text("sent_at IS NULL"),
            postgresql_where=text("sent_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id"))
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id"))
    # The headline: the weightiest event collected so far, whose kind names the email.
    event_id: Mapped[int] = mapped_column(BigId, ForeignKey("events.id"))
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id"))
    kind: Mapped[str] = mapped_column(String(32))
    # "conversation", or "rejected" for notices about the agent's own rejected mail, which
    # carry no reply address and so never share an email with the conversation's news.
    stream: Mapped[str] = mapped_column(String(16), default="conversation")
    # The collected event ids (bounded; `event_count` keeps counting past the bound).
    events: Mapped[list[Any]] = mapped_column(default=list)
    event_count: Mapped[int] = mapped_column(Integer, default=1)
    digest: Mapped[bool] = mapped_column(Boolean, default=False)
    due_at: Mapped[dt.datetime]
    sent_at: Mapped[dt.datetime | None]
    outbox_id: Mapped[int | None] = mapped_column(BigId)
    created_at: Mapped[dt.datetime]


class Lease(Base):
    """A named lease (the scheduler's leadership): held until `expires_at` unless renewed."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[dt.datetime]
