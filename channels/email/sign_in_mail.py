"""The email that carries an agent's one-time console sign-in link (tickets/sign_in.py).

It goes to the address the agent asked with, which is their registered or a verified address,
from the app's first channel address, marked automatic so no out-of-office answers it.
Template: `templates/email/<locale>/agent/sign_in/`.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from channels.email.notify import AgentTemplates
from channels.email.outbox import queue_email
from channels.email.tokens import Keyring
from tickets.models import Agent, App, Outbox


def queue_sign_in_mail(
    session: Session,
    app: App,
    agent: Agent,
    to: str,
    url: str,
    lifetime: dt.timedelta,
    sender: tuple[int, str],
    templates: AgentTemplates,
    keyring: Keyring,
    now: dt.datetime,
) -> Outbox:
    channel_id, from_address = sender
    rendered = templates.render(
        "sign_in",
        templates.locale_for(app.default_locale),
        {
            "brand": app.brand,
            "recipient_name": agent.name,
            "address": to,
            "url": url,
            "minutes": int(lifetime.total_seconds() // 60),
        },
    )
    return queue_email(
        session,
        app_id=app.id,
        from_address=from_address,
        from_name=f"{app.brand} Support",
        to=[to],
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        now=now,
        kind="agent_sign_in",
        channel_id=channel_id,
        auto_submitted=True,
        extra_headers=[("X-Auto-Response-Suppress", "All")],
        loop_keyring=keyring,
    )
