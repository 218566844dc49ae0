"""What the processing of one inbound mail carries from step to step, and the rules it runs under.

`ChannelRules` is what a channel's settings decide; `Processing` is the record each step of the
pipeline (channels/email/process.py) reads and enriches.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from channels.email.agent_forward import AgentForward
from channels.email.agent_reply import AgentMailPolicy
from channels.email.batch_index import BatchIndex, Ref
from channels.email.parse import ParsedMail, ParseLimits
from channels.email.tokens import AgentToken, CustomerToken, Keyring
from tickets import participants
from tickets.models import App, Conversation, Customer, InboundMail, Message


@dataclass(frozen=True)
class ChannelRules:
    """What the processing of one channel's mail depends on."""

    subject_threading: bool = True
    subject_threading_days: int = 14
    limits: ParseLimits = field(default_factory=ParseLimits)
    # Threading rule 1: the channel addresses a reply token can be attached to (`local+token@`)
    # and the keyring that verifies it. Without a keyring, rule 1 is off.
    channel_addresses: frozenset[str] = frozenset()
    keyring: Keyring | None = None
    # Agents answering notifications by email; None: agent tokens are quarantined unhandled.
    agent_mail: AgentMailPolicy | None = None
    # The most participants (people the customer copies) one conversation keeps.
    max_participants: int = participants.MAX_PARTICIPANTS


@dataclass
class Processing:
    session: Session
    row: InboundMail
    app: App
    rules: ChannelRules
    now: dt.datetime
    index: BatchIndex  # the batch's lookups, read once under its locks
    parsed: ParsedMail | None = None
    customer: Customer | None = None  # the sender's customer record, once a step looked it up
    customer_looked_up: bool = False  # True once a step searched: None then means "new sender"
    rule: str | None = None  # which threading rule matched
    outcome: str | None = None  # set by a step that ends the pipeline
    ended_by: str | None = None  # the name of that step
    duplicate_message_id: bool = False  # same Message-ID, different content: stored, flagged
    token: CustomerToken | AgentToken | None = None  # a verified reply token (rule 1)
    forward: AgentForward | None = None  # an agent's forward: `parsed` is the customer's mail
    # Extra flags a step wants stored on the message (agents see them); merged by step_store.
    flags: dict[str, Any] = field(default_factory=dict)
    new_refs: list[tuple[str, Ref]] = field(default_factory=list)  # written by step_store
    # The conversation and message by id: the store step may write them with Core statements,
    # and the ORM objects are loaded only if somebody asks (`explain`, tests).
    conversation_id: int | None = None
    message_id: int | None = None
    _conversation: Conversation | None = field(default=None, repr=False)
    _message: Message | None = field(default=None, repr=False)

    @property
    def conversation(self) -> Conversation | None:
        if self._conversation is None and self.conversation_id is not None:
            self._conversation = self.session.get(Conversation, self.conversation_id)
        return self._conversation

    @conversation.setter
    def conversation(self, value: Conversation | None) -> None:
        self._conversation = value
        self.conversation_id = value.id if value is not None else None

    @property
    def message(self) -> Message | None:
        if self._message is None and self.message_id is not None:
            self._message = self.session.get(Message, self.message_id)
        return self._message

    @message.setter
    def message(self, value: Message | None) -> None:
        self._message = value
        self.message_id = value.id if value is not None else None


def find_customer(p: Processing, address: str) -> Customer | None:
    """The sender's customer, through the batch's index."""
    return p.index.customer(p.app.id, address)
