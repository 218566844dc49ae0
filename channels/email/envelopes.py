"""One SMTP transaction per recipient of an outbox row, and where each recipient stands.

A reply goes To the customer and Cc the participants: one message, several envelope recipients.
Each recipient gets a transaction of its own (MAIL FROM / RCPT / DATA on the same connection),
under a return path naming the row and that recipient (VERP), so a bounce that comes back to it
is that recipient's whatever it says, and a refusal at RCPT is that recipient's alone.

The row keeps a state per recipient (`Outbox.recipient_states`): a transaction is marked
`sending` in the same commit that records the previous one's result, so after a crash between
two transactions the next attempt goes only to those not yet accepted, and after a crash inside
one only that recipient is in doubt (held for an agent, as a whole row was before). The row is
finished when no recipient is pending: sent when the customer has it (a participant refused for
good is marked undeliverable and the agents are told), failed when the customer was refused,
held when a transaction's outcome is unknown.

A transport that cannot carry several return paths (the file transport writes one file per
message) gets one transaction for every pending recipient, under a return path naming the row.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy.orm import Session

from channels.email.outbox import (
    ACCEPTED,
    PENDING,
    REFUSED,
    SENDING,
    UNKNOWN,
    RetryPolicy,
    carried,
    give_up,
    held_by,
    return_path,
    sent,
)
from channels.email.tokens import Keyring
from tickets import participants, services
from tickets.models import Conversation, Outbox, OutboxState

STALE_UNKNOWN = (
    "delivery unknown: the sending process stopped after handing the message to the relay and "
    "before it answered; check with the recipient, then retry it if needed"
)


@dataclass(frozen=True)
class Envelope:
    """One transaction: the recipients' positions in the row, their addresses, the sender."""

    positions: tuple[int, ...]
    recipients: tuple[str, ...]
    sender: str


@dataclass(frozen=True)
class Result:
    """How a transaction ended: ACCEPTED, PENDING (try again later), REFUSED or UNKNOWN."""

    state: str
    reason: str = ""
    at_rcpt: bool = False  # refused at RCPT TO: the address, not the message


def states(row: Outbox, *, in_flight: bool) -> list[str]:
    """The recipients' states. A row queued before they were kept has none: its recipients
    share one transaction, in flight if the row is being sent (`in_flight`)."""
    kept = [str(s) for s in row.recipient_states or ()]
    if len(kept) == len(row.recipients):
        return kept
    fill = SENDING if in_flight and row.state == OutboxState.SENDING else PENDING
    return [fill] * len(row.recipients)


def _set(row: Outbox, positions: tuple[int, ...], state: str) -> None:
    current = states(row, in_flight=False)
    for i in positions:
        current[i] = state
    row.recipient_states = current  # a new list: the JSON column sees the change


def envelopes(keyring: Keyring, row: Outbox, *, per_recipient: bool) -> list[Envelope]:
    """The transactions an attempt makes: one per pending recipient, or one for all of them."""
    todo = [i for i, state in enumerate(states(row, in_flight=False)) if state == PENDING]
    groups = [(i,) for i in todo] if per_recipient else ([tuple(todo)] if todo else [])
    return [
        Envelope(
            group,
            tuple(str(row.recipients[i]) for i in group),
            return_path(keyring, row, group[0] if len(group) == 1 else None),
        )
        for group in groups
    ]


def start(row: Outbox, envelope: Envelope) -> None:
    """Mark a transaction in flight (in the claim's commit, or with the previous result)."""
    _set(row, envelope.positions, SENDING)


def record(
    session: Session,
    outbox_id: int,
    attempt_id: str,
    envelope: Envelope,
    result: Result,
    now: dt.datetime,
    following: Envelope | None = None,
) -> bool:
    """Keep a transaction's result (and mark the next one in flight) while the claim holds;
    False if it no longer does (the attempt stops)."""
    row = held_by(session, outbox_id, attempt_id)
    if row is None:
        return False
    record_on(session, row, envelope, result, now, following)
    return True


def record_on(
    session: Session,
    row: Outbox,
    envelope: Envelope,
    result: Result,
    now: dt.datetime,
    following: Envelope | None = None,
) -> None:
    """`record` for a row the caller holds (see outbox.held_by_many)."""
    customer_refused = states(row, in_flight=False)[0] == REFUSED
    _set(row, envelope.positions, result.state)
    if result.state == ACCEPTED and 0 in envelope.positions:
        _reached_customer(session, row, now)
    elif result.state == REFUSED:
        _refused_copies(session, row, envelope, result, now)
    if result.reason and not customer_refused:  # the customer's refusal stays the reason
        row.last_error = result.reason[:2000]
    if following is not None:
        start(row, following)


def _reached_customer(session: Session, row: Outbox, now: dt.datetime) -> None:
    """The customer has the email: their messages are sent, whatever the copies do."""
    row.sent_at = now
    for message in carried(session, row):
        if message.delivery_state in (None, "waiting", "queued", "failed", "held"):
            message.delivery_state = "sent"
            message.delivery_error = None


def _refused_copies(
    session: Session, row: Outbox, envelope: Envelope, result: Result, now: dt.datetime
) -> None:
    """Participants refused for good: never silently missed. Refused at RCPT, the address is
    marked undeliverable (no longer copied, as a bounce would); either way the agents get a
    note. The customer's refusal finishes the row as failed instead (see `finish`)."""
    copies = [r for i, r in zip(envelope.positions, envelope.recipients, strict=True) if i != 0]
    conversation = session.get(Conversation, row.conversation_id) if row.conversation_id else None
    if not copies or conversation is None:
        return
    if result.at_rcpt:
        participants.mark_bounced(session, conversation.id, copies, now)
    services.add_note(
        session,
        conversation,
        None,
        f"Email to {', '.join(copies)} could not be delivered: {result.reason}",
        now,
    )


def finish(
    session: Session,
    outbox_id: int,
    attempt_id: str,
    policy: RetryPolicy,
    now: dt.datetime,
) -> OutboxState | None:
    """End an attempt: pending again while some recipient is (at the next retry time, or
    refused after `give_up_after`), else sent, failed or held by how the recipients stand."""
    row = held_by(session, outbox_id, attempt_id)
    if row is None:
        return None
    return finish_row(session, row, policy, now)


def finish_row(session: Session, row: Outbox, policy: RetryPolicy, now: dt.datetime) -> OutboxState:
    """`finish` for a row the caller holds."""
    current = states(row, in_flight=False)
    if PENDING in current:
        reason = row.last_error or "temporary failure"
        next_at = now + policy.delay(row.attempts)
        if next_at - row.created_at <= policy.give_up_after:
            row.state = OutboxState.PENDING
            row.next_attempt_at = next_at
            if row.sent_at is None:
                for message in carried(session, row):
                    message.delivery_error = f"retrying: {reason}"[:2000]
            return OutboxState.PENDING
        waiting = tuple(i for i, state in enumerate(current) if state == PENDING)
        gave_up = Result(REFUSED, f"gave up after {row.attempts} attempts: {reason}")
        lapsed = Envelope(waiting, tuple(str(row.recipients[i]) for i in waiting), "")
        _set(row, waiting, REFUSED)
        _refused_copies(session, row, lapsed, gave_up, now)
        row.last_error = gave_up.reason
    return _final(session, row, now)


def _final(session: Session, row: Outbox, now: dt.datetime) -> OutboxState:
    current = states(row, in_flight=False)
    addresses = [str(r) for r in row.recipients]
    unknown = [addresses[i] for i, state in enumerate(current) if state == UNKNOWN]
    if unknown:
        said = row.last_error or ""
        reason = said if said.startswith("delivery unknown") else STALE_UNKNOWN
        give_up(session, row, OutboxState.HELD, reason, now, unknown)
        return OutboxState.HELD
    if current and current[0] == REFUSED:
        give_up(session, row, OutboxState.FAILED, row.last_error or "refused", now, addresses[:1])
        return OutboxState.FAILED
    sent(session, row, now)
    return OutboxState.SENT


def recover_stale(
    session: Session,
    outbox_id: int,
    claimed_before: dt.datetime,
    delivered: bool | None,
    now: dt.datetime,
) -> OutboxState | None:
    """Settle a row whose attempt died, by what the transport can tell about the transaction
    it was in (`delivered`); recipients it had not reached yet are simply still pending."""
    row = session.get(Outbox, outbox_id, with_for_update=True, populate_existing=True)
    if (
        row is None
        or row.state != OutboxState.SENDING
        or row.claimed_at is None
        or row.claimed_at >= claimed_before
    ):
        return None
    row.attempt_id = None
    current = states(row, in_flight=True)
    in_flight = tuple(i for i, state in enumerate(current) if state == SENDING)
    outcome = {True: ACCEPTED, False: PENDING, None: UNKNOWN}[delivered]
    _set(row, in_flight, outcome)
    if outcome == ACCEPTED and 0 in in_flight:
        _reached_customer(session, row, now)
    if in_flight and outcome == UNKNOWN:
        row.last_error = STALE_UNKNOWN
    if PENDING in states(row, in_flight=False):
        row.state = OutboxState.PENDING
        row.next_attempt_at = now
        return row.state
    return _final(session, row, now)
