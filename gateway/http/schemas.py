"""Request and answer models of the HTTP API; the answers mirror `gateway.views` key for key.

They exist so that /openapi.json describes exactly what the API returns (schemathesis checks
every answer against it) and so bad input is a 422 with the field and the reason.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.config import JsonDict

from tickets.business_time import parse_duration

Priority = Literal["low", "normal", "high", "urgent"]
Status = Literal["open", "in_progress", "waiting_on_customer", "resolved"]
TicketType = Literal["customer", "back_office", "tracker"]
State = Literal["open", "snoozed", "resolved", "closed"]
RoleName = Literal["agent", "admin"]

# For generated clients and schemathesis; the service still validates every address.
EMAIL: JsonDict = {"format": "email"}

# Bounded strings keep absurd input (a megabyte tag) a 422 rather than a database error.
Text = Field(min_length=1, max_length=100_000)


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _storable(self) -> Body:
        for _name, value in self:
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, str):
                    check_text(item)
        return self


class Problem(BaseModel):
    detail: str


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error answers a router gives, each a `Problem`."""
    what = {
        400: "Bad input: the message says what is wrong",
        401: "No API token, or not a valid one",
        403: "The token's agent lacks the admin role",
        404: "No such thing in the caller's app",
        409: "Not possible in the current state",
        429: "Too many requests: wait the seconds Retry-After gives",
    }
    # Errors are JSON even on routes whose success answer is a page.
    return {
        code: {
            "model": Problem,
            "description": what[code],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for code in codes
    }


class CustomerOut(BaseModel):
    id: int
    name: str | None
    email: str | None
    emails: list[str]
    undeliverable: list[str]


class TicketSummaryOut(BaseModel):
    number: int
    type: TicketType
    status: Status
    priority: Priority
    category: str | None
    assignee: str | None
    snoozed_until: dt.datetime | None


class EmailCheckOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    ok: bool
    reason: str | None = None
    setup_url: str | None = None


class TimerOut(BaseModel):
    kind: Literal["first_response", "next_response", "resolution"]
    policy: str
    state: Literal["running", "paused", "met", "breached"]
    due_at: dt.datetime | None
    warned: bool


class TicketDetailOut(TicketSummaryOut):
    title: str | None
    summary: str | None
    email_check: EmailCheckOut | None
    tracker: int | None
    created_at: dt.datetime | None
    resolved_at: dt.datetime | None
    sla: list[TimerOut]


class ConversationSummaryOut(BaseModel):
    id: int
    customer: CustomerOut
    state: State
    subject: str
    started_via: Literal["chat", "email"]
    snoozed_until: dt.datetime | None
    tags: list[str]
    created_at: dt.datetime | None
    updated_at: dt.datetime | None
    ticket: TicketSummaryOut | None
    delivery_warning: str | None = None


class AttachmentOut(BaseModel):
    id: int
    filename: str
    content_type: str
    size: int


class MessageOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    id: int
    author_type: Literal["customer", "agent", "system"]
    author: str | None
    via: Literal["chat", "email"]
    text: str
    quoted_text: str | None
    signature: str | None
    from_: str | None = Field(alias="from")
    is_auto_reply: bool
    flags: dict[str, Any]
    delivery_state: str | None
    delivery_error: str | None
    attachments: list[AttachmentOut]
    created_at: dt.datetime | None


class NoteOut(BaseModel):
    id: int
    author: str | None
    text: str
    created_at: dt.datetime | None


class EventOut(BaseModel):
    kind: str
    actor_type: str
    actor_id: int | None
    data: dict[str, Any]
    created_at: dt.datetime | None


class ParticipantOut(BaseModel):
    email: str
    name: str | None
    added_by: Literal["customer", "agent"]
    undeliverable: bool
    created_at: dt.datetime | None


class ConversationOut(ConversationSummaryOut):
    messages: list[MessageOut]
    notes: list[NoteOut]
    participants: list[ParticipantOut] = Field(
        default=[], description="Copied on every email of the conversation; answers thread in."
    )
    ticket: TicketDetailOut | None
    events: list[EventOut] = []
    convert_hints: list[str] | None = Field(
        default=None,
        description="Why the team might convert it (a hint, never a rule); null once converted.",
    )


class ConvertedOut(ConversationOut):
    warning: str | None = Field(
        description="The convert-time check's warning (no usable email route), null when fine "
        "or still pending."
    )


class Page(BaseModel):
    items: list[ConversationSummaryOut]
    limit: int
    offset: int
    next_offset: int | None


# --- requests -----------------------------------------------------------------------------


class ConvertIn(Body):
    type: TicketType = "customer"
    priority: Priority = "normal"
    assignee: str | None = Field(default=None, max_length=320, description="agent email")
    category: str | None = Field(default=None, max_length=100)


class TextIn(Body):
    text: str = Text


class AssignIn(Body):
    assignee: str | None = Field(max_length=320, description="agent email; null unassigns")


class StatusIn(Body):
    status: Status


class PriorityIn(Body):
    priority: Priority


class CategoryIn(Body):
    category: str | None = Field(max_length=100)


class TagIn(Body):
    tag: str = Field(min_length=1, max_length=100)


class ParticipantIn(Body):
    email: str = Field(min_length=3, max_length=320, json_schema_extra=EMAIL)
    name: str | None = Field(default=None, max_length=200)


class SnoozeIn(Body):
    until: dt.datetime | None = Field(default=None, description="ISO 8601; without zone: UTC")
    duration: str | None = Field(
        default=None, max_length=20, description='from now, like "30m", "4h" or "2d"'
    )

    @field_validator("duration")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        # The one duration parser: a malformed or far too long one is a 422 saying which.
        if value is not None:
            parse_duration(value)
        return value


class TrackerIn(Body):
    tracker: int | None = Field(
        ge=1, le=2**31 - 1, description="conversation id of the tracker; null unlinks"
    )


class MessageCreated(BaseModel):
    id: int
    created_at: dt.datetime


class MeOut(BaseModel):
    id: int
    email: str
    name: str
    role: RoleName
    app: str


def check_text(value: str) -> str:
    """Text the database can store: no NUL (PostgreSQL refuses it), valid Unicode only."""
    if "\x00" in value:
        raise ValueError("text must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text must be valid Unicode (no lone surrogates)") from None
    return value


# --- admin ----------------------------------------------------------------------------------


class AgentAddressOut(BaseModel):
    address: str
    verified: bool


class AgentOut(BaseModel):
    id: int
    email: str
    name: str
    role: RoleName
    active: bool
    addresses: list[AgentAddressOut]


class AgentIn(Body):
    email: str = Field(min_length=3, max_length=320, json_schema_extra=EMAIL)
    name: str = Field(min_length=1, max_length=200)
    role: RoleName = "agent"


class RoleIn(Body):
    role: RoleName


class AddressIn(Body):
    address: str = Field(min_length=3, max_length=320, json_schema_extra=EMAIL)
    verified: bool = Field(
        default=True, description="an admin vouches for the address; false keeps it untrusted"
    )


class TokenIn(Body):
    label: str = Field(default="", max_length=200)


class TokenOut(BaseModel):
    id: int
    label: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None


class TokenCreated(TokenOut):
    token: str = Field(description="shown once: only its digest is stored")


Address = Annotated[str, Field(max_length=320, json_schema_extra=EMAIL)]


class _ServerIn(Body):
    """A mail server an app admin names. Its password goes in by value, write-only; naming an
    environment variable or file of the server is the operator's alone (config file)."""

    @model_validator(mode="before")
    @classmethod
    def _by_value_only(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if isinstance(key, str) and key.endswith(("_env", "_file")):
                    raise ValueError(
                        f"{key}: give the password itself ('password'); environment variables "
                        "and files on the server can be named only in the operator's config file"
                    )
        return data


class ImapIn(_ServerIn):
    host: str = Field(min_length=1, max_length=255)
    port: int = Field(default=993, ge=1, le=65535)
    ssl: bool = True
    starttls: bool = False
    username: str = Field(min_length=1, max_length=320)
    password: str | None = Field(default=None, max_length=1000, description="write-only")
    folder: str = Field(default="INBOX", min_length=1, max_length=200)
    processed_folder: str | None = Field(default=None, max_length=200)


class SmtpIn(_ServerIn):
    host: str = Field(min_length=1, max_length=255)
    port: int = Field(default=587, ge=1, le=65535)
    starttls: bool = True
    tls: bool = False
    username: str | None = Field(default=None, max_length=320)
    password: str | None = Field(default=None, max_length=1000, description="write-only")


class ChannelIn(Body):
    name: str = Field(min_length=1, max_length=100)
    addresses: list[Address] = Field(min_length=1, max_length=50)
    imap: ImapIn | None = None
    smtp: SmtpIn | None = Field(default=None, description="own relay; default: [outbound]")


class ChannelPatch(Body):
    addresses: list[Address] | None = Field(default=None, min_length=1, max_length=50)
    imap: ImapIn | None = None
    smtp: SmtpIn | None = None
    clear: list[Literal["imap", "smtp"]] = Field(default=[], max_length=2)


class ImapOut(BaseModel):
    host: str
    port: int
    ssl: bool
    starttls: bool
    username: str
    folder: str
    has_password: bool


class SmtpOut(BaseModel):
    host: str
    port: int
    starttls: bool
    tls: bool
    username: str | None
    has_password: bool


class CheckStepOut(BaseModel):
    name: str
    ok: bool
    detail: str
    hint: str | None


class CheckOut(BaseModel):
    ok: bool
    checked_at: dt.datetime
    message: str
    hint: str | None
    steps: list[CheckStepOut]


class ChannelOut(BaseModel):
    id: int
    name: str
    addresses: list[str]
    enabled: bool
    source: str
    imap: ImapOut | None
    smtp: SmtpOut | None
    verified_at: dt.datetime | None
    last_test: CheckOut | None
    unproven_addresses: list[str] = Field(
        default=[],
        description="addresses whose domain this app has not proven: mail to them is refused "
        "and nothing is sent from them until it is (see /api/v1/admin/domains)",
    )


class CheckIn(Body):
    timeout: float = Field(default=60, gt=0, le=300, description="seconds to wait for the mail")


class CalendarOut(BaseModel):
    name: str
    timezone: str
    hours: dict[str, str | list[str]]
    holidays: list[str]


class SlaPolicyOut(BaseModel):
    name: str
    priorities: list[Priority]
    categories: list[str]
    first_response: str | None
    next_response: str | None
    resolution: str | None
    calendar: str
    warn_at: float


class DomainIn(Body):
    domain: str = Field(min_length=1, max_length=253, description="e.g. example.com")


class DnsRecordOut(BaseModel):
    name: str
    type: Literal["TXT"]
    value: str


class DomainOut(BaseModel):
    domain: str
    state: Literal["proven", "pending"]
    proof: Literal["config", "operator", "dns"] | None = Field(
        description="who proved it: the config file's or the operator's grant, or DNS"
    )
    proven_at: dt.datetime | None
    record: DnsRecordOut | None = Field(description="the TXT record that proves it by DNS")
    checked_at: dt.datetime | None
    last_check: str | None = Field(description="what the last DNS check found")
