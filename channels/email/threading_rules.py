"""Which conversation an inbound mail belongs to: the pipeline's dedupe, reply-token and thread
steps.

A copy already stored ends processing (dedupe). Then the rules, in order: a signed reply token
in a recipient address (rule 1), In-Reply-To, References, and the same sender and subject
within a few days; a header match counts only for the conversation's own customer or one of
its participants.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re

from sqlalchemy import select

from channels.email.parse import ParsedMail
from channels.email.process_record import Processing, find_customer
from channels.email.tokens import CustomerToken, TokenError, find_token
from tickets import participants
from tickets.models import Conversation, ConversationState

_SUBJECT_PREFIX = re.compile(
    r"^\s*((re|aw|sv|vs|antw|fwd?|wg|tr|rv|r|odp|ynt|enc)\s*(\[\d+\])?\s*:\s*)+", re.IGNORECASE
)


def normalized_subject(subject: str) -> str:
    return " ".join(_SUBJECT_PREFIX.sub("", subject).split()).casefold()


def body_digest(parsed: ParsedMail) -> str:
    return hashlib.sha256((parsed.subject + "\0" + parsed.text).encode()).hexdigest()


def step_dedupe(p: Processing) -> None:
    assert p.parsed
    if not p.parsed.message_id:
        return
    digest = body_digest(p.parsed)
    # Two copies processed at once by two workers: the batch holds the lock of this
    # Message-ID (channels/email/batch_index.py), so the second finds the first stored.
    mids = [p.parsed.message_id, *p.parsed.original_message_ids]
    refs = [ref for ref in p.index.refs(p.app.id, mids) if not ref.outbound]
    if any(r.content_sha256 == digest for r in refs):
        p.outcome = f"duplicate of a stored message ({p.parsed.message_id})"
    elif refs:
        p.duplicate_message_id = True


def step_reply_token(p: Processing) -> None:
    """Threading rule 1: a signed token in a recipient address (envelope first, then To, Cc).

    A token that does not verify is ignored (flagged): a customer's mail must still thread by
    its headers, and a forged token must not route anything anywhere.
    """
    assert p.parsed
    if p.rules.keyring is None:
        return
    recipients = [*map(str, p.row.envelope_to or ()), *p.parsed.to, *p.parsed.cc]
    text = find_token(recipients, p.rules.channel_addresses)
    if text is None:
        return
    try:
        token = p.rules.keyring.verify(text)
    except TokenError as exc:
        p.flags["reply_token_rejected"] = exc.reason
        return
    if token.app_id != p.app.id:
        p.flags["reply_token_rejected"] = "other-app"  # noqa: S105 - a reason code
        return
    p.token = token


def step_thread(p: Processing) -> None:
    """Find the conversation: In-Reply-To, then References, then same sender and subject.

    A header match is accepted only for the conversation's own customer: a forwarded thread
    answered by someone else starts that person's own conversation instead of merging, with a
    pointer to the thread it answered so an agent can link the two by hand.
    """
    assert p.parsed
    sender = p.parsed.from_address
    if isinstance(p.token, CustomerToken):
        conversation = p.session.get(Conversation, p.token.conversation_id)
        if (
            conversation is not None
            and conversation.app_id == p.app.id
            and conversation.customer_id == p.token.customer_id
            and _may_write(p, conversation, sender)
        ):
            p.conversation, p.rule = conversation, "reply token"
            _flag_new_topic(p, conversation)
            return
        if conversation is not None:
            p.flags.setdefault("answers_conversation_of_someone_else", conversation.id)
    candidates = [p.parsed.in_reply_to] if p.parsed.in_reply_to else []
    candidates += list(reversed(p.parsed.references))
    for mid in candidates:
        conversation_id = _conversation_of(p, mid)
        if conversation_id is None:
            continue
        conversation = p.session.get(Conversation, conversation_id)
        if conversation is None:
            continue
        if not _may_write(p, conversation, sender):
            p.flags.setdefault("answers_conversation_of_someone_else", conversation.id)
            continue
        p.conversation = conversation
        p.rule = "in-reply-to" if mid == p.parsed.in_reply_to else "references"
        _flag_new_topic(p, conversation)
        return
    if p.rules.subject_threading and p.parsed.subject:
        wanted = normalized_subject(p.parsed.subject)
        since = p.now - dt.timedelta(days=p.rules.subject_threading_days)
        customer = p.customer = find_customer(p, sender)
        p.customer_looked_up = True
        if customer is not None and wanted:
            recent = p.session.scalars(
                select(Conversation)
                .where(
                    Conversation.customer_id == customer.id,
                    Conversation.state.in_([ConversationState.OPEN, ConversationState.SNOOZED]),
                    Conversation.updated_at >= since,
                )
                .order_by(Conversation.updated_at.desc())
            ).all()
            for conversation in recent:
                if normalized_subject(conversation.subject) == wanted:
                    p.conversation, p.rule = conversation, "same sender and subject"
                    return
    p.rule = "new conversation"


def _conversation_of(p: Processing, message_id: str) -> int | None:
    """The conversation of the first stored message with this Message-ID."""
    refs = p.index.refs(p.app.id, [message_id])
    return refs[0].conversation_id if refs else None


def _flag_new_topic(p: Processing, conversation: Conversation) -> None:
    """People answer an old mail to ask something new; a changed subject under a header match
    is the sign. The mail still threads (the headers are the stronger evidence), but agents see
    the flag and can split it off."""
    assert p.parsed
    new = normalized_subject(p.parsed.subject)
    old = normalized_subject(conversation.subject)
    if new and old and new not in old and old not in new:
        p.flags["possible_new_topic"] = {"previous_subject": conversation.subject}


def _owns(conversation: Conversation, address: str) -> bool:
    return any(a.address == address for a in conversation.customer.addresses)


def _may_write(p: Processing, conversation: Conversation, address: str) -> bool:
    """The conversation's customer, or one of its participants (flagged: the message is
    theirs). Only the token and header rules ask this: a subject never lets a participant in."""
    if _owns(conversation, address):
        return True
    if participants.find(conversation, address) is None:
        return False
    p.flags["participant"] = True
    return True
