"""The outbox: every outbound email is a row, stored with its Message-ID before any attempt.

`queue_email` is the one way to send mail (customer replies, agent notifications, channel tests):
it composes the message and adds the row in the caller's transaction. After the commit, the
caller enqueues `send_outbound(row.id)`, or leaves it to the scheduler's sweep.

At most one email per row and recipient: each recipient of a row is one SMTP transaction of its
own, under a return path naming the row and that recipient, and the row keeps which recipients
the relay accepted (channels/email/envelopes.py), so a retry never reaches one twice. An attempt
first *claims* the row (pending -> sending, with a fresh
attempt id, in its own short transaction), then talks to the relay with no transaction open, then
finishes the row only if its claim still holds. If the process dies in between, the row stays
`sending`; once the claim is stale the sweep asks the transport whether the message arrived. The
file transport can always tell (atomic rename). A relay cannot: a message it may have accepted is
never sent again automatically; the row is *held* with an internal note for an agent, who can
re-queue it (`gateway outbox retry ID`). We choose a possibly missing email, which an agent is
told about, over a possibly duplicated one, which nobody can take back.

Rows of one conversation go out in order: a row is not claimed while an earlier row of its
conversation is still pending or sending and has not yet reached the customer.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Exists, or_, select
from sqlalchemy.orm import Session, aliased

from channels.email.compose import compose, new_message_id
from channels.email.loop import LOOP_HEADER, loop_mark
from channels.email.tokens import BounceToken, Keyring, bounce_address
from tickets import services
from tickets.errors import NotAllowed, NotFound
from tickets.models import Conversation, Message, Outbox, OutboxState, ThreadRef

UNFINISHED = (OutboxState.PENDING, OutboxState.SENDING)

# Where each recipient of a row stands (`Outbox.recipient_states`, in the order of
# `recipients`; see channels/email/envelopes.py): not yet accepted; in a transaction now;
# accepted by the relay; refused for good; in a transaction that broke after the message went
# out (the relay may have it: never sent again automatically).
PENDING, SENDING, ACCEPTED, REFUSED, UNKNOWN = (
    "pending",
    "sending",
    "accepted",
    "refused",
    "unknown",
)


@dataclass(frozen=True)
class RetryPolicy:
    """RFC 5321 4.5.4: retry for days, not minutes; the last interval repeats."""

    schedule: tuple[dt.timedelta, ...]
    give_up_after: dt.timedelta

    def delay(self, attempts: int) -> dt.timedelta:
        return self.schedule[min(max(attempts, 1), len(self.schedule)) - 1]


def queue_email(
    session: Session,
    *,
    app_id: int,
    from_address: str,
    from_name: str,
    to: Sequence[str],
    subject: str,
    text: str,
    now: dt.datetime,
    cc: Sequence[str] = (),
    html: str | None = None,
    kind: str = "system",
    channel_id: int | None = None,
    conversation_id: int | None = None,
    message_ids: Sequence[int] = (),
    reply_to: str | None = None,
    in_reply_to: str | None = None,
    references: Sequence[str] = (),
    auto_submitted: bool = True,
    extra_headers: Sequence[tuple[str, str]] = (),
    attachments: Sequence[tuple[str, str, bytes]] = (),
    hold_reason: str | None = None,
    loop_keyring: Keyring | None = None,
    flush: bool = True,
) -> Outbox:
    """Compose one email and add its outbox row (flushed unless `flush` is False: a caller
    queueing many flushes once; not committed).

    `auto_submitted` adds `Auto-Submitted: auto-generated` (RFC 3834): right for notifications
    and other automatic mail, wrong for a person's reply. A `hold_reason` stores the row held
    for an agent instead of pending. For `kind="customer"` rows the Message-ID is recorded as a
    thread reference of the conversation, so the customer's answer threads back into it.
    `cc` are copied (the conversation's participants): recipients of the row like `to`.
    With a `loop_keyring` the email carries our signed loop mark: should it come back to a
    channel address, even under another Message-ID, it is dropped as our own.
    """
    if not to:
        raise ValueError("an email needs a recipient")
    message_id = new_message_id(from_address.rpartition("@")[2])
    if loop_keyring is not None:
        mark = loop_mark(loop_keyring, app_id, message_id)
        extra_headers = [*extra_headers, (LOOP_HEADER, mark)]
    raw = compose(
        from_name=from_name,
        from_address=from_address,
        to=to,
        cc=cc,
        subject=subject,
        text=text,
        html=html,
        message_id=message_id,
        date=now,
        reply_to=reply_to,
        in_reply_to=in_reply_to,
        references=references,
        auto_submitted=auto_submitted,
        extra_headers=extra_headers,
        attachments=attachments,
    )
    row = Outbox(
        app_id=app_id,
        conversation_id=conversation_id,
        channel_id=channel_id,
        kind=kind,
        message_id_header=message_id,
        mail_from=from_address,
        recipients=[*to, *cc],
        raw=raw,
        message_ids=list(message_ids),
        state=OutboxState.HELD if hold_reason else OutboxState.PENDING,
        last_error=hold_reason,
        attempts=0,
        next_attempt_at=None if hold_reason else now,
        created_at=now,
    )
    session.add(row)
    if kind == "customer" and conversation_id is not None:
        refs: list[int | None] = list(message_ids) or [None]
        for mid in refs:
            session.add(
                ThreadRef(
                    app_id=app_id,
                    message_id_header=message_id,
                    conversation_id=conversation_id,
                    message_id=mid,
                    outbound=True,
                    created_at=now,
                )
            )
    if flush:
        session.flush()
    return row


def return_path(keyring: Keyring, row: Outbox, recipient: int | None) -> str:
    """The envelope sender of a transaction of a row: `bounces+<token>@<its channel's domain>`
    (VERP), the token naming the row and the recipient (its index in `recipients`), so a bounce
    to it is tied to exactly that email and recipient whatever the bounce says. A transaction
    for several recipients at once (the file transport) gets a token naming the row only."""
    token = keyring.sign(BounceToken(row.app_id, row.id, recipient))
    return bounce_address(token, row.mail_from.rpartition("@")[2].lower())


def _earlier_unfinished() -> Exists:
    earlier = aliased(Outbox)
    return (
        select(earlier.id)
        .where(
            earlier.conversation_id == Outbox.conversation_id,
            earlier.id < Outbox.id,
            earlier.state.in_(UNFINISHED),
            # Once the customer has it, a copy still retried for a participant holds up nothing.
            earlier.sent_at.is_(None),
        )
        .exists()
    )


def due_ids(session: Session, now: dt.datetime, limit: int) -> list[int]:
    """Pending rows whose time has come and that are first in line in their conversation."""
    return list(
        session.scalars(
            select(Outbox.id)
            .where(
                Outbox.state == OutboxState.PENDING,
                Outbox.next_attempt_at <= now,
                ~_earlier_unfinished(),
            )
            .order_by(Outbox.next_attempt_at, Outbox.id)
            .limit(limit)
        )
    )


def stale_ids(session: Session, claimed_before: dt.datetime, limit: int) -> list[int]:
    """Rows left `sending` by an attempt that has not finished in time (its process died)."""
    return list(
        session.scalars(
            select(Outbox.id)
            .where(Outbox.state == OutboxState.SENDING, Outbox.claimed_at < claimed_before)
            .order_by(Outbox.id)
            .limit(limit)
        )
    )


def next_in_conversations(
    session: Session, finished: Sequence[Outbox], now: dt.datetime
) -> list[int]:
    """For each finished row, the next due pending row of its conversation (one statement)."""
    after = {r.conversation_id: r.id for r in finished if r.conversation_id is not None}
    if not after:
        return []
    following: dict[int, int] = {}
    for row_id, conversation_id in session.execute(
        select(Outbox.id, Outbox.conversation_id)
        .where(
            Outbox.conversation_id.in_(after),
            Outbox.id > min(after.values()),  # a range of the primary key, not the table
            Outbox.state == OutboxState.PENDING,
            Outbox.next_attempt_at <= now,
        )
        .order_by(Outbox.id)
    ):
        if conversation_id is not None and row_id > after[conversation_id]:
            following.setdefault(conversation_id, row_id)
    return sorted(following.values())


def claim_many(
    session: Session, outbox_ids: Sequence[int], attempt_id: str, now: dt.datetime
) -> list[Outbox]:
    """Take the rows for one attempt (in id order): those due, first in line in their
    conversation and not being sent; the others are left alone.

    The rows are locked as they are selected and rows another worker has locked are skipped
    (PostgreSQL; SQLite runs one writer at a time): of two workers given the same ids, each
    row is claimed by exactly one, and neither waits for the other.
    """
    if not outbox_ids:
        return []
    rows = session.scalars(
        select(Outbox)
        .where(
            Outbox.id.in_(sorted(set(outbox_ids))),
            Outbox.state == OutboxState.PENDING,
            or_(Outbox.next_attempt_at.is_(None), Outbox.next_attempt_at <= now),
            ~_earlier_unfinished(),
        )
        .order_by(Outbox.id)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    ).all()
    for row in rows:
        row.state = OutboxState.SENDING
        row.attempt_id = attempt_id
        row.claimed_at = now
        row.attempts = row.attempts + 1
    session.flush()
    return list(rows)


def claim(session: Session, outbox_id: int, attempt_id: str, now: dt.datetime) -> Outbox | None:
    """Take one row for one attempt; None if it is not due, not first in line, or taken."""
    rows = claim_many(session, [outbox_id], attempt_id, now)
    return rows[0] if rows else None


def held_by(session: Session, outbox_id: int, attempt_id: str) -> Outbox | None:
    return held_by_many(session, [outbox_id], attempt_id).get(outbox_id)


def held_by_many(session: Session, outbox_ids: Sequence[int], attempt_id: str) -> dict[int, Outbox]:
    """The rows this attempt still holds, locked, with the messages they carry loaded."""
    rows = session.scalars(
        select(Outbox)
        .where(Outbox.id.in_(sorted(set(outbox_ids))))
        .order_by(Outbox.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).all()
    held = {r.id: r for r in rows if r.state == OutboxState.SENDING and r.attempt_id == attempt_id}
    wanted = sorted({int(m) for r in held.values() for m in r.message_ids or ()})
    if wanted:
        # Into the session, where `carried` finds them without a statement each; held on to
        # for the transaction, as the session itself keeps unchanged objects only weakly.
        session.info["carried"] = session.scalars(
            select(Message).where(Message.id.in_(wanted))
        ).all()
    return held


def carried(session: Session, row: Outbox) -> list[Message]:
    """The messages the row carries (from the session when `held_by_many` loaded them)."""
    found = (session.get(Message, int(m)) for m in row.message_ids or ())
    return [m for m in found if m is not None]


def sent(session: Session, row: Outbox, now: dt.datetime) -> None:
    """Every recipient has it, or was refused for good with the customer's copy delivered."""
    row.state = OutboxState.SENT
    row.sent_at = row.sent_at or now
    row.last_error = None
    row.next_attempt_at = None
    for message in carried(session, row):
        if message.delivery_state in (None, "waiting", "queued", "failed", "held"):
            message.delivery_state = "sent"
            message.delivery_error = None


def attempt_failed(
    session: Session,
    outbox_id: int,
    attempt_id: str,
    reason: str,
    *,
    permanent: bool,
    policy: RetryPolicy,
    now: dt.datetime,
) -> OutboxState | None:
    """Record a failed attempt: back to pending with the next time, or failed for good."""
    row = held_by(session, outbox_id, attempt_id)
    if row is None:
        return None
    row.last_error = reason[:2000]
    next_at = now + policy.delay(row.attempts)
    if permanent or next_at - row.created_at > policy.give_up_after:
        final = reason if permanent else f"gave up after {row.attempts} attempts: {reason}"
        give_up(session, row, OutboxState.FAILED, final, now)
        return OutboxState.FAILED
    row.state = OutboxState.PENDING
    row.next_attempt_at = next_at
    for message in carried(session, row):
        message.delivery_error = f"retrying: {reason}"[:2000]
    return OutboxState.PENDING


def give_up(
    session: Session,
    row: Outbox,
    state: OutboxState,
    reason: str,
    now: dt.datetime,
    recipients: Sequence[str] | None = None,
) -> None:
    """A final failure (or a held row) for these recipients (all by default): the agents see
    it on the messages (unless the customer has them), in a note and in an event that
    notifies the assignee."""
    concerned = [str(r) for r in row.recipients] if recipients is None else list(recipients)
    row.state = state
    row.last_error = reason[:2000]
    row.next_attempt_at = None
    if row.sent_at is None:
        for message in carried(session, row):
            message.delivery_state = "failed" if state == OutboxState.FAILED else "held"
            message.delivery_error = reason[:2000]
    conversation = session.get(Conversation, row.conversation_id) if row.conversation_id else None
    if conversation is not None and row.kind == "customer":
        to = ", ".join(concerned)
        what = "could not be delivered" if state == OutboxState.FAILED else "was held, not sent"
        services.add_note(session, conversation, None, f"Email to {to} {what}: {reason}", now)
    ticket = conversation.ticket if conversation is not None else None
    services.record(
        session,
        app_id=row.app_id,
        kind="outbox.failed" if state == OutboxState.FAILED else "outbox.held",
        actor=services.SYSTEM,
        now=now,
        conversation=conversation,
        ticket=ticket,
        outbox_id=row.id,
        reason=reason[:500],
        assignee_id=ticket.assignee_id if ticket is not None else None,
    )


def retry(session: Session, outbox_id: int, now: dt.datetime) -> Outbox:
    """An agent re-queues a failed or held row; it goes out at the next sweep."""
    row = session.get(Outbox, outbox_id)
    if row is None:
        raise NotFound(f"no outbox row {outbox_id}")
    if row.state not in (OutboxState.FAILED, OutboxState.HELD):
        raise NotAllowed(f"outbox row {outbox_id} is {row.state.value}, not failed or held")
    row.state = OutboxState.PENDING
    row.next_attempt_at = now
    row.attempt_id = None
    if row.recipient_states is not None:  # again to all but those the relay accepted
        row.recipient_states = [
            ACCEPTED if state == ACCEPTED else PENDING for state in row.recipient_states
        ]
    for message in carried(session, row):
        message.delivery_state = "queued"
        message.delivery_error = None
    return row


def list_rows(session: Session, app_id: int, limit: int = 100) -> Sequence[Outbox]:
    return session.scalars(
        select(Outbox).where(Outbox.app_id == app_id).order_by(Outbox.id.desc()).limit(limit)
    ).all()
