"""Whether a customer's mail may copy people into its conversation.

A participant receives every later reply of the conversation with the earlier messages quoted
below it: adding one lets them read the conversation. The From of a mail is whatever its
sender wrote, so the Cc of a customer's mail counts only when the mail is tied to the
conversation by something a stranger cannot have:

- it starts the conversation (there is nothing to read yet, and the customer is To on our
  answer, so a forged first mail is seen by the person it names);
- it came to the signed reply address of one of our emails of this conversation;
- it answers one of our emails of this conversation by Message-ID (ours are 26 random letters,
  seen only by the people we sent them to). The customer's own Message-IDs do not count:
  everyone the customer wrote to has them, and a list archive publishes them.

Mail threaded by the same sender and subject alone (a guessable subject and a forged From)
threads, but copies nobody. Where the channel trusts its edge's Authentication-Results, a DMARC
fail for the From's domain (the domain's owner says the mail is not theirs) copies nobody
either. What is not added is told to the team (`participant.not_added`), who can add by hand.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from channels.email.sender_auth import trusted_dmarc_failed
from tickets.models import ThreadRef

# Threading rules (channels/email/threading_rules.py) whose match ties the mail to the conversation.
TIED_RULES = frozenset({"reply token", "new conversation"})
HEADER_RULES = frozenset({"in-reply-to", "references"})


def copy_refusal(
    session: Session,
    app_id: int,
    conversation_id: int,
    rule: str | None,
    cited: Sequence[str],
    raw: bytes,
    sender: str,
    authserv_id: str | None,
) -> str | None:
    """Why this mail's Cc must not become participants, or None when it may."""
    if authserv_id and trusted_dmarc_failed(raw, authserv_id, sender.rpartition("@")[2]):
        return "the sender's domain says the mail is not theirs (DMARC failed)"
    if rule in TIED_RULES:
        return None
    if rule in HEADER_RULES and cites_ours(session, app_id, conversation_id, cited):
        return None
    return "the mail does not answer one of our emails of this conversation"


def cites_ours(session: Session, app_id: int, conversation_id: int, cited: Sequence[str]) -> bool:
    """Whether one of these Message-IDs is one of our emails of this conversation."""
    if not cited:
        return False
    return (
        session.scalar(
            select(ThreadRef.id)
            .where(
                ThreadRef.app_id == app_id,
                ThreadRef.conversation_id == conversation_id,
                ThreadRef.outbound.is_(True),
                ThreadRef.message_id_header.in_(list(dict.fromkeys(cited))),
            )
            .limit(1)
        )
        is not None
    )
