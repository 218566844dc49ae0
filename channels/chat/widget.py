"""The chat widget's side of a conversation: what a visitor can do, and nothing more.

A visitor is a customer known by a random visitor token (only its hash is stored). A
conversation is reached by its *customer token*, the same signed token the customer's emails
carry in their Reply-To and chat link: holding it is what proves the conversation is theirs, so
the widget in a second browser opened from an email link works, and no guessable number ever
appears in a URL or a payload. Everything shown comes from `CustomerView`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Callable, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from channels.email.confirm import queue_confirmation
from channels.email.render import EmailTemplates
from channels.email.tokens import CustomerToken, Keyring, TokenError
from tickets import delivery, identity, services
from tickets.customer_view import CustomerView, customer_view
from tickets.errors import InvalidValue, NotFound
from tickets.models import App, Conversation, Customer, Via

MAX_TEXT = 20_000


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_visitor(
    session: Session,
    app: App,
    now: dt.datetime,
    *,
    locale: str | None = None,
    name: str | None = None,
) -> tuple[str, Customer]:
    """A new widget visitor; the token is returned once and only its hash is kept."""
    token = secrets.token_urlsafe(32)
    customer = services.create_customer(
        session, app, now, name=(name or "").strip() or None, locale=_locale(locale)
    )
    customer.visitor_token_hash = hash_token(token)
    customer.last_seen_at = now
    session.flush()
    return token, customer


def _locale(value: str | None) -> str | None:
    if not value:
        return None
    value = value.strip()[:16]
    if not all(c.isalnum() or c in "-_" for c in value):
        raise InvalidValue(f"{value!r} is not a locale like en or de-CH")
    return value


def visitor(session: Session, app: App, token: str) -> Customer:
    customer = session.scalar(
        select(Customer).where(
            Customer.visitor_token_hash == hash_token(token), Customer.app_id == app.id
        )
    )
    if customer is None:
        raise NotFound("unknown visitor")
    return customer


def conversation_token(keyring: Keyring, conversation: Conversation) -> str:
    return keyring.sign(
        CustomerToken(
            app_id=conversation.app_id,
            conversation_id=conversation.id,
            customer_id=conversation.customer_id,
        )
    )


def open_conversation(session: Session, app: App, keyring: Keyring, token: str) -> Conversation:
    """The conversation a customer token names, if it is this app's and its customer's."""
    try:
        signed = keyring.verify_customer(token.strip().lower())
    except TokenError:
        raise NotFound("no such conversation") from None
    conversation = session.get(Conversation, signed.conversation_id, with_for_update=True)
    if (
        conversation is None
        or conversation.app_id != app.id
        or signed.app_id != app.id
        or conversation.customer_id != signed.customer_id
    ):
        raise NotFound("no such conversation")
    return conversation


def _text(text: str) -> str:
    if not text.strip():
        raise InvalidValue("a message needs text")
    if len(text) > MAX_TEXT:
        raise InvalidValue(f"a message is at most {MAX_TEXT} characters")
    return text


def start(
    session: Session, app: App, customer: Customer, text: str, now: dt.datetime
) -> Conversation:
    conversation, _ = services.start_conversation(
        session, app, customer, Via.CHAT, _text(text), now
    )
    delivery.customer_seen(customer, now)
    return conversation


def say(session: Session, conversation: Conversation, text: str, now: dt.datetime) -> None:
    """A chat message from the customer; writing means they have read what came before."""
    services.add_customer_message(session, conversation, _text(text), Via.CHAT, now)
    seen(session, conversation, now, read=True)


def seen(session: Session, conversation: Conversation, now: dt.datetime, *, read: bool) -> None:
    delivery.customer_seen(conversation.customer, now)
    if read:
        delivery.mark_read(session, conversation, now)


def give_email(
    session: Session,
    app: App,
    conversation: Conversation,
    email: str,
    now: dt.datetime,
    *,
    confirm_url: Callable[[str], str],
    templates: EmailTemplates,
    keyring: Keyring,
) -> int | None:
    """'So we can reach you if you leave': a link to confirm the address is mailed to it.

    The address counts only once the link is followed (tickets/identity.py); until then the
    conversation is not emailed. Whose address it is, is not looked at here, so the answer is
    the same for every address. Returns the outbox row of the mail, if one was queued.
    """
    claimed = identity.claim_address(session, conversation, email, now)
    if claimed is None:
        return None  # already this customer's own address: nothing to confirm
    link, address = claimed
    row = queue_confirmation(
        session,
        app,
        conversation,
        address,
        confirm_url(link),
        identity.CLAIM_LIFETIME,
        templates,
        keyring,
        now,
    )
    return row.id if row is not None else None


def email_state(session: Session, conversation: Conversation, now: dt.datetime) -> str:
    """`known` (a proven address), `pending` (a link is out) or `none`: what the widget asks."""
    if conversation.customer.addresses:
        return "known"
    return "pending" if identity.pending_claim(session, conversation, now) else "none"


def view(app: App, conversation: Conversation) -> CustomerView:
    return customer_view(app, conversation)


def own_conversations(session: Session, customer: Customer) -> Sequence[Conversation]:
    return session.scalars(
        select(Conversation)
        .where(Conversation.customer_id == customer.id)
        .order_by(Conversation.updated_at.desc(), Conversation.id.desc())
        .limit(100)
    ).all()


def unread_count(conversation: Conversation) -> int:
    read_at = conversation.customer_last_read_at
    return sum(
        1
        for m in conversation.messages
        if m.author_type.value != "customer" and (read_at is None or m.created_at > read_at)
    )
