"""Which of our emails a bounce is about, and what it may change: only what we can tie it to.

Anyone can write a delivery status notification naming any address; believing it would let a
stranger stop all email to a customer. So a bounce counts only when it is tied to an email we
sent, and then only for that email's recipients:

1. It came back to the email's VERP return path (`bounces+<token>@domain`, a bounce token we
   signed naming the outbox row and its recipient): attributed exactly to that row and
   recipient, whatever the report says or fails to say; a mail daemon's notice in a layout we
   cannot read, naming no address at all, counts there too (`reported`).
2. Otherwise its returned headers (the attached original, its headers, the original quoted in
   the text) carry the Message-ID of one of our outbox rows: it counts for those of that row's
   recipients that the report names.

A permanent failure marks the recipient's address undeliverable and the messages the email
carried as bounced; a delay marks nothing. Either way the conversation gets a note. Anything
else that looks like a bounce, and mail to a return path that is not a delivery report, is
kept (stored, processed, with the outcome saying why) and never applied or threaded.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from channels.email.bounce import Bounce
from channels.email.bounce.freetext import diagnostic_from, notice_part, permanence
from channels.email.bounce.text import DAEMON_LOCAL_RE
from channels.email.parse import ParsedMail
from channels.email.tokens import BounceToken, Keyring, TokenError, bounce_token_in
from tickets import participants, services
from tickets.models import Conversation, CustomerAddress, Message, Outbox

NOT_TIED = "not tied to our mail"


@dataclass(frozen=True)
class Tie:
    """One of our emails and the recipients of it that a bounce is about."""

    outbox: Outbox
    recipients: tuple[str, ...]
    by: str  # "return path" or "Message-ID"


def return_path_token(
    keyring: Keyring | None, app_id: int, addresses: Iterable[str]
) -> BounceToken | None:
    """The first return path among these recipient addresses whose token we signed for
    this app; a forged or foreign token is no return path (it was refused at RCPT)."""
    if keyring is None:
        return None
    for address in addresses:
        text = bounce_token_in(address)
        if text is None:
            continue
        try:
            token = keyring.verify_bounce(text)
        except TokenError:
            continue
        if token.app_id == app_id:
            return token
    return None


def reported(token: BounceToken | None, parsed: ParsedMail) -> Bounce | None:
    """The bounce a mail reports: as its layout reads; or, when a mail daemon writes to a
    return path naming one recipient, that recipient's failure even if no layout we know reads
    the notice (the return path says whose it is, the notice only whether it is final)."""
    if parsed.bounce is not None or token is None or token.recipient is None:
        return parsed.bounce
    sender = parsed.from_address or parsed.from_name
    if not DAEMON_LOCAL_RE.search(sender.rpartition("@")[0] or sender):
        return None  # a person, or their out-of-office, answering the envelope sender
    diagnostic = diagnostic_from(parsed.text)
    return Bounce(
        permanent=permanence(notice_part(parsed.text), parsed.subject, diagnostic),
        recipients=(),
        family="unread notice",
        original_message_id=None,
        diagnostic=diagnostic,
    )


def tie(
    session: Session, app_id: int, token: BounceToken | None, bounce: Bounce | None
) -> Tie | None:
    """The email (and its recipients) this bounce is about, or None when it is not ours."""
    if token is not None:
        row = session.get(Outbox, token.outbox_id)
        if row is None or row.app_id != app_id:
            return None
        sent_to = [str(r) for r in row.recipients]
        if token.recipient is not None and token.recipient < len(sent_to):
            return Tie(row, (sent_to[token.recipient],), "return path")
        named = _named(sent_to, bounce.recipients if bounce else ())
        return Tie(row, named, "return path") if named else None
    if bounce is None or not bounce.returned_message_ids:
        return None
    rows = session.scalars(
        select(Outbox)
        .where(
            Outbox.app_id == app_id,
            Outbox.message_id_header.in_(bounce.returned_message_ids),
        )
        .order_by(Outbox.id)
    ).all()
    for row in rows:
        named = _named([str(r) for r in row.recipients], bounce.recipients)
        if named:
            return Tie(row, named, "Message-ID")
    return None


def _named(sent_to: list[str], reported: Iterable[str]) -> tuple[str, ...]:
    """The recipients of our email that the report names (addresses compare without case)."""
    wanted = {address.lower() for address in reported}
    return tuple(r for r in sent_to if r.lower() in wanted)


def apply(session: Session, tied: Tie, bounce: Bounce, now: dt.datetime) -> str:
    """Mark what a tied bounce says; the outcome to store on the inbound mail."""
    marked: list[str] = []
    reason = bounce.diagnostic or "permanent delivery failure"
    row = tied.outbox
    if bounce.permanent:
        for address in session.scalars(
            select(CustomerAddress).where(
                CustomerAddress.app_id == row.app_id,
                CustomerAddress.address.in_([r.lower() for r in tied.recipients]),
            )
        ):
            if address.bounced_at is None:
                address.bounced_at = now
                address.bounce_reason = reason
                marked.append(address.address)
        if row.conversation_id is not None:  # a participant is no longer copied
            marked += participants.mark_bounced(session, row.conversation_id, tied.recipients, now)
        # The messages did not reach the customer only if the To did not get them; a copy
        # to a participant that bounced leaves them delivered.
        main = str(row.recipients[0]).lower() if row.recipients else ""
        if main in {r.lower() for r in tied.recipients}:
            carried = [int(i) for i in row.message_ids or ()]
            for message in session.scalars(select(Message).where(Message.id.in_(carried))):
                message.delivery_state = "bounced"
                message.delivery_error = bounce.diagnostic or "bounced"
    conversation = session.get(Conversation, row.conversation_id) if row.conversation_id else None
    if conversation is not None:
        kind = "could not be delivered" if bounce.permanent else "is delayed"
        services.add_note(
            session,
            conversation,
            None,
            f"Email to {', '.join(tied.recipients)} {kind}: {bounce.diagnostic or bounce.family}",
            now,
        )
    return (
        f"{describe(bounce)} of email {row.id}, tied by its {tied.by}; "
        f"marked undeliverable: {', '.join(marked) or 'none'}"
    )


def describe(bounce: Bounce) -> str:
    return f"bounce ({'permanent' if bounce.permanent else 'temporary'}, {bounce.family})"
