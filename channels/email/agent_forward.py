"""An agent forwards a customer's mail to the support address: it becomes that customer's mail.

Agents get customer mail in their own inbox too (the customer wrote to them directly, or to an
old address). Forwarding it to the support address opens the conversation for the *original*
sender: the forwarded message is the customer's message (their subject, date and text), and
what the agent wrote above the forward is an internal note by that agent.

Who may do this: a mail to the support address carries no signed token, so the From alone
would let anyone open conversations for any customer by forging an agent's address. A forward
is followed only when its sender is an active agent's verified address *and* the sender's domain
vouches for the mail (an aligned DKIM signature passes, or the channel's edge says DKIM or DMARC
passed), the check agent mail gets where a channel requires it (channels/email/sender_auth.py).
Anything else is the sender's own mail, as before; when it came from an agent's address the
reason it was not followed is kept in the message's flags (and `gateway explain` prints it).

Nothing is sent to the customer because of a forward: a new email conversation gets no
automatic acknowledgement from the gateway, so a forwarded one gets none either; the customer
hears from the team when an agent answers.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from channels.email.agent_reply import AgentMailPolicy, agent_by_address
from channels.email.forwarded import Forwarded, parse_forwarded, subject_without_forward_prefix
from channels.email.isolate import parse_isolated
from channels.email.parse import ParsedMail, ParseLimits
from channels.email.sender_auth import sender_authenticated
from channels.email.strip import is_forward_subject, strip_reply
from tickets import participants, services
from tickets.models import Agent, App, Conversation, InboundMail, Message

_ATTACHED_MESSAGE = frozenset({"message/rfc822", "message/global"})


@dataclass(frozen=True)
class AgentForward:
    """A forward to follow: the customer's mail as if they had sent it, and the agent's note."""

    agent_id: int
    agent_email: str
    original: ParsedMail
    note: str
    style: str
    date_text: str = ""

    def flag(self) -> dict[str, Any]:
        """What the stored message says about how it came (agents see it)."""
        flag: dict[str, Any] = {"agent": self.agent_email, "style": self.style}
        if self.date_text and self.original.date is None:
            flag["unread_date"] = self.date_text  # stored at arrival instead
        return flag


class NotFollowed(str):
    """Why a forward from an agent's address stays the sender's own mail."""


def looks_forwarded(parsed: ParsedMail) -> bool:
    return (
        parsed.stripped.forwarded
        or is_forward_subject(parsed.subject)
        or any(a.content_type in _ATTACHED_MESSAGE for a in parsed.attachments)
    )


def read_agent_forward(
    session: Session,
    app: App,
    row: InboundMail,
    parsed: ParsedMail,
    policy: AgentMailPolicy,
    limits: ParseLimits,
    now: dt.datetime,
) -> AgentForward | NotFollowed | None:
    """The forward to follow, the reason not to follow it, or None when this is not an agent's
    forward at all (the mail goes on as any sender's)."""
    if parsed.auto_reply is not None or not looks_forwarded(parsed):
        return None
    sender = parsed.from_address
    agent = agent_by_address(session, app.id, sender)
    if agent is None:
        return None
    if not sender_authenticated(row.raw, sender, policy.trusted_authserv_id, policy.dns):
        domain = sender.rpartition("@")[2]
        return NotFollowed(
            f"sent from agent {agent.email}'s address, but nothing proves it came from them: no "
            f"DKIM signature of {domain} passed and the channel's edge did not vouch for it"
        )
    # The forwarder's client wrote the forwarded date in the zone of the forward's own Date.
    reference = parsed.date if parsed.date is not None and parsed.date <= now else now
    forwarded = parse_forwarded(parsed.text, reference) if _inline(parsed) else None
    if forwarded is not None:
        original = _inline_original(parsed, forwarded)
        note, style, date_text = forwarded.note, forwarded.style, forwarded.date_text
    else:
        attached = next(
            (a for a in parsed.attachments if a.content_type in _ATTACHED_MESSAGE), None
        )
        if attached is None:
            return NotFollowed("no forwarded message found in it (no From line of the original)")
        original = _attached_original(parsed, parse_isolated(attached.content, limits))
        note, style, date_text = parsed.stripped.reply_text, "attachment", ""
    problem = _original_sender_problem(session, app, original, policy)
    if problem is not None:
        return NotFollowed(problem)
    if original.date is not None and original.date > now:
        original = dataclasses.replace(original, date=None)
    return AgentForward(
        agent_id=agent.id,
        agent_email=agent.email,
        original=original,
        note=strip_reply(note).reply_text if note.strip() else "",
        style=style,
        date_text=date_text,
    )


def _inline(parsed: ParsedMail) -> bool:
    return parsed.stripped.forwarded or is_forward_subject(parsed.subject)


def _inline_original(parsed: ParsedMail, forwarded: Forwarded) -> ParsedMail:
    """The forwarded block as the customer's mail. The forward's own Message-ID stays (a
    re-delivery of it is recognised); its threading headers are the agent's and are dropped."""
    subject = forwarded.subject or subject_without_forward_prefix(parsed.subject)
    return dataclasses.replace(
        parsed,
        from_name=forwarded.from_name,
        from_address=forwarded.from_address,
        subject=subject,
        date=forwarded.date,
        text=forwarded.text,
        html=None,
        stripped=strip_reply(forwarded.text, None, subject),
        in_reply_to=None,
        references=(),
        to=(),
        cc=forwarded.cc,
    )


def _attached_original(parsed: ParsedMail, inner: ParsedMail) -> ParsedMail:
    """The attached message is the customer's mail as it was: its own headers, so an answer
    to one of our emails threads by them; the forward's Message-ID is kept beside its own."""
    outer = (parsed.message_id,) if parsed.message_id else ()
    return dataclasses.replace(
        inner,
        message_id=inner.message_id or parsed.message_id,
        original_message_ids=tuple(
            dict.fromkeys((*inner.original_message_ids, *outer) if inner.message_id else ())
        ),
    )


def _original_sender_problem(
    session: Session, app: App, original: ParsedMail, policy: AgentMailPolicy
) -> str | None:
    address = original.from_address
    if not address:
        return "the forwarded message names no sender address, so it stays the forwarder's"
    # Any of the gateway's addresses, of any app and in any form: the team's answers would go
    # to the gateway itself or into another app's inbox.
    if participants.excluded(session, app.id, policy.addresses).is_ours(address):
        return f"the forwarded message is our own ({address}), not a customer's"
    if agent_by_address(session, app.id, address) is not None:
        return f"the forwarded message is from an agent ({address}), not from a customer"
    return None


def finish_agent_forward(
    session: Session, conversation_id: int, message_id: int, forward: AgentForward, now: dt.datetime
) -> None:
    """After the customer's message is stored: its own date, and the agent's note."""
    message = session.get(Message, message_id)
    if message is not None and forward.original.date is not None:
        message.created_at = forward.original.date.astimezone(dt.UTC)
    conversation = session.get(Conversation, conversation_id)
    agent = session.get(Agent, forward.agent_id)
    if forward.note and conversation is not None:
        services.add_note(session, conversation, agent, forward.note, now)
