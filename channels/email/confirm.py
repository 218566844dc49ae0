"""The mail that asks a widget visitor to confirm an address they gave (see tickets/identity.py).

It goes to an address nobody has proven yet, possibly someone else's, so it carries nothing a
stranger typed: no word of the chat, not its subject, not the name the visitor gave; only the
brand, the link and how long the link works. It has no Reply-To and is no part of the
conversation's thread (no thread reference), so an answer to it never threads into the
visitor's conversation. Templates: `templates/email/<locale>/confirm_address/`, in every locale,
through the same vocabulary guard as every customer mail.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from channels.email.delivery import email_channel
from channels.email.outbox import queue_email
from channels.email.render import EmailContent, EmailTemplates, render_checked
from channels.email.tokens import Keyring
from tickets.customer_view import CustomerView
from tickets.locale import choose_locale
from tickets.models import App, AuthorType, Conversation, Outbox

CONFIRM_TEMPLATE = "confirm_address"


def queue_confirmation(
    session: Session,
    app: App,
    conversation: Conversation,
    to: str,
    link_url: str,
    lifetime: dt.timedelta,
    templates: EmailTemplates,
    keyring: Keyring,
    now: dt.datetime,
) -> Outbox | None:
    """Render and add the confirmation mail to the outbox; None when the app cannot send mail."""
    channel = email_channel(session, conversation)
    if channel is None:
        return None
    locale = choose_locale(
        conversation.customer.locale,
        [m.text for m in conversation.messages if m.author_type == AuthorType.CUSTOMER],
        app.default_locale,
        templates.locales(),
    )
    content = EmailContent(
        view=CustomerView(brand=app.brand, subject="", customer_name="", messages=()),
        chat_url=link_url,
        sender_name=None,
        extra={"hours": str(int(lifetime.total_seconds() // 3600))},
    )
    rendered = render_checked(templates, CONFIRM_TEMPLATE, locale, content)
    return queue_email(
        session,
        app_id=app.id,
        from_address=channel.addresses[0].address,
        from_name=rendered.from_name,
        to=[to],
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        now=now,
        kind="address_confirmation",
        channel_id=channel.id,
        auto_submitted=True,
        # No out-of-office answers to it; and should it come back to one of our own channel
        # addresses (a visitor gave one), our signed loop mark has it dropped as our own.
        extra_headers=[("X-Auto-Response-Suppress", "All")],
        loop_keyring=keyring,
    )
