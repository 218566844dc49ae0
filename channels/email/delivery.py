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
from collections.abc import Callable
from dataclasses import dataclass

import jinja2
from sqlalchemy import select
from sqlalchemy.orm import Session

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
    AuthorType,
    Channel,
    Conversation,
    CustomerAddress,
    Message,
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


def email_channel(session: Session, conversation: Conversation) -> Channel | None:
    """The conversation's own channel if it can send, else the app's first one that can."""
    candidates = []
    if conversation.channel_id is not None:
        candidates.append(session.get(Channel, conversation.channel_id))
    candidates += session.scalars(
        select(Channel)
        .where(Channel.app_id == conversation.app_id, Channel.enabled.is_(True))
        .order_by(Channel.id)
    ).all()
    for channel in candidates:
        if channel is not None and channel.enabled and channel.addresses:
            return channel
    return None


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
    ours = list(
        session.scalars(
            select(ThreadRef.message_id_header)
            .where(ThreadRef.conversation_id == conversation.id, ThreadRef.outbound.is_(True))
            .order_by(ThreadRef.id)
        )
    )
    latest = session.scalars(
        select(Message.email_message_id)
        .where(
            Message.conversation_id == conversation.id,
            Message.author_type == AuthorType.CUSTOMER,
            Message.email_message_id.is_not(None),
        )
        .order_by(Message.id.desc())
        .limit(5)
    )
    theirs = next((mid for mid in latest if mid and message_id_ok(mid)), None)
    chain = [*ours, theirs] if theirs else ours
    references = trim_references(chain)
    in_reply_to = theirs or (ours[-1] if ours else None)
    return in_reply_to, references


def deliver_conversation(
    session: Session, conversation_id: int, now: dt.datetime, settings: DeliverySettings
) -> Outcome:
    """Safe to run twice: the second run finds nothing waiting (or the time not yet come)."""
    conversation = session.get(Conversation, conversation_id, with_for_update=True)
    if (
        conversation is None
        or conversation.email_pending_since is None
        or conversation.email_pending_since > now - settings.grace
    ):
        return Outcome("not-due")
    waiting = delivery.waiting_messages(session, conversation)
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
    channel = email_channel(session, conversation)
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
    return _queue(session, conversation, channel, address.address, unread, now, settings)


def _queue(
    session: Session,
    conversation: Conversation,
    channel: Channel,
    to: str,
    unread: list[Message],
    now: dt.datetime,
    settings: DeliverySettings,
) -> Outcome:
    app = session.get(App, conversation.app_id)
    assert app is not None
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
    in_reply_to, references = thread_headers(session, conversation)
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
        attachments=[
            (a.filename, a.content_type, a.content)
            for m in unread
            for a in m.attachments
            if not a.inline
        ],
        reply_to=settings.reply_to(app, conversation, from_address),
        in_reply_to=in_reply_to,
        references=references,
        # Mail that carries no person's words is automatic (RFC 3834).
        auto_submitted=sender is None,
        hold_reason=hold,
    )
    conversation.email_pending_since = None
    conversation.delivery_warning = None
    if hold is not None:
        give_up(session, row, OutboxState.HELD, hold, now)
        return Outcome("held", hold, row.id)
    for message in unread:
        message.delivery_state = delivery.QUEUED
        message.delivery_error = None
    return Outcome("queued", f"email to {to}", row.id)


def _fallback(content: EmailContent) -> RenderedEmail:
    """Something to show the agent in a held row when a template could not render at all."""
    view = content.view
    body = "\n\n".join(m.text for m in view.messages if m.new)
    return RenderedEmail("en", view.brand, f"Re: {view.subject}", body + "\n", body)
