"""Dramatiq actors: thin units of background work that take ids and are safe to run twice.

Import this module only after `gateway.broker.setup_broker` (actors bind to the broker that is
current at import time) and call `bind(runtime)` before a worker runs them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import dramatiq
import dramatiq.broker
from sqlalchemy import select

from gateway.inbound import BATCH_SIZE as INBOUND_BATCH_SIZE
from gateway.runtime import Runtime
from tickets import services
from tickets.models import Conversation, ConversationState

log = logging.getLogger(__name__)

# How soon a mail left pending by a database conflict (PostgreSQL, several workers) is retried.
RETRY_DELAY_MS = 200

if dramatiq.broker.global_broker is None:
    # Imported before any setup_broker (a test, an HTTP handler in a bare process): bind to the
    # in-memory broker. Dramatiq's own default would be a RabbitMQ on localhost, and a message
    # sent there would reach whatever else uses that RabbitMQ. The sweep does what is lost.
    from gateway.broker import setup_broker

    setup_broker("stub://")

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


@dramatiq.actor(queue_name="inbound", max_retries=5)
def process_inbound_batch(inbound_ids: list[int]) -> None:
    """Process accepted mails in one transaction; those already done are skipped."""
    from gateway.inbound import process_batch

    outcomes = process_batch(current_runtime(), inbound_ids, fill=True).values()
    for outcome in outcomes:
        log.info("inbound %s %s: %s", outcome.inbound_id, outcome.state, outcome.detail)
    # Left pending by a database conflict with another batch: try again in a moment rather
    # than at the sweep, by when the other batch has long committed.
    retry = [o.inbound_id for o in outcomes if o.state == "pending"]
    if retry:
        process_inbound_batch.send_with_options(args=(retry,), delay=RETRY_DELAY_MS)


def enqueue_inbound(inbound_ids: Sequence[int]) -> None:
    """Hand stored mails to the workers, in batches that keep each transaction short."""
    ids = list(inbound_ids)
    for start in range(0, len(ids), INBOUND_BATCH_SIZE):
        process_inbound_batch.send(ids[start : start + INBOUND_BATCH_SIZE])


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


@dramatiq.actor(queue_name="timers", max_retries=5)
def fire_sla_timer(timer_id: int) -> None:
    """Record the warning or the breach of one SLA timer; a no-op if neither is due any more."""
    from gateway.background import fire_timer

    fired = fire_timer(current_runtime(), timer_id)
    if fired:
        log.info("sla timer %s: %s", timer_id, fired)


@dramatiq.actor(queue_name="checks", max_retries=5)
def check_email(ticket_id: int) -> None:
    """The convert-time email check of one ticket; a no-op once its result is stored."""
    from gateway.background import run_email_check

    result = run_email_check(current_runtime(), ticket_id)
    if result is not None:
        log.info("ticket %s email check: %s", ticket_id, "ok" if result["ok"] else "warning")


@dramatiq.actor(queue_name="checks", max_retries=3)
def summarize_ticket(ticket_id: int) -> None:
    """Title and summary of one ticket; a no-op unless a refresh is due."""
    from gateway.background import run_summary

    run_summary(current_runtime(), ticket_id)


@dramatiq.actor(queue_name="outbound", max_retries=5)
def deliver_email(conversation_id: int) -> None:
    """Email the team messages a customer left unread past the grace period (or don't)."""
    from gateway.outbound import deliver

    outcome = deliver(current_runtime(), conversation_id)
    if outcome.outbox_id is not None:
        send_outbound.send(outcome.outbox_id)
    if outcome.what != "not-due":
        log.info("conversation %s delivery: %s %s", conversation_id, outcome.what, outcome.detail)


@dramatiq.actor(queue_name="outbound", max_retries=5)
def deliver_emails(conversation_ids: list[int]) -> None:
    """`deliver_email` for several conversations, rendered and stored in one transaction; the
    emails queued are sent as one batch."""
    from gateway.outbound import deliver_batch

    outcomes = deliver_batch(current_runtime(), conversation_ids)
    queued = [o.outbox_id for o in outcomes.values() if o.outbox_id is not None]
    if queued:
        send_outbound_batch.send(queued)
    for conversation_id, outcome in outcomes.items():
        if outcome.what != "not-due":
            log.info(
                "conversation %s delivery: %s %s", conversation_id, outcome.what, outcome.detail
            )


@dramatiq.actor(queue_name="outbound", max_retries=5)
def send_outbound_batch(outbox_ids: list[int]) -> None:
    """One attempt at each of these outbox rows, over kept relay connections; rows already
    claimed or finished are skipped, so a second run sends nothing."""
    from gateway.outbound import send_batch

    for outbox_id, state in send_batch(current_runtime(), outbox_ids).items():
        log.info("outbox %s: %s", outbox_id, state.value)


@dramatiq.actor(queue_name="outbound", max_retries=5)
def send_outbound(outbox_id: int) -> None:
    """One attempt at one outbox row; claims the row first, so a second run sends nothing."""
    from gateway.outbound import send_outbound as send

    state = send(current_runtime(), outbox_id)
    if state is not None:
        log.info("outbox %s: %s", outbox_id, state.value)


@dramatiq.actor(queue_name="outbound", max_retries=5)
def notify_agents() -> None:
    """Queue every agent's due notifications as emails and send them; a no-op when none are."""
    from gateway.notify import notify_due

    notified = notify_due(current_runtime())
    for outbox_id in notified.outbox_ids:
        send_outbound.send(outbox_id)
    if notified.more:
        notify_agents.send()


@dramatiq.actor(queue_name="outbound", max_retries=5)
def notify_agent(agent_id: int) -> None:
    """Queue an agent's due notifications as emails and send them; a no-op when none are due."""
    from gateway.notify import notify_agent as notify

    notified = notify(current_runtime(), agent_id)
    for outbox_id in notified.outbox_ids:
        send_outbound.send(outbox_id)
    if notified.more:
        notify_agent.send(agent_id)
