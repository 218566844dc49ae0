"""Dramatiq actors: thin units of background work that take ids and are safe to run twice.

Import this module only after `gateway.broker.setup_broker` (actors bind to the broker that is
current at import time) and call `bind(runtime)` before a worker runs them.
"""

from __future__ import annotations

import logging

import dramatiq
from sqlalchemy import select

from gateway.runtime import Runtime
from tickets import services
from tickets.models import Conversation, ConversationState

log = logging.getLogger(__name__)

_runtime: Runtime | None = None


def bind(runtime: Runtime) -> None:
    global _runtime
    _runtime = runtime


def current_runtime() -> Runtime:
    if _runtime is None:
        raise RuntimeError("gateway.actors.bind(runtime) was not called")
    return _runtime


@dramatiq.actor(queue_name="inbound", max_retries=5)
def process_inbound(inbound_id: int) -> None:
    """Parse, filter, thread and store one accepted mail; a no-op once it is done."""
    from gateway.inbound import process_inbound as process

    outcome = process(current_runtime(), inbound_id)
    if outcome is not None:
        log.info("inbound %s %s: %s", inbound_id, outcome.state, outcome.detail)


@dramatiq.actor(queue_name="timers", max_retries=5)
def wake_snoozed(conversation_id: int) -> None:
    """Wake a conversation whose snooze time has come; a no-op if it is awake already."""
    runtime = current_runtime()
    now = runtime.clock()
    with runtime.unit_of_work() as session:
        conversation = session.scalar(
            select(Conversation).where(Conversation.id == conversation_id).with_for_update()
        )
        if (
            conversation is None
            or conversation.state != ConversationState.SNOOZED
            or conversation.snoozed_until is None
            or conversation.snoozed_until > now
        ):
            return
        services.unsnooze(session, conversation, services.SYSTEM, now, reason="snooze ended")
    log.info("conversation %s woke from snooze", conversation_id)
