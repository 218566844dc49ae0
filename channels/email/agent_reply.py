"""Accept, or reject, an agent's answer to a notification, written in their own mail client.

The From header is trivial to forge, so a mail sent to `support+<agent-token>@domain` is posted
in an agent's name only when every check passes: the token is authentic, of the agent kind, of
this app, not expired; the conversation and the agent exist; the From is one of that agent's
verified addresses; and, where the channel requires it, an aligned DKIM signature passes
(checked here with dkimpy, or read from the channel's own edge's Authentication-Results).

Then the quote is cut, commands on the first lines are applied as that agent (`/note`,
`/assign NAME|me`, `/snooze 2d`, `/priority high`, `/status waiting`, `/resolve`, `/tag refund`,
`/category billing`, `/cc add pat@example.com`, `/cc remove pat@example.com`) and the rest is
posted as a public reply, or as an internal note for `/note` or a note token. Any failed check
raises `AgentMailRejected`: the caller quarantines the mail with the reason and
`record_rejection` leaves an event from which the agent's registered address (never the From of
the mail) is told why.

`handle_agent_mail` is what the inbound pipeline calls; it returns None for mail that is not
agent mail, so the customer path (threading rule 1 with customer tokens and the rest) goes on.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import authres
import dkim
import dns.exception
import dns.resolver
from sqlalchemy import select
from sqlalchemy.orm import Session

from channels.email.addresses import header_addresses, raw_values
from channels.email.headers import header_text
from channels.email.parse import MessageRejected, ParsedMail
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
from tickets.business_time import DurationTooLong, parse_duration
from tickets.errors import InvalidValue, NotAllowed, NotFound
from tickets.models import (
    Agent,
    AgentAddress,
    App,
    Attachment,
    Conversation,
    InboundMail,
    ThreadRef,
    Via,
)
from tickets.text import clipped, storable

DnsFunc = Callable[..., bytes | None]
# Every notification carries this line above its content; an answer is what is written above it.
REPLY_MARKER = "Reply above this line"


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


# --- commands ------------------------------------------------------------------------------

COMMANDS = ("note", "assign", "snooze", "priority", "status", "resolve", "tag", "category", "cc")
_COMMAND_LINE = re.compile(r"^/([A-Za-z]+)(?:[ \t]+(.*?))?[ \t]*$")
_WEEKDAYS = {
    name: i
    for i, names in enumerate(
        (
            ("monday", "mon"),
            ("tuesday", "tue"),
            ("wednesday", "wed"),
            ("thursday", "thu"),
            ("friday", "fri"),
            ("saturday", "sat"),
            ("sunday", "sun"),
        )
    )
    for name in names
}
_CLOCK = re.compile(r"^(\d{1,2})(?::(\d{2}))?$")


@dataclass(frozen=True)
class Command:
    name: str
    argument: str = ""


@dataclass(frozen=True)
class Reply:
    """An agent's mail read as commands plus the text to post."""

    commands: tuple[Command, ...]
    text: str

    @property
    def as_note(self) -> bool:
        return any(c.name == "note" for c in self.commands)


class CommandError(ValueError):
    """A command that cannot be applied; the message is what the agent is told."""


def read_reply(text: str) -> Reply:
    """Split the commands on the first lines from the text below them.

    A line like `/word ...` at the top is a command; an unknown word there is an error rather
    than text, so a typo never mails `/prioirty high` to a customer. A path such as `/etc/hosts`
    is text: the word must end at a space or the line's end.
    """
    lines = text.replace("\r\n", "\n").split("\n")
    commands: list[Command] = []
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if not line and not commands:
            i += 1
            continue
        match = _COMMAND_LINE.match(line)
        if match is None:
            break
        name = match.group(1).lower()
        if name not in COMMANDS:
            raise CommandError(f"unknown command /{name} (known: /{', /'.join(COMMANDS)})")
        argument = (match.group(2) or "").strip()
        if (
            name in ("assign", "snooze", "priority", "status", "tag", "category", "cc")
            and not argument
        ):
            raise CommandError(f"/{name} needs a value, for example {_EXAMPLES[name]}")
        if name == "resolve" and argument:
            raise CommandError("/resolve takes no value")
        commands.append(Command(name, argument))
        i += 1
    rest = "\n".join(lines[i:]).strip()
    note = next((c for c in commands if c.name == "note" and c.argument), None)
    if note is not None:  # "/note the refund is approved" carries text on its own line
        rest = f"{note.argument}\n{rest}".strip()
    return Reply(tuple(commands), rest)


_EXAMPLES = {
    "assign": "/assign me",
    "snooze": "/snooze 2d or /snooze monday 9:00",
    "priority": "/priority high",
    "status": "/status waiting",
    "tag": "/tag refund",
    "category": "/category billing",
    "cc": "/cc add pat@example.com or /cc remove pat@example.com",
}


def parse_when(text: str, now: dt.datetime, timezone: str = "UTC") -> dt.datetime:
    """`2d`, `4h30m`, `monday 9:00`, `tomorrow`, `friday`, or an ISO 8601 time; in the future."""
    value = text.strip().lower()
    try:
        return now + parse_duration(value)
    except DurationTooLong as exc:
        raise CommandError(str(exc)) from None
    except ValueError:
        pass
    try:
        parsed = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        parsed = None
    zone = ZoneInfo(timezone)
    if parsed is not None:
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=zone)).astimezone(dt.UTC)
    words = value.split()
    if not words or len(words) > 2:
        raise CommandError(f"cannot read {text!r} as a time (try 2d, 4h or monday 9:00)")
    hour, minute = 9, 0
    if len(words) == 2:
        clock = _CLOCK.match(words[1])
        if clock is None or int(clock.group(1)) > 23 or int(clock.group(2) or 0) > 59:
            raise CommandError(f"cannot read {words[1]!r} as a time of day (try 9:00)")
        hour, minute = int(clock.group(1)), int(clock.group(2) or 0)
    local_now = now.astimezone(zone)
    day = words[0]
    if day == "today":
        ahead = 0
    elif day == "tomorrow":
        ahead = 1
    elif day in _WEEKDAYS:
        ahead = (_WEEKDAYS[day] - local_now.weekday()) % 7 or 7
    else:
        raise CommandError(f"cannot read {text!r} as a time (try 2d, 4h or monday 9:00)")
    date = local_now.date() + dt.timedelta(days=ahead)
    when = dt.datetime.combine(date, dt.time(hour, minute), tzinfo=zone).astimezone(dt.UTC)
    if when <= now:
        raise CommandError(f"{text!r} is in the past")
    return when


def new_text(stripped: str) -> str:
    """The agent's own words: what the quote stripper kept, cut again at any quoted line.

    The stripper keeps a whole mail when it finds nothing above the quote (customers answer
    below it, too). For an agent that would post the quoted notification, with its ticket
    details and notes, to the customer; so here any `>` line or our marker ends the answer,
    together with the attribution line just above it.
    """
    lines = stripped.splitlines()
    for i, line in enumerate(lines):
        if line.lstrip().startswith(">") or REPLY_MARKER.lower() in line.lower():
            kept = lines[:i]
            while kept and not kept[-1].strip():
                kept.pop()
            if kept and kept[-1].rstrip().endswith(":"):
                kept.pop()  # "On Sun, 29 Nov 2026, Acme Support <...> wrote:"
            return "\n".join(kept).strip()
    return stripped.strip()


def _find_colleague(session: Session, app_id: int, me: Agent, who: str) -> Agent:
    wanted = who.strip().lower()
    if wanted == "me":
        return me
    agents = session.scalars(
        select(Agent).where(Agent.app_id == app_id, Agent.active.is_(True)).order_by(Agent.id)
    ).all()
    for match in (
        lambda a: a.email == wanted,
        lambda a: a.name.lower() == wanted,
        lambda a: a.name.lower().split()[0] == wanted if a.name.split() else False,
    ):
        found = [a for a in agents if match(a)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise CommandError(f"/assign {who}: more than one agent is called that; use an email")
    raise CommandError(f"/assign {who}: no agent by that name or address")


def apply_commands(
    session: Session,
    conversation: Conversation,
    agent: Agent,
    commands: Iterable[Command],
    now: dt.datetime,
    timezone: str = "UTC",
    *,
    max_participants: int = participants.MAX_PARTICIPANTS,
    own: Iterable[str] = (),
) -> list[str]:
    """Apply the commands as `agent`; a short description of each, for the processing record.
    `own` are the channel addresses (never a participant), `max_participants` the limit."""
    actor = services.Actor.agent(agent)
    done: list[str] = []
    for command in commands:
        name, arg = command.name, command.argument
        try:
            if name == "note":
                continue
            if name == "tag":
                for tag in arg.replace(",", " ").split():
                    services.add_tag(session, conversation, tag, actor, now)
            elif name == "snooze":
                services.snooze(session, conversation, parse_when(arg, now, timezone), actor, now)
            elif name == "resolve":
                services.resolve(session, conversation, actor, now)
            elif name == "cc":
                _cc(session, conversation, actor, arg, now, max_participants, own)
            else:
                ticket = conversation.ticket
                if ticket is None:
                    raise CommandError(f"/{name} works on tickets; this conversation is none yet")
                if name == "assign":
                    target = _find_colleague(session, conversation.app_id, agent, arg)
                    services.assign(session, ticket, target, actor, now)
                elif name == "priority":
                    services.set_priority(session, ticket, arg.lower(), actor, now)
                elif name == "status":
                    services.set_status(session, ticket, arg.lower(), actor, now)
                elif name == "category":
                    services.set_category(session, ticket, arg, actor, now)
        except (InvalidValue, NotAllowed, NotFound) as exc:
            raise CommandError(f"/{name} {arg}".strip() + f": {exc}") from None
        done.append(f"/{name} {arg}".strip())
    return done


def _cc(
    session: Session,
    conversation: Conversation,
    actor: services.Actor,
    argument: str,
    now: dt.datetime,
    limit: int,
    own: Iterable[str],
) -> None:
    """`/cc add a@x.test [b@y.test ...]` or `/cc remove a@x.test ...`."""
    verb, *addresses = argument.replace(",", " ").split()
    if verb.lower() not in ("add", "remove") or not addresses:
        raise CommandError(f"/cc {argument}: write {_EXAMPLES['cc']}")
    for address in addresses:
        if verb.lower() == "add":
            participants.add(session, conversation, address, actor, now, limit=limit, own=own)
        else:
            participants.remove(session, conversation, address, actor, now)


# --- sender checks -------------------------------------------------------------------------


def _aligned(signing_domain: str, author_domain: str) -> bool:
    # Relaxed alignment (RFC 7489): the signer is the author's domain or a parent of it.
    signing = signing_domain.lower().rstrip(".")
    author = author_domain.lower().rstrip(".")
    return bool(signing) and (
        author == signing or (author.endswith("." + signing) and "." in signing)
    )


def resolver_txt(host: str, port: int = 53) -> DnsFunc:
    """A TXT lookup for dkimpy that asks one named DNS server (e.g. a local validating
    resolver) instead of the system's."""

    def get_txt(name: bytes, timeout: int = 5) -> bytes | None:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [host]
        resolver.port = port
        resolver.lifetime = timeout
        try:
            answer = resolver.resolve(name.decode("ascii"), "TXT")
        except (dns.exception.DNSException, UnicodeDecodeError):
            return None
        return b"".join(answer[0].strings)

    return get_txt


def dkim_pass_domains(raw: bytes, dns: DnsFunc | None = None) -> set[str]:
    """The d= domains of the DKIM signatures of `raw` that verify (dkimpy, with `dns`)."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    count = len(message.get_all("DKIM-Signature") or [])
    passed: set[str] = set()
    for index in range(count):
        checker = dkim.DKIM(raw)
        try:
            ok = checker.verify(idx=index, dnsfunc=dns) if dns else checker.verify(idx=index)
        except (dkim.DKIMException, ValueError, IndexError):
            ok = False
        if ok and checker.domain:
            passed.add(checker.domain.decode("ascii", "replace").lower())
    return passed


def trusted_results_pass(raw: bytes, authserv_id: str, author_domain: str) -> bool:
    """True when the first Authentication-Results of our own edge says DKIM (aligned) or DMARC
    passed. Results of any other authserv-id are ignored: anyone can write them. The edge must
    remove headers claiming its id from incoming mail, as RFC 8601 section 5 requires."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    for value in message.get_all("Authentication-Results") or []:
        try:
            header = authres.AuthenticationResultsHeader.parse_value(" ".join(str(value).split()))
        except authres.AuthResError:
            continue
        if (header.authserv_id or "").lower() != authserv_id.lower():
            continue
        for result in header.results:
            props = {(p.type, p.name): str(p.value) for p in result.properties}
            if result.result != "pass":
                continue
            if result.method == "dkim" and _aligned(props.get(("header", "d"), ""), author_domain):
                return True
            if result.method == "dmarc" and props.get(("header", "from"), "").lower() == (
                author_domain.lower()
            ):
                return True
        return False  # only the first header of our edge counts
    return False


# --- the pipeline's entry ------------------------------------------------------------------


@dataclass
class AgentMailResult:
    outcome: str
    agent_id: int
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
    if policy.require_dkim and not sender_authenticated(row.raw, sender, policy):
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
            agent.id,
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
        return AgentMailResult(
            f"duplicate of agent mail {parsed.message_id}", agent.id, conversation.id
        )
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
    result = AgentMailResult("", agent.id, conversation.id)
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


def attachment_rows(parsed: ParsedMail) -> list[Attachment]:
    """The mail's attachments as rows to hang on its message."""
    return [
        Attachment(
            filename=a.filename,
            content_type=a.content_type,
            size=a.size,
            content_id=a.content_id,
            inline=a.inline,
            content=a.content,
        )
        for a in parsed.attachments
    ]


def sender_authenticated(raw: bytes, sender: str, policy: AgentMailPolicy) -> bool:
    """Whether the sender's domain vouches for this mail: an aligned DKIM signature passes, or
    the channel's own edge says DKIM or DMARC passed."""
    domain = sender.rpartition("@")[2]
    if policy.trusted_authserv_id and trusted_results_pass(raw, policy.trusted_authserv_id, domain):
        return True
    return any(_aligned(d, domain) for d in dkim_pass_domains(raw, policy.dns))


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
