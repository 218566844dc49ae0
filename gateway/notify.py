"""Wiring of agent notifications: the scheduler's fan-out step and the actor's unit of work.

The sweep collects new events into the agents' pending notifications (tickets/notifications.py,
coalesced per `[notifications] coalesce_seconds`) and enqueues `notify_agent(agent_id)` for each
agent with one due; the actor claims them within `[notifications] max_per_hour`, renders them
(channels/email/notify.py) and queues the emails in the outbox, in one transaction, so a crash
leaves either all of it or none of it. The emails leave through `send_outbound` like any other.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from channels.email.notify import AgentTemplates, Sender, compose_notifications
from channels.email.outbox import queue_email
from gateway.runtime import Runtime
from tickets import notifications
from tickets.models import Agent, App, Channel, ChannelAddress

log = logging.getLogger(__name__)

_templates: AgentTemplates | None = None


def templates() -> AgentTemplates:
    global _templates
    if _templates is None:
        _templates = AgentTemplates()
    return _templates


def channel_address(session: Session, app_id: int) -> tuple[int, str] | None:
    """The app's first channel address: notifications come from it, answers go to its plus
    forms."""
    row = session.execute(
        select(Channel.id, ChannelAddress.address)
        .join(ChannelAddress, ChannelAddress.channel_id == Channel.id)
        .where(Channel.app_id == app_id, Channel.enabled.is_(True))
        .order_by(Channel.id, ChannelAddress.id)
        .limit(1)
    ).first()
    return (row[0], row[1]) if row else None


@dataclass(frozen=True)
class Notified:
    outbox_ids: list[int]
    more: bool  # a full batch was claimed: more may be due


def notify_agent(runtime: Runtime, agent_id: int) -> Notified:
    """Queue a batch of the agent's due notifications; the outbox ids to send. Safe to run
    twice: a row is claimed by one run only."""
    now = runtime.clock()
    per_hour = runtime.config.notifications.max_per_hour
    with runtime.unit_of_work() as session:
        claimed = notifications.take_due(session, agent_id, now, per_hour)
        more = claimed.more
        count = len(claimed.single) + len(claimed.folded)
        agent = session.get(Agent, agent_id)
        if not count or agent is None:
            return Notified([], more)
        app = session.get(App, agent.app_id)
        channel = channel_address(session, agent.app_id)
        if app is None or channel is None or not agent.active:
            log.warning("agent %s: %d notifications not sent (no channel)", agent_id, count)
            return Notified([], more)
        channel_id, address = channel
        sender = Sender(runtime.keyring, address, runtime.config.agent_token_lifetime)
        drafts = compose_notifications(
            session,
            agent,
            claimed.single,
            sender,
            templates(),
            now,
            folded=claimed.folded,
            limit=None if claimed.room_at is None else (per_hour, claimed.room_at),
        )
        ids = []
        for draft in drafts:
            outbox = queue_email(
                session,
                app_id=agent.app_id,
                from_address=address,
                from_name=f"{app.brand} Support",
                to=[draft.to],
                subject=draft.rendered.subject,
                text=draft.rendered.text,
                html=draft.rendered.html,
                now=now,
                kind="agent_notification",
                channel_id=channel_id,
                reply_to=draft.reply_to,
                auto_submitted=True,
                # Outlook and Exchange answer notifications with out-of-office mail unless told
                # not to; and a notification that comes back to a channel address is a loop.
                extra_headers=[("X-Auto-Response-Suppress", "All")],
                loop_keyring=runtime.keyring,
            )
            for row in draft.rows:
                row.outbox_id = outbox.id
            ids.append(outbox.id)
        return Notified(ids, more)
