"""Turn one stored inbound mail into a message of the right conversation.

A pipeline of named steps, run in order inside the caller's transaction (Mailman's handler
pipeline): parse -> filter -> route -> dedupe -> thread -> store -> effects. A step either
enriches the `Processing` record or ends the pipeline with an outcome; any exception means the
mail is quarantined by the caller, with its bytes, and can be reprocessed later.

Here: the order of the steps and the filtering ones (parse, agent mail, own loop, bounce, spam,
agent forward). The record they share is in process_record.py, the lookups a batch shares in
batch_index.py, dedupe and threading in threading_rules.py, storing in store.py.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from sqlalchemy.orm import Session

from channels.email import bounce_ties
from channels.email.agent_forward import AgentForward, read_agent_forward
from channels.email.agent_reply import handle_agent_mail
from channels.email.batch_index import BatchIndex
from channels.email.isolate import parse_isolated
from channels.email.loop import LOOP_HEADER, has_loop_mark
from channels.email.parse import MessageRejected, ParsedMail
from channels.email.process_record import ChannelRules, Processing
from channels.email.store import step_participants, step_store
from channels.email.threading_rules import step_dedupe, step_reply_token, step_thread
from channels.email.tokens import AgentToken
from tickets.models import App, Conversation, InboundMail


def step_parse(p: Processing) -> None:
    if p.parsed is None:  # the caller may have parsed already, outside its transaction
        p.parsed = parse_isolated(p.row.raw, p.rules.limits, envelope_from=p.row.envelope_from)
    # A bounce needs no readable From: the daemons that write `<Postmaster\@host@relay>`
    # still report a failure, which step_bounce applies or keeps without threading it.
    if not p.parsed.from_address and p.parsed.bounce is None:
        raise MessageRejected(p.parsed.sender_problem or "no sender address (From)")


def step_own_loop(p: Processing) -> None:
    """Drop our own mail coming back, and only that (see channels/email/loop.py): a mail from
    our own domain that we did not send is an employee's, and goes on like any other."""
    assert p.parsed
    if _has_loop_mark(p):
        p.outcome = f"dropped our own mail ({LOOP_HEADER})"
    elif p.parsed.message_id and p.index.sent_by_us(p.parsed.message_id):
        p.outcome = "dropped our own mail (a Message-ID we sent)"


def _has_loop_mark(p: Processing) -> bool:
    keyring = p.rules.keyring or (p.rules.agent_mail.keyring if p.rules.agent_mail else None)
    return has_loop_mark(p.row.raw, keyring)


def step_agent_mail(p: Processing) -> None:
    """An agent's answer to a notification (an agent token, or an agent's address writing to a
    token address) is posted or rejected here and never reaches the customer path. Runs before
    the Message-ID loop check, which would take an agent on the support domain (Apple Mail
    puts the sender's domain in Message-IDs) for our own mail."""
    assert p.parsed
    if p.rules.agent_mail is None or _has_loop_mark(p):
        return
    result = handle_agent_mail(p.session, p.app, p.row, p.parsed, p.rules.agent_mail, p.now)
    if result is not None:
        p.conversation = p.session.get(Conversation, result.conversation_id)
        p.rule = "agent token"
        p.outcome = result.outcome


def step_bounce(p: Processing) -> None:
    """A bounce is applied only when it is tied to one of our emails (see bounce_ties.py);
    it, and any mail to one of our return paths, ends here: never threaded as a customer's."""
    assert p.parsed
    recipients = [*map(str, p.row.envelope_to or ()), *p.parsed.to, *p.parsed.cc]
    token = bounce_ties.return_path_token(p.rules.keyring, p.app.id, recipients)
    bounce = bounce_ties.reported(token, p.parsed)
    if bounce is None and token is None:
        return
    tied = bounce_ties.tie(p.session, p.app.id, token, bounce)
    if bounce is None:
        assert token is not None
        p.outcome = (
            f"mail to the return path of email {token.outbox_id} that is not a delivery "
            "report: not applied"
        )
    elif tied is None:
        p.outcome = f"{bounce_ties.describe(bounce)} {bounce_ties.NOT_TIED}: not applied"
    else:
        p.outcome = bounce_ties.apply(p.session, tied, bounce, p.now)


def step_spam(p: Processing) -> None:
    assert p.parsed
    if p.parsed.spam:
        raise SpamFlagged("flagged as spam by the upstream filter")


class SpamFlagged(MessageRejected):
    """Kept in quarantine, not dropped: an agent can release a false positive."""


def step_agent_forward(p: Processing) -> None:
    """An agent's forward of a customer's mail goes on as that customer's mail (see
    channels/email/agent_forward.py); one that cannot be followed stays the sender's, and says
    why. Before dedupe, which compares what is stored: the customer's message."""
    assert p.parsed
    if p.rules.agent_mail is None:
        return
    found = read_agent_forward(
        p.session, p.app, p.row, p.parsed, p.rules.agent_mail, p.rules.limits, p.now
    )
    if isinstance(found, AgentForward):
        p.forward, p.parsed = found, found.original
        p.flags["forwarded_by"] = found.flag()
    elif found is not None:
        p.flags["forward_not_followed"] = str(found)


class AgentReplyUnhandled(MessageRejected):
    """Mail to an agent's reply address on a channel without an agent-mail policy: quarantined,
    so it can be reprocessed once there is one, and never shown to a customer as their message."""


def step_agent_reply(p: Processing) -> None:
    """An agent token that reached threading rule 1 (step_agent_mail handles agent mail where the
    channel has a policy): what follows treats the sender as a customer, so it stops here."""
    if isinstance(p.token, AgentToken):
        raise AgentReplyUnhandled(
            f"reply by email to agent reply address (conversation {p.token.conversation_id})"
        )


Step = tuple[str, Callable[[Processing], None]]

PIPELINE: tuple[Step, ...] = (
    ("parse", step_parse),
    ("agent-mail", step_agent_mail),
    ("own-loop", step_own_loop),
    ("bounce", step_bounce),
    ("spam", step_spam),
    ("agent-forward", step_agent_forward),
    ("dedupe", step_dedupe),
    ("reply-token", step_reply_token),
    ("agent-reply", step_agent_reply),
    ("thread", step_thread),
    ("store", step_store),
)

# Steps that need the stored message's conversation: they run after `store` ended the
# pipeline, and only then.
AFTER_STORE: tuple[Step, ...] = (("participants", step_participants),)


def run_pipeline(
    session: Session,
    row: InboundMail,
    app: App,
    rules: ChannelRules,
    now: dt.datetime,
    index: BatchIndex,
    parsed: ParsedMail | None = None,
) -> Processing:
    p = Processing(
        session=session, row=row, app=app, rules=rules, now=now, index=index, parsed=parsed
    )
    for name, step in PIPELINE:
        _run_step(p, name, step)
        if p.outcome is not None:
            p.ended_by = name
            break
    if p.ended_by == "store":
        for name, step in AFTER_STORE:
            _run_step(p, name, step)
    return p


def _run_step(p: Processing, name: str, step: Callable[[Processing], None]) -> None:
    try:
        step(p)
    except Exception as exc:
        exc.add_note(f"pipeline step: {name}")  # for `gateway explain`
        raise
