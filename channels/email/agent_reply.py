"""Accept, or reject, an agent's answer to a notification, written in their own mail client.

The From header is trivial to forge, so a mail sent to `support+<agent-token>@domain` is posted
in an agent's name only when every check passes: the token is authentic, of the agent kind, of
this app, not expired; the conversation and the agent exist; the From is one of that agent's
verified addresses; and, where the channel requires it, an aligned DKIM signature passes
(channels/email/sender_auth.py).

Then the quote is cut, the commands on the first lines are read (agent_commands.py) and applied
as that agent (agent_actions.py), and the rest is posted as a public reply, or as an internal
note for `/note` or a note token. Any failed check raises `AgentMailRejected`: the caller
quarantines the mail with the reason and `record_rejection` leaves an event from which the
agent's registered address (never the From of the mail) is told why.

`handle_agent_mail` is what the inbound pipeline calls; it returns None for mail that is not
agent mail, so the customer path (threading rule 1 with customer tokens and the rest) goes on.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from channels.email.addresses import header_addresses, raw_values
from channels.email.agent_actions import apply_commands
from channels.email.agent_commands import CommandError, new_text, read_reply
from channels.email.headers import header_text
from channels.email.parse import MessageRejected, ParsedMail, attachment_rows
from channels.email.sender_auth import DnsFunc, sender_authenticated
from channels.email.tokens import (
    AgentToken,
    Keyring,
    TokenError,
    TokenExpired,
    find_token,
    peek_kind,
    peek_person_id,
)
from tickets import participants, services
from tickets.models import (
    Agent,
    AgentAddress,
    App,
    Conversation,
    InboundMail,
    ThreadRef,
    Via,
)
from tickets.text import clipped, storable


@dataclass(frozen=True)
class AgentMailPolicy:
    """What accepting agent mail on one channel depends on."""

    keyring: Keyring
    addresses: frozenset[str]  # the channel's own addresses, where tokens are looked for
    require_dkim: bool = False
    trusted_authserv_id: str | None = None
    timezone: str = "UTC"  # for `/snooze monday 9:00`
    max_participants: int = participants.MAX_PARTICIPANTS  # for `/cc add`
    dns: DnsFunc | None = None  # dkimpy's TXT lookup; None = the system resolver


class AgentMailRejected(MessageRejected):
    """Agent mail that must not be posted; quarantined, and the agent is told why."""

    def __init__(
        self,
        reason: str,
        detail: str,
        *,
        app_id: int,
        agent_id: int | None,
        conversation_id: int | None = None,
    ) -> None:
        super().__init__(f"agent mail rejected ({reason}): {detail}")
        self.reason = reason
        self.detail = detail
        self.app_id = app_id
        self.agent_id = agent_id
        self.conversation_id = conversation_id


@dataclass
class AgentMailResult:
    """What became of an agent's mail; `outcome` is the line of its processing record."""

    outcome: str
    conversation_id: int
    message_id: int | None = None
    note_id: int | None = None
    commands: list[str] = field(default_factory=list)


def _recipients(row: InboundMail, parsed: ParsedMail) -> list[str]:
    return [*(row.envelope_to or []), *parsed.to, *parsed.cc]


def agent_by_address(session: Session, app_id: int, address: str) -> Agent | None:
    return session.scalar(
        select(Agent)
        .join(AgentAddress, AgentAddress.agent_id == Agent.id)
        .where(
            Agent.app_id == app_id,
            Agent.active.is_(True),
            AgentAddress.address == address.lower(),
            AgentAddress.verified.is_(True),
        )
    )


def _active_agent(session: Session, agent_id: int | None, app_id: int) -> Agent | None:
    agent = session.get(Agent, agent_id) if agent_id is not None else None
    if agent is None or not agent.active or agent.app_id != app_id:
        return None
    return agent


def handle_agent_mail(
    session: Session,
    app: App,
    row: InboundMail,
    parsed: ParsedMail,
    policy: AgentMailPolicy,
    now: dt.datetime,
) -> AgentMailResult | None:
    """Post an agent's mail, or raise AgentMailRejected; None if it is not agent mail.

    Agent mail is mail to a token address whose token claims the agent kind, or whose sender is
    one of this app's agents. Everything else (a customer's reply with a customer token, or with
    a mangled one) is left to the customer path, where it can never be posted as an agent.
    """
    text = find_token(_recipients(row, parsed), policy.addresses)
    if text is None:
        return None
    sender = parsed.from_address
    from_agent = agent_by_address(session, app.id, sender)
    claimed = peek_kind(text)
    if claimed != "agent" and from_agent is None:
        return None

    def reject(
        reason: str, detail: str, agent: Agent | None, conversation_id: int | None = None
    ) -> AgentMailRejected:
        # The notice goes to the agent the token names (if authentic), else to the agent whose
        # address the mail claims; always to their registered address, never to the From.
        return AgentMailRejected(
            reason,
            detail,
            app_id=agent.app_id if agent else app.id,
            agent_id=agent.id if agent else None,
            conversation_id=conversation_id,
        )

    try:
        token = policy.keyring.verify_agent(text, now)
    except TokenExpired as exc:
        agent = _active_agent(session, exc.token.agent_id, exc.token.app_id)
        raise reject(
            "expired",
            f"{exc}. Answer from the app, or wait for the next notification, whose address is new.",
            agent,
            exc.token.conversation_id if agent and agent.app_id == app.id else None,
        ) from None
    except TokenError as exc:
        fallback = from_agent or _active_agent(session, peek_person_id(text), app.id)
        what = (
            "the address you replied to is a customer's reply address, not your notification's"
            if exc.reason == "wrong-kind"
            else f"the reply address is not valid ({exc})"
        )
        raise reject(exc.reason, f"{what}. Reply to a notification email.", fallback) from None
    agent = _active_agent(session, token.agent_id, token.app_id)
    if token.app_id != app.id:
        raise reject("other-app", "the reply address belongs to another workspace's channel", agent)
    conversation = session.get(Conversation, token.conversation_id)
    if conversation is None or conversation.app_id != app.id:
        raise reject("no-conversation", "the conversation no longer exists", agent)
    if agent is None:
        raise reject("no-agent", "the agent of this reply address is not active", None)
    verified = {a.address for a in agent.addresses if a.verified}
    if sender not in verified:
        raise reject(
            "sender",
            f"it came from {sender or 'no address'}, which is not one of your verified "
            "addresses; a forwarded notification cannot be answered by someone else. "
            "Answer from your own address, or from the app.",
            agent,
            conversation.id,
        )
    if policy.require_dkim and not sender_authenticated(
        row.raw, sender, policy.trusted_authserv_id, policy.dns
    ):
        raise reject(
            "dkim",
            "this channel requires a DKIM signature of your domain, and none passed. "
            "Send from your organization's mail server, or answer from the app.",
            agent,
            conversation.id,
        )
    if parsed.auto_reply is not None:
        return AgentMailResult(
            f"ignored an automatic reply of agent {agent.email} ({parsed.auto_reply})",
            conversation.id,
        )
    duplicate = parsed.message_id and session.scalar(
        select(ThreadRef.id).where(
            ThreadRef.app_id == app.id,
            ThreadRef.message_id_header == parsed.message_id,
            ThreadRef.outbound.is_(False),
        )
    )
    if duplicate:
        return AgentMailResult(f"duplicate of agent mail {parsed.message_id}", conversation.id)
    return _post(session, app, row, parsed, policy, now, token, agent, conversation, reject)


def _post(
    session: Session,
    app: App,
    row: InboundMail,
    parsed: ParsedMail,
    policy: AgentMailPolicy,
    now: dt.datetime,
    token: AgentToken,
    agent: Agent,
    conversation: Conversation,
    reject: Callable[..., AgentMailRejected],
) -> AgentMailResult:
    body = new_text(parsed.stripped.reply_text or "")
    try:
        reply = read_reply(body)
    except CommandError as exc:
        raise reject("command", str(exc), agent, conversation.id) from None
    as_note = token.purpose == "note" or reply.as_note
    if not reply.text and not parsed.attachments and not reply.commands:
        raise reject(
            "empty",
            "there was no new text above the quoted notification. Write your answer above it.",
            agent,
            conversation.id,
        )
    result = AgentMailResult("", conversation.id)
    if reply.text or parsed.attachments:
        if as_note:
            text = reply.text or "(attachments only)"
            if parsed.attachments:
                names = ", ".join(a.filename for a in parsed.attachments)
                text += f"\n\n[attached by email: {names}; kept with inbound mail {row.id}]"
            result.note_id = services.add_note(session, conversation, agent, text, now).id
        else:
            message = services.add_agent_message(
                session,
                conversation,
                agent,
                reply.text or "(attachment)",
                now,
                via=Via.EMAIL,
                email_message_id=parsed.message_id,
                inbound_mail_id=row.id,
                from_address=parsed.from_address,
                flags={"agent_mail": True},
            )
            message.attachments.extend(attachment_rows(parsed))
            result.message_id = message.id
            row.message_id = message.id
    try:
        result.commands = apply_commands(
            session,
            conversation,
            agent,
            reply.commands,
            now,
            policy.timezone,
            max_participants=policy.max_participants,
            own=policy.addresses,
        )
    except CommandError as exc:
        raise reject("command", str(exc), agent, conversation.id) from None
    if parsed.message_id:
        session.add(
            ThreadRef(
                app_id=app.id,
                message_id_header=parsed.message_id,
                conversation_id=conversation.id,
                message_id=result.message_id,
                outbound=False,
                created_at=now,
            )
        )
    posted = (
        f"note {result.note_id}"
        if result.note_id
        else f"message {result.message_id}"
        if result.message_id
        else "no text"
    )
    commands = f"; commands: {', '.join(result.commands)}" if result.commands else ""
    result.outcome = (
        f"agent mail from {agent.email} posted as {posted} in conversation {conversation.id}"
        f"{commands}"
    )
    return result


def record_rejection(
    session: Session, row: InboundMail, exc: AgentMailRejected, now: dt.datetime
) -> None:
    """Leave the event from which the agent's notice is sent (after the quarantine)."""
    parsed_from = subject = ""
    try:
        message = email.message_from_bytes(row.raw[:65536], policy=email.policy.compat32)
        # The notice shows the address the mail came from, not only a name that claims one;
        # raw 8-bit or NUL in these headers must not fail the event's JSON on PostgreSQL.
        senders = header_addresses(message, "From").mailboxes
        parsed_from = clipped(
            ", ".join(f"{m.name} <{m.address}>" if m.name else m.address for m in senders)
            or " ".join(raw_values(message, "From")),
            320,
        )
        subject = clipped(storable(header_text(message, "Subject")), 300)
    except (TypeError, ValueError):
        pass
    conversation = session.get(Conversation, exc.conversation_id) if exc.conversation_id else None
    services.record(
        session,
        app_id=exc.app_id,
        kind="agent_mail.rejected",
        actor=services.SYSTEM,
        now=now,
        conversation=conversation,
        agent_id=exc.agent_id,
        reason=exc.reason,
        detail=exc.detail,
        inbound_id=row.id,
        mail_from=parsed_from,
        subject=subject,
    )
