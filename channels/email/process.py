"""Turn one stored inbound mail into a message of the right conversation.

A pipeline of named steps, run in order inside the caller's transaction (Mailman's handler
pipeline): parse -> filter -> route -> dedupe -> thread -> store -> effects. A step either
enriches the `Processing` record or ends the pipeline with an outcome; any exception means the
mail is quarantined by the caller, with its bytes, and can be reprocessed later.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy import insert, select, text
from sqlalchemy.orm import Session, joinedload, selectinload

from channels.email import bounce_ties
from channels.email.addresses import header_addresses
from channels.email.agent_forward import AgentForward, finish_agent_forward, read_agent_forward
from channels.email.agent_reply import AgentMailPolicy, attachment_rows, handle_agent_mail
from channels.email.headers import header_section
from channels.email.isolate import parse_isolated
from channels.email.loop import LOOP_HEADER, has_loop_mark, sent_by_us
from channels.email.parse import MessageRejected, ParsedMail, ParseLimits
from channels.email.tokens import AgentToken, CustomerToken, Keyring, TokenError, find_token
from tickets import participants, services
from tickets.models import (
    App,
    Conversation,
    ConversationState,
    Customer,
    CustomerAddress,
    InboundMail,
    Message,
    ThreadRef,
    Via,
)

_SUBJECT_PREFIX = re.compile(
    r"^\s*((re|aw|sv|vs|antw|fwd?|wg|tr|rv|r|odp|ynt|enc)\s*(\[\d+\])?\s*:\s*)+", re.IGNORECASE
)


@dataclass(frozen=True)
class ChannelRules:
    """What the processing of one channel's mail depends on."""

    own_domains: frozenset[str]
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


class Ref(NamedTuple):
    """A stored Message-ID: which conversation and message it belongs to."""

    conversation_id: int
    message_id: int | None
    outbound: bool
    content_sha256: str | None


class BatchIndex:
    """What the mails of one processing transaction look up, read with one query each.

    The thread refs of every Message-ID the batch's mails carry or cite, the conversations
    they point at (with customer, addresses and ticket), and the customers of the senders.
    A mail stored by `step_store` adds its refs once it is through (`keep`); anything else
    that may have written refs or customers (an agent's mail, a bounce, a failure) makes it
    `forget`, and later lookups ask the database again.

    Only for a transaction that holds the database's single write lock (SQLite): with
    concurrent writers (PostgreSQL workers) a read made before the dedupe lock could be stale.
    """

    def __init__(self, session: Session) -> None:
        self.session = session
        self._refs: dict[tuple[int, str], list[Ref]] = {}
        self._customers: dict[tuple[int, str], Customer | None] = {}
        self._sent: dict[str, bool] = {}  # Message-ID -> one of our outbox rows carries it
        self._held: list[object] = []  # strong references: the identity map is weak

    def load(self, app_id: int, parsed: list[ParsedMail]) -> None:
        mids = {
            mid
            for mail in parsed
            for mid in (
                mail.message_id,
                *mail.original_message_ids,
                mail.in_reply_to,
                *mail.references,
            )
            if mid
        }
        self.refs(app_id, mids)
        self._load_sent(mail.message_id for mail in parsed)
        conversation_ids = {
            ref.conversation_id for mid in mids for ref in self._refs.get((app_id, mid), ())
        }
        if conversation_ids:
            self._held += self.session.scalars(
                select(Conversation)
                .where(Conversation.id.in_(conversation_ids))
                .options(
                    joinedload(Conversation.customer).selectinload(Customer.addresses),
                    selectinload(Conversation.ticket),
                )
            ).all()
        self._load_customers(app_id, {mail.from_address for mail in parsed if mail.from_address})

    def _load_customers(self, app_id: int, addresses: Iterable[str]) -> None:
        wanted = [a for a in {a.lower() for a in addresses} if (app_id, a) not in self._customers]
        if not wanted:
            return
        for address in wanted:
            self._customers[(app_id, address)] = None
        for customer, address in self.session.execute(
            select(Customer, CustomerAddress.address)
            .join(CustomerAddress, CustomerAddress.customer_id == Customer.id)
            .where(CustomerAddress.app_id == app_id, CustomerAddress.address.in_(wanted))
        ):
            self._customers[(app_id, address)] = customer
            self._held.append(customer)

    def _load_sent(self, mids: Iterable[str | None]) -> None:
        wanted = [mid for mid in dict.fromkeys(mids) if mid and mid not in self._sent]
        ours = sent_by_us(self.session, wanted)
        self._sent.update({mid: mid in ours for mid in wanted})

    def sent_by_us(self, message_id: str) -> bool:
        """Whether one of our outbox rows carries this Message-ID."""
        self._load_sent([message_id])
        return self._sent[message_id]

    def refs(self, app_id: int, mids: Iterable[str]) -> list[Ref]:
        """The refs of these Message-IDs, oldest first per Message-ID."""
        mids = list(dict.fromkeys(mids))
        missing = [mid for mid in mids if (app_id, mid) not in self._refs]
        if missing:
            for mid in missing:
                self._refs[(app_id, mid)] = []
            for row in self.session.execute(
                select(
                    ThreadRef.message_id_header,
                    ThreadRef.conversation_id,
                    ThreadRef.message_id,
                    ThreadRef.outbound,
                    ThreadRef.content_sha256,
                )
                .where(ThreadRef.app_id == app_id, ThreadRef.message_id_header.in_(missing))
                .order_by(ThreadRef.id)
            ):
                self._refs[(app_id, row[0])].append(Ref(*row[1:]))
        return [ref for mid in mids for ref in self._refs[(app_id, mid)]]

    def customer(self, app_id: int, address: str) -> Customer | None:
        """The customer who owns this address (as `services.find_customer_by_address`)."""
        self._load_customers(app_id, [address])
        return self._customers[(app_id, address.lower())]

    def keep(self, p: Processing) -> None:
        """Take in what a processed mail stored (after its savepoint was released)."""
        if p.ended_by not in ("store", "dedupe", "own-loop"):
            self.forget()  # an agent's mail or a bounce: it may have written what we hold
            return
        for mid, ref in p.new_refs:
            # Newest last, as the query orders them; a Message-ID not asked for yet stays
            # unknown, so that its first lookup still reads the older ones.
            if (p.app.id, mid) in self._refs:
                self._refs[(p.app.id, mid)].append(ref)
        if p.parsed is not None and p.ended_by == "store":
            self._customers.pop((p.app.id, p.parsed.from_address.lower()), None)

    def forget(self) -> None:
        self._refs.clear()
        self._customers.clear()


@dataclass
class Processing:
    session: Session
    row: InboundMail
    app: App
    rules: ChannelRules
    now: dt.datetime
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
    # The batch's lookups, read once (None: each step asks the database itself).
    index: BatchIndex | None = None
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


def normalized_subject(subject: str) -> str:
    return " ".join(_SUBJECT_PREFIX.sub("", subject).split()).casefold()


def body_digest(parsed: ParsedMail) -> str:
    return hashlib.sha256((parsed.subject + "\0" + parsed.text).encode()).hexdigest()


def step_parse(p: Processing) -> None:
    if p.parsed is None:  # the caller may have parsed already, outside its transaction
        p.parsed = parse_isolated(p.row.raw, p.rules.limits, envelope_from=p.row.envelope_from)
    # A bounce needs no readable From: the daemons that write `<Postmaster\@host@relay>`
    # still report a failure, which step_bounce applies or keeps without threading it.
    if not p.parsed.from_address and p.parsed.bounce is None:
        raise MessageRejected(p.parsed.sender_problem or "no sender address (From)")


def step_own_loop(p: Processing) -> None:
    """Drop our own mail coming back, and only that (see channels/email/loop.py): a mail from
    our own domain that we did not send is an employee's, and goes on like any other."""
    assert p.parsed
    if _has_loop_mark(p):
        p.outcome = f"dropped our own mail ({LOOP_HEADER})"
    elif p.parsed.message_id and _sent_by_us(p, p.parsed.message_id):
        p.outcome = "dropped our own mail (a Message-ID we sent)"


def _has_loop_mark(p: Processing) -> bool:
    keyring = p.rules.keyring or (p.rules.agent_mail.keyring if p.rules.agent_mail else None)
    return has_loop_mark(p.row.raw, keyring)


def _sent_by_us(p: Processing, message_id: str) -> bool:
    if p.index is not None:
        return p.index.sent_by_us(message_id)
    return bool(sent_by_us(p.session, [message_id]))


def step_agent_mail(p: Processing) -> None:
    """An agent's answer to a notification (an agent token, or an agent's address writing to a
    token address) is posted or rejected here and never reaches the customer path. Runs before
    the Message-ID loop check, which would take an agent on the support domain (Apple Mail
    puts the sender's domain in Message-IDs) for our own mail."""
    assert p.parsed
    if p.rules.agent_mail is None or _has_loop_mark(p):
        return
    result = handle_agent_mail(p.session, p.app, p.row, p.parsed, p.rules.agent_mail, p.now)
    if result is not None:
        p.conversation = p.session.get(Conversation, result.conversation_id)
        p.rule = "agent token"
        p.outcome = result.outcome


def step_bounce(p: Processing) -> None:
    """A bounce is applied only when it is tied to one of our emails (see bounce_ties.py);
    it, and any mail to one of our return paths, ends here: never threaded as a customer's."""
    assert p.parsed
    recipients = [*map(str, p.row.envelope_to or ()), *p.parsed.to, *p.parsed.cc]
    token = bounce_ties.return_path_token(p.rules.keyring, p.app.id, recipients)
    bounce = p.parsed.bounce
    if bounce is None and token is None:
        return
    tied = bounce_ties.tie(p.session, p.app.id, token, bounce)
    if bounce is None:
        assert token is not None
        p.outcome = (
            f"mail to the return path of email {token.outbox_id} that is not a delivery "
            "report: not applied"
        )
    elif tied is None:
        p.outcome = f"{bounce_ties.describe(bounce)} {bounce_ties.NOT_TIED}: not applied"
    else:
        p.outcome = bounce_ties.apply(p.session, tied, bounce, p.now)


def step_spam(p: Processing) -> None:
    assert p.parsed
    if p.parsed.spam:
        raise SpamFlagged("flagged as spam by the upstream filter")


def step_agent_forward(p: Processing) -> None:
    """An agent's forward of a customer's mail goes on as that customer's mail (see
    channels/email/agent_forward.py); one that cannot be followed stays the sender's, and says
    why. Before dedupe, which compares what is stored: the customer's message."""
    assert p.parsed
    if p.rules.agent_mail is None:
        return
    found = read_agent_forward(
        p.session, p.app, p.row, p.parsed, p.rules.agent_mail, p.rules.limits, p.now
    )
    if isinstance(found, AgentForward):
        p.forward, p.parsed = found, found.original
        p.flags["forwarded_by"] = found.flag()
    elif found is not None:
        p.flags["forward_not_followed"] = str(found)


class SpamFlagged(MessageRejected):
    """Kept in quarantine, not dropped: an agent can release a false positive."""


def _ref(session: Session, app_id: int, message_id: str) -> ThreadRef | None:
    return session.scalar(
        select(ThreadRef)
        .where(ThreadRef.app_id == app_id, ThreadRef.message_id_header == message_id)
        .order_by(ThreadRef.id)
        .limit(1)
    )


def step_dedupe(p: Processing) -> None:
    assert p.parsed
    if not p.parsed.message_id:
        return
    digest = body_digest(p.parsed)
    if p.session.get_bind().dialect.name == "postgresql":
        # Two copies processed at once would both find no stored copy; one waits for the other.
        p.session.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:mid))"), {"mid": p.parsed.message_id}
        )
    mids = [p.parsed.message_id, *p.parsed.original_message_ids]
    refs: Sequence[Ref | ThreadRef]
    if p.index is not None:
        refs = [ref for ref in p.index.refs(p.app.id, mids) if not ref.outbound]
    else:
        refs = p.session.scalars(
            select(ThreadRef).where(
                ThreadRef.app_id == p.app.id,
                ThreadRef.message_id_header.in_(mids),
                ThreadRef.outbound.is_(False),
            )
        ).all()
    if any(r.content_sha256 == digest for r in refs):
        p.outcome = f"duplicate of a stored message ({p.parsed.message_id})"
    elif refs:
        p.duplicate_message_id = True


def step_reply_token(p: Processing) -> None:
    """Threading rule 1: a signed token in a recipient address (envelope first, then To, Cc).

    A token that does not verify is ignored (flagged): a customer's mail must still thread by
    its headers, and a forged token must not route anything anywhere.
    """
    assert p.parsed
    if p.rules.keyring is None:
        return
    recipients = [*map(str, p.row.envelope_to or ()), *p.parsed.to, *p.parsed.cc]
    text = find_token(recipients, p.rules.channel_addresses)
    if text is None:
        return
    try:
        token = p.rules.keyring.verify(text)
    except TokenError as exc:
        p.flags["reply_token_rejected"] = exc.reason
        return
    if token.app_id != p.app.id:
        p.flags["reply_token_rejected"] = "other-app"  # noqa: S105 - a reason code
        return
    p.token = token


class AgentReplyUnhandled(MessageRejected):
    """Mail to an agent's reply address while no agent-reply step is installed: quarantined, so
    it can be reprocessed once one is, and never shown to a customer as their message."""


def step_agent_reply(p: Processing) -> None:
    """The hook for replies by agents from their mail client (an agent token in the address).

    The agent-reply path replaces this step in PIPELINE; it must end the pipeline (set
    `p.outcome`) or raise, since what follows treats the sender as a customer.
    """
    if isinstance(p.token, AgentToken):
        raise AgentReplyUnhandled(
            f"reply by email to agent reply address (conversation {p.token.conversation_id})"
        )


def step_thread(p: Processing) -> None:
    """Find the conversation: In-Reply-To, then References, then same sender and subject.

    A header match is accepted only for the conversation's own customer: a forwarded thread
    answered by someone else starts that person's own conversation instead of merging, with a
    pointer to the thread it answered so an agent can link the two by hand.
    """
    assert p.parsed
    sender = p.parsed.from_address
    if isinstance(p.token, CustomerToken):
        conversation = p.session.get(Conversation, p.token.conversation_id)
        if (
            conversation is not None
            and conversation.app_id == p.app.id
            and conversation.customer_id == p.token.customer_id
            and _may_write(p, conversation, sender)
        ):
            p.conversation, p.rule = conversation, "reply token"
            _flag_new_topic(p, conversation)
            return
        if conversation is not None:
            p.flags.setdefault("answers_conversation_of_someone_else", conversation.id)
    candidates = [p.parsed.in_reply_to] if p.parsed.in_reply_to else []
    candidates += list(reversed(p.parsed.references))
    for mid in candidates:
        conversation_id = _conversation_of(p, mid)
        if conversation_id is None:
            continue
        conversation = p.session.get(Conversation, conversation_id)
        if conversation is None:
            continue
        if not _may_write(p, conversation, sender):
            p.flags.setdefault("answers_conversation_of_someone_else", conversation.id)
            continue
        p.conversation = conversation
        p.rule = "in-reply-to" if mid == p.parsed.in_reply_to else "references"
        _flag_new_topic(p, conversation)
        return
    if p.rules.subject_threading and p.parsed.subject:
        wanted = normalized_subject(p.parsed.subject)
        since = p.now - dt.timedelta(days=p.rules.subject_threading_days)
        customer = p.customer = _find_customer(p, sender)
        p.customer_looked_up = True
        if customer is not None and wanted:
            recent = p.session.scalars(
                select(Conversation)
                .where(
                    Conversation.customer_id == customer.id,
                    Conversation.state.in_([ConversationState.OPEN, ConversationState.SNOOZED]),
                    Conversation.updated_at >= since,
                )
                .order_by(Conversation.updated_at.desc())
            ).all()
            for conversation in recent:
                if normalized_subject(conversation.subject) == wanted:
                    p.conversation, p.rule = conversation, "same sender and subject"
                    return
    p.rule = "new conversation"


def _conversation_of(p: Processing, message_id: str) -> int | None:
    """The conversation of the first stored message with this Message-ID."""
    if p.index is not None:
        refs = p.index.refs(p.app.id, [message_id])
        return refs[0].conversation_id if refs else None
    ref = _ref(p.session, p.app.id, message_id)
    return ref.conversation_id if ref is not None else None


def _find_customer(p: Processing, address: str) -> Customer | None:
    if p.index is not None:
        return p.index.customer(p.app.id, address)
    return services.find_customer_by_address(p.session, p.app, address)


def _flag_new_topic(p: Processing, conversation: Conversation) -> None:
    """People answer an old mail to ask something new; a changed subject under a header match
    is the sign. The mail still threads (the headers are the stronger evidence), but agents see
    the flag and can split it off."""
    assert p.parsed
    new = normalized_subject(p.parsed.subject)
    old = normalized_subject(conversation.subject)
    if new and old and new not in old and old not in new:
        p.flags["possible_new_topic"] = {"previous_subject": conversation.subject}


def _owns(conversation: Conversation, address: str) -> bool:
    return any(a.address == address for a in conversation.customer.addresses)


def _may_write(p: Processing, conversation: Conversation, address: str) -> bool:
    """The conversation's customer, or one of its participants (flagged: the message is
    theirs). Only the token and header rules ask this: a subject never lets a participant in."""
    if _owns(conversation, address):
        return True
    if participants.find(conversation, address) is None:
        return False
    p.flags["participant"] = True
    return True


def step_store(p: Processing) -> None:
    assert p.parsed
    parsed = p.parsed
    fields = {
        "html": parsed.html,
        "quoted_text": parsed.stripped.quoted or None,
        "signature": parsed.stripped.signature or None,
        "email_message_id": parsed.message_id,
        "inbound_mail_id": p.row.id,
        "from_address": parsed.from_address,
        "flags": {
            k: v
            for k, v in {
                "auto_reply": parsed.auto_reply,
                "forwarded": parsed.stripped.forwarded or None,
                "defects": list(parsed.defects) or None,
                "duplicate_message_id": p.duplicate_message_id,
                "thread_rule": p.rule,
                **p.flags,
            }.items()
            if v
        },
    }
    text = parsed.stripped.reply_text or parsed.text.strip() or "(no text)"
    is_auto_reply = parsed.auto_reply is not None
    # Most mail starts a conversation or continues an open one without a ticket: that is a few
    # Core statements. Attachments and a message with effects take the ORM services.
    stored = None if parsed.attachments else _store_without_effects(p, text, is_auto_reply, fields)
    if stored is not None:
        p.conversation_id, p.message_id = stored
    elif p.conversation is None:
        name = parsed.from_name or None
        customer = p.customer
        if customer is None and p.customer_looked_up:
            customer = services.create_customer(
                p.session, p.app, p.now, name=name, email=parsed.from_address
            )
        elif customer is None:
            customer = services.customer_by_address(
                p.session, p.app, parsed.from_address, p.now, name=name
            )
        elif name and not customer.name:
            customer.name = name
        p.conversation, p.message = services.start_conversation(
            p.session,
            p.app,
            customer,
            Via.EMAIL,
            text,
            p.now,
            subject=parsed.subject,
            channel_id=p.row.channel_id,
            is_auto_reply=is_auto_reply,
            **fields,
        )
    else:
        p.message = services.add_customer_message(
            p.session, p.conversation, text, Via.EMAIL, p.now, is_auto_reply=is_auto_reply, **fields
        )
    if parsed.attachments:  # stored by the ORM path; an untouched collection costs a query
        assert p.message is not None
        p.message.attachments.extend(attachment_rows(parsed))
    assert p.conversation_id is not None and p.message_id is not None
    # The original id of a rewritten Message-ID is stored as well: replies may cite either, and
    # a second copy under the other id is recognised as a duplicate.
    digest = body_digest(parsed) if parsed.message_id else None
    mids = (parsed.message_id, *parsed.original_message_ids) if parsed.message_id else ()
    p.new_refs = [(mid, Ref(p.conversation_id, p.message_id, False, digest)) for mid in mids]
    if mids:
        p.session.execute(
            _THREAD_REF_INSERT,
            [
                {
                    "app_id": p.app.id,
                    "message_id_header": mid,
                    "conversation_id": p.conversation_id,
                    "message_id": p.message_id,
                    "outbound": False,
                    "content_sha256": digest,
                    "created_at": p.now,
                }
                for mid in mids
            ],
        )
    if p.forward is not None:
        finish_agent_forward(p.session, p.conversation_id, p.message_id, p.forward, p.now)
    p.outcome = f"stored as message {p.message_id} in conversation {p.conversation_id} ({p.rule})"


def _store_without_effects(
    p: Processing, text: str, is_auto_reply: bool, fields: dict[str, Any]
) -> tuple[int, int] | None:
    assert p.parsed
    conversation = p._conversation
    customer_id = conversation.customer_id if conversation is not None else _customer_id(p)
    return services.add_customer_message_without_effects(
        p.session,
        p.app.id,
        customer_id,
        conversation,
        Via.EMAIL,
        text,
        p.now,
        subject=p.parsed.subject,
        channel_id=p.row.channel_id,
        is_auto_reply=is_auto_reply,
        **fields,
    )


def _customer_id(p: Processing) -> int:
    """The sender's customer, created (Core statements) on first sight."""
    assert p.parsed
    name = p.parsed.from_name or None
    customer = p.customer
    if customer is None and not p.customer_looked_up:
        address = services.normalize_address(p.parsed.from_address)
        customer = p.customer = _find_customer(p, address)
        p.customer_looked_up = True
    if customer is None:
        return services.insert_customer(
            p.session, p.app.id, p.parsed.from_address, p.now, name=name
        )
    if name and not customer.name:
        customer.name = name
    return customer.id


_THREAD_REF_INSERT = insert(ThreadRef.__table__)  # type: ignore[arg-type]


def step_participants(p: Processing) -> None:
    """The customer's own mail: whom it copies (Cc, and To beside our address) becomes a
    participant of the conversation (tickets/participants.py says who never can). A
    participant's mail gives them the name they write under; it adds nobody."""
    assert p.parsed and p.conversation is not None
    parsed, conversation = p.parsed, p.conversation
    if p.flags.get("participant"):
        participant = participants.find(conversation, parsed.from_address)
        if participant is not None and parsed.from_name and not participant.name:
            participant.name = parsed.from_name[:200]
        return
    if parsed.auto_reply is not None:
        return
    copied = [
        address
        for address in dict.fromkeys((*parsed.to, *parsed.cc))
        if address != parsed.from_address.lower() and not _ours(address, p.rules)
    ]
    if not copied:
        return  # mail to the support address alone: no query at all
    names = _display_names(p.row.raw)
    added = participants.add_copied(
        p.session,
        conversation,
        [(names.get(address), address) for address in copied],
        services.Actor("customer", conversation.customer_id),
        p.now,
        limit=p.rules.max_participants,
        own=p.rules.channel_addresses,
    )
    if added:
        p.outcome = f"{p.outcome}; copied: {', '.join(added)}"


def _ours(address: str, rules: ChannelRules) -> bool:
    """One of the channel addresses, or a plus form of one (a reply token)."""
    local, _, domain = address.rpartition("@")
    return f"{local.partition('+')[0]}@{domain}" in rules.channel_addresses


def _display_names(raw: bytes) -> dict[str, str]:
    message = email.message_from_bytes(header_section(raw), policy=email.policy.compat32)
    return {
        m.address.lower(): m.name
        for header in ("To", "Cc")
        for m in header_addresses(message, header).mailboxes
        if m.name
    }


Step = tuple[str, Callable[[Processing], None]]

PIPELINE: tuple[Step, ...] = (
    ("parse", step_parse),
    ("agent-mail", step_agent_mail),
    ("own-loop", step_own_loop),
    ("bounce", step_bounce),
    ("spam", step_spam),
    ("agent-forward", step_agent_forward),
    ("dedupe", step_dedupe),
    ("reply-token", step_reply_token),
    ("agent-reply", step_agent_reply),
    ("thread", step_thread),
    ("store", step_store),
)

# Steps that need the stored message's conversation: they run after `store` ended the
# pipeline, and only then.
AFTER_STORE: tuple[Step, ...] = (("participants", step_participants),)


def run_pipeline(
    session: Session,
    row: InboundMail,
    app: App,
    rules: ChannelRules,
    now: dt.datetime,
    steps: tuple[Step, ...] = PIPELINE,
    parsed: ParsedMail | None = None,
    index: BatchIndex | None = None,
    after_store: tuple[Step, ...] = AFTER_STORE,
) -> Processing:
    p = Processing(
        session=session, row=row, app=app, rules=rules, now=now, parsed=parsed, index=index
    )
    for name, step in steps:
        _run_step(p, name, step)
        if p.outcome is not None:
            p.ended_by = name
            break
    if p.ended_by == "store":
        for name, step in after_store:
            _run_step(p, name, step)
    return p


def _run_step(p: Processing, name: str, step: Callable[[Processing], None]) -> None:
    try:
        step(p)
    except Exception as exc:
        exc.add_note(f"pipeline step: {name}")  # for `gateway explain`
        raise
