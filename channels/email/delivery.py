"""Turn the team messages a customer has not read into one email, in the conversation's voice.

Called for a conversation whose messages have waited longer than the grace period. Decides
(widget only, no email, blocked with a warning, or an email), renders the email from the
`CustomerView` in the customer's language, passes it through the vocabulary guard and adds it to
the outbox in the caller's transaction. A guard failure is a bug in a template: it is logged
loudly and the email is stored *held* for an agent, never sent.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Callable, Collection
from dataclasses import dataclass

import jinja2
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from channels.email.compose import message_id_ok, trim_references
from channels.email.outbox import give_up, queue_email
from channels.email.render import (
    EmailContent,
    EmailTemplates,
    RenderedEmail,
    render_checked,
    template_context,
    template_name,
)
from tickets import delivery, participants, services
from tickets.customer_view import customer_view
from tickets.locale import choose_locale
from tickets.models import (
    App,
    Attachment,
    AuthorType,
    Channel,
    Conversation,
    Customer,
    CustomerAddress,
    Message,
    Outbox,
    OutboxState,
    ThreadRef,
)
from tickets.vocabulary import InternalWordsFound

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeliverySettings:
    grace: dt.timedelta
    online_window: dt.timedelta
    templates: EmailTemplates
    # The chat link for a conversation, and the Reply-To address (None: no Reply-To header).
    chat_url: Callable[[App, Conversation, str], str]
    reply_to: Callable[[App, Conversation, str], str | None]


@dataclass(frozen=True)
class Outcome:
    what: str  # not-due, read, widget, blocked, queued, held
    detail: str = ""
    outbox_id: int | None = None


class _Channels:
    """The channels that can send, looked up once per app for a whole batch."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.by_app: dict[int, list[Channel]] = {}

    def for_conversation(self, conversation: Conversation) -> Channel | None:
        """The conversation's own channel if it can send, else the app's first one that can."""
        if conversation.app_id not in self.by_app:
            self.by_app[conversation.app_id] = list(
                self.session.scalars(
                    select(Channel)
                    .where(Channel.app_id == conversation.app_id, Channel.enabled.is_(True))
                    .order_by(Channel.id)
                    .options(selectinload(Channel.addresses))
                )
            )
        candidates = list(self.by_app[conversation.app_id])
        if conversation.channel_id is not None:
            candidates.insert(0, self.session.get(Channel, conversation.channel_id))  # type: ignore[arg-type]
        for channel in candidates:
            if channel is not None and channel.enabled and channel.addresses:
                return channel
        return None


def email_channel(session: Session, conversation: Conversation) -> Channel | None:
    """The conversation's own channel if it can send, else the app's first one that can."""
    return _Channels(session).for_conversation(conversation)


def deliverable_address(conversation: Conversation) -> CustomerAddress | None:
    for address in conversation.customer.addresses:
        if address.bounced_at is None:
            return address
    return None


def _block(session: Session, conversation: Conversation, reason: str, now: dt.datetime) -> Outcome:
    conversation.email_pending_since = None
    if conversation.delivery_warning != reason:
        conversation.delivery_warning = reason
        services.record(
            session,
            app_id=conversation.app_id,
            kind="delivery.blocked",
            actor=services.SYSTEM,
            now=now,
            conversation=conversation,
            ticket=conversation.ticket,
            reason=reason,
        )
    return Outcome("blocked", reason)


def thread_headers(session: Session, conversation: Conversation) -> tuple[str | None, list[str]]:
    """In-Reply-To (their last Message-ID, else our last) and References (our chain plus
    theirs, trimmed). An id of theirs that cannot be written verbatim counts as none."""
    return _thread_headers(
        conversation, _our_ids(session, [conversation.id]).get(conversation.id, [])
    )


def _our_ids(session: Session, conversation_ids: Collection[int]) -> dict[int, list[str]]:
    """The Message-IDs of our emails per conversation, oldest first (one statement)."""
    ours: dict[int, list[str]] = defaultdict(list)
    for conversation_id, header in session.execute(
        select(ThreadRef.conversation_id, ThreadRef.message_id_header)
        .where(ThreadRef.conversation_id.in_(conversation_ids), ThreadRef.outbound.is_(True))
        .order_by(ThreadRef.id)
    ):
        ours[conversation_id].append(header)
    return ours


def _thread_headers(conversation: Conversation, ours: list[str]) -> tuple[str | None, list[str]]:
    latest = [
        m.email_message_id
        for m in reversed(conversation.messages)
        if m.author_type == AuthorType.CUSTOMER and m.email_message_id is not None
    ][:5]
    theirs = next((mid for mid in latest if mid and message_id_ok(mid)), None)
    chain = [*ours, theirs] if theirs else ours
    references = trim_references(chain)
    in_reply_to = theirs or (ours[-1] if ours else None)
    return in_reply_to, references


def deliver_conversation(
    session: Session, conversation_id: int, now: dt.datetime, settings: DeliverySettings
) -> Outcome:
    """Safe to run twice: the second run finds nothing waiting (or the time not yet come)."""
    return deliver_conversations(session, [conversation_id], now, settings)[conversation_id]


def deliver_conversations(
    session: Session,
    conversation_ids: Collection[int],
    now: dt.datetime,
    settings: DeliverySettings,
) -> dict[int, Outcome]:
    """`deliver_conversation` for several conversations in the caller's transaction: what
    they need is loaded in a fixed number of statements, and the emails are stored together.

    A conversation another transaction has locked is skipped (PostgreSQL; "not-due"): it is
    still due afterwards, and the next sweep comes back to it.
    """
    ids = sorted(set(conversation_ids))
    outcomes = {cid: Outcome("not-due") for cid in ids}
    conversations = session.scalars(
        select(Conversation)
        .where(
            Conversation.id.in_(ids),
            Conversation.email_pending_since.is_not(None),
            Conversation.email_pending_since <= now - settings.grace,
        )
        .order_by(Conversation.id)
        # NO KEY UPDATE: not held up by rows being inserted that refer to the conversation
        # (events, notes: their foreign keys take KEY SHARE locks), only by its own changes.
        .with_for_update(skip_locked=True, key_share=True, of=Conversation)
        .options(
            selectinload(Conversation.customer).selectinload(Customer.addresses),
            selectinload(Conversation.ticket),
            selectinload(Conversation.messages).selectinload(Message.agent),
            selectinload(Conversation.participants),
        )
    ).all()
    channels = _Channels(session)
    to_queue: list[tuple[Conversation, Channel, str, list[Message]]] = []
    for conversation in conversations:
        decided = _decide(session, conversation, now, settings, channels)
        if isinstance(decided, Outcome):
            outcomes[conversation.id] = decided
        else:
            to_queue.append((conversation, *decided))
    if not to_queue:
        return outcomes
    ours = _our_ids(session, [c.id for c, *_ in to_queue])
    attachments = _attachments(session, [m.id for *_, unread in to_queue for m in unread])
    # Held here: the session keeps objects nobody refers to only weakly.
    apps = {
        a.id: a
        for a in session.scalars(select(App).where(App.id.in_({c.app_id for c, *_ in to_queue})))
    }
    queued = []
    # No flush between the emails: the rows go in with one round of INSERTs at the end.
    with session.no_autoflush:
        for conversation, channel, to, unread in to_queue:
            headers = _thread_headers(conversation, ours.get(conversation.id, []))
            files = [f for m in unread for f in attachments.get(m.id, [])]
            app = apps[conversation.app_id]
            email = (to, unread, headers, files)
            queued.append(
                (conversation.id, _queue(session, app, conversation, channel, email, now, settings))
            )
    session.flush()
    for conversation_id, (outcome, row) in queued:
        outcomes[conversation_id] = Outcome(outcome.what, outcome.detail, row.id)
    return outcomes


def _attachments(
    session: Session, message_ids: list[int]
) -> dict[int, list[tuple[str, str, bytes]]]:
    """What the agents attached to these messages (inline images stay in the chat)."""
    found: dict[int, list[tuple[str, str, bytes]]] = defaultdict(list)
    if not message_ids:
        return found
    for a in session.scalars(
        select(Attachment)
        .where(Attachment.message_id.in_(message_ids), Attachment.inline.is_(False))
        .order_by(Attachment.id)
    ):
        found[a.message_id].append((a.filename, a.content_type, a.content))
    return found


def _decide(
    session: Session,
    conversation: Conversation,
    now: dt.datetime,
    settings: DeliverySettings,
    channels: _Channels,
) -> Outcome | tuple[Channel, str, list[Message]]:
    """What becomes of a due conversation's waiting messages: an outcome, or where to email
    them (the channel, the address, the unread messages)."""
    waiting = [
        m
        for m in conversation.messages
        if m.author_type != AuthorType.CUSTOMER and m.delivery_state == delivery.WAITING
    ]
    read_at = conversation.customer_last_read_at
    unread = [m for m in waiting if read_at is None or m.created_at > read_at]
    for message in waiting:
        if message not in unread:
            message.delivery_state = delivery.READ
    if not unread:
        conversation.email_pending_since = None
        return Outcome("read", "the customer read everything in the widget")
    if not delivery.email_allowed(conversation):
        for message in unread:
            message.delivery_state = None
        conversation.email_pending_since = None
        return Outcome("widget", "a team-only conversation is never emailed")
    if delivery.is_online(conversation.customer, now, settings.online_window):
        # They are in the widget: it shows the messages; look again after another grace period.
        conversation.email_pending_since = now
        return Outcome("widget", "the customer is in the widget")
    channel = channels.for_conversation(conversation)
    if channel is None:
        return _block(
            session,
            conversation,
            "no email channel is connected: the messages wait in the chat",
            now,
        )
    address = deliverable_address(conversation)
    if address is None:
        reason = (
            "the customer's email address bounced: the messages wait in the chat"
            if conversation.customer.addresses
            else "the customer gave no email address: the messages wait in the chat"
        )
        return _block(session, conversation, reason, now)
    return channel, address.address, unread


def _queue(
    session: Session,
    app: App,
    conversation: Conversation,
    channel: Channel,
    email: tuple[str, list[Message], tuple[str | None, list[str]], list[tuple[str, str, bytes]]],
    now: dt.datetime,
    settings: DeliverySettings,
) -> tuple[Outcome, Outbox]:
    """Render the email (to, the unread messages, the thread headers, the attachments) and add
    its outbox row (not flushed: the caller flushes them all)."""
    to, unread, (in_reply_to, references), attachments = email
    templates = settings.templates
    view = customer_view(app, conversation, new_ids={m.id for m in unread})
    locale = choose_locale(
        conversation.customer.locale,
        [m.text for m in conversation.messages if m.author_type == AuthorType.CUSTOMER],
        app.default_locale,
        templates.locales(),
    )
    agents = [m.agent for m in unread if m.agent is not None]
    sender = agents[-1].name if agents else None
    from_address = channel.addresses[0].address
    content = EmailContent(
        view=view,
        chat_url=settings.chat_url(app, conversation, to),
        sender_name=sender,
    )
    name = template_name(view, len(unread))
    ticket = conversation.ticket
    refs = [ticket.number, ticket.id] if ticket is not None else []
    hold: str | None = None
    try:
        rendered = render_checked(templates, name, locale, content, refs)
    except InternalWordsFound as exc:
        log.error(
            "VOCABULARY GUARD: the %s/%s email for conversation %s is held, not sent: %s",
            locale,
            name,
            conversation.id,
            exc,
        )
        hold = f"held by the vocabulary guard: {exc}"
        rendered = templates.render(name, locale, template_context(content, locale))
    except jinja2.TemplateError as exc:
        log.error(
            "template %s/%s failed for conversation %s: %s", locale, name, conversation.id, exc
        )
        hold = f"the {locale}/{name} template failed: {exc}"
        rendered = _fallback(content)
    row = queue_email(
        session,
        app_id=app.id,
        from_address=from_address,
        from_name=rendered.from_name,
        to=[to],
        # The people the customer copied stay in the loop (a bounced one no longer).
        cc=participants.copied_to(conversation),
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        now=now,
        kind="customer",
        channel_id=channel.id,
        conversation_id=conversation.id,
        message_ids=[m.id for m in unread],
        # What the agents attached (also by email) goes along; inline images stay in the chat.
        attachments=attachments,
        reply_to=settings.reply_to(app, conversation, from_address),
        in_reply_to=in_reply_to,
        references=references,
        # Mail that carries no person's words is automatic (RFC 3834).
        auto_submitted=sender is None,
        hold_reason=hold,
        flush=hold is not None,
    )
    conversation.email_pending_since = None
    conversation.delivery_warning = None
    if hold is not None:
        give_up(session, row, OutboxState.HELD, hold, now)
        return Outcome("held", hold), row
    for message in unread:
        message.delivery_state = delivery.QUEUED
        message.delivery_error = None
    return Outcome("queued", f"email to {to}"), row


def _fallback(content: EmailContent) -> RenderedEmail:
    """Something to show the agent in a held row when a template could not render at all."""
    view = content.view
    body = "\n\n".join(m.text for m in view.messages if m.new)
    return RenderedEmail("en", view.brand, f"Re: {view.subject}", body + "\n", body)
