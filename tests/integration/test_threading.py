"""Threading, dedupe, auto-reply and bounce effects of the processing pipeline, on a real database.

Each test stores raw mail the way a transport does (`inbound_mail`) and runs the pipeline over
it; what is asserted is what an agent would see: which conversation a mail landed in, whether
it was stored once, which flags it carries, which address is marked undeliverable.
"""

from __future__ import annotations

import datetime as dt
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from channels.email.batch_index import BatchIndex
from channels.email.loop import loop_mark
from channels.email.process import AgentReplyUnhandled, run_pipeline
from channels.email.process_record import ChannelRules, Processing
from channels.email.tokens import AgentToken, CustomerToken, Keyring, reply_address
from tickets import services
from tickets.inbound import IncomingMail, store_incoming
from tickets.models import (
    App,
    Conversation,
    ConversationState,
    CustomerAddress,
    InboundMail,
    Message,
    Outbox,
    OutboxState,
    ThreadRef,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RULES = ChannelRules()
OURS = "<reply-1@acme-help.example>"


def mail(
    sender: str,
    subject: str,
    body: str,
    *,
    message_id: str,
    in_reply_to: str | None = None,
    references: str | None = None,
    date: dt.datetime | None = None,
    **headers: str,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "support@acme-help.example"
    msg["Subject"] = subject
    msg["Message-ID"] = message_id
    msg["Date"] = format_datetime(date or dt.datetime(2026, 11, 24, 9, 0, tzinfo=dt.UTC))
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = references
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg.as_bytes()


def deliver(
    session: Session,
    app: App,
    raw: bytes,
    now: dt.datetime,
    rules: ChannelRules = RULES,
    envelope_from: str | None = "someone@example.com",
) -> Processing:
    [row_id] = store_incoming(
        session,
        [IncomingMail(raw=raw, source="smtp", app_id=app.id, envelope_from=envelope_from)],
        now,
    )
    row = session.get(InboundMail, row_id)
    assert row is not None
    return run_pipeline(session, row, app, rules, now, BatchIndex(session))


def answered_by_agent(
    session: Session, app: App, conversation: Conversation, now: dt.datetime, mid: str = OURS
) -> list[Message]:
    """Two agent replies sent as one email with Message-ID `mid` (what outbound records)."""
    agent = services.add_agent(session, app, "agent@acme-help.example", "Ann", now)
    replies = [
        services.add_agent_message(session, conversation, agent, text, now, via="email")
        for text in ("We are looking into it.", "Here is the tracking number.")
    ]
    session.add(
        Outbox(
            app_id=app.id,
            conversation_id=conversation.id,
            kind="customer",
            message_id_header=mid,
            mail_from="support@acme-help.example",
            recipients=[conversation.customer.addresses[0].address],
            raw=b"",
            message_ids=[m.id for m in replies],
            state=OutboxState.SENT,
            created_at=now,
        )
    )
    session.add(
        ThreadRef(
            app_id=app.id,
            message_id_header=mid,
            conversation_id=conversation.id,
            message_id=replies[-1].id,
            outbound=True,
            created_at=now,
        )
    )
    session.flush()
    return replies


@pytest.fixture
def first(session: Session, app: App, now: dt.datetime) -> Processing:
    """Carol's first mail, answered by an agent with Message-ID OURS."""
    p = deliver(
        session,
        app,
        mail(
            "Carol <carol@example.com>",
            "Parcel never arrived",
            "Order 1234 has not arrived.",
            message_id="<carol-1@example.com>",
        ),
        now,
    )
    assert p.conversation is not None and p.rule == "new conversation"
    answered_by_agent(session, app, p.conversation, now)
    return p


def later(now: dt.datetime, minutes: int = 5) -> dt.datetime:
    return now + dt.timedelta(minutes=minutes)


def carol_replies(
    session: Session,
    app: App,
    when: dt.datetime,
    body: str,
    subject: str = "Re: Parcel never arrived",
    message_id: str = "<carol-2@example.com>",
    in_reply_to: str | None = OURS,
    **headers: str,
) -> Processing:
    raw = mail(
        "carol@example.com",
        subject,
        body,
        message_id=message_id,
        in_reply_to=in_reply_to,
        **headers,
    )
    return deliver(session, app, raw, when)


def test_reply_threads_by_in_reply_to(session, app, now, first):
    p = carol_replies(
        session, app, later(now), "Still nothing.", references=f"<carol-1@example.com> {OURS}"
    )
    assert p.conversation is first.conversation and p.rule == "in-reply-to"
    assert p.message is not None and p.message.text == "Still nothing."
    assert "possible_new_topic" not in p.message.flags


def test_reply_that_keeps_only_references(session, app, now, first):
    p = carol_replies(
        session,
        app,
        later(now),
        "Any news?",
        subject="AW: Parcel never arrived",
        in_reply_to=None,
        references=f"<carol-1@example.com> {OURS}",
    )
    assert p.conversation is first.conversation and p.rule == "references"


def test_reply_from_another_address_of_the_same_customer(session, app, now, first):
    assert first.conversation is not None
    services.add_customer_address(
        session, first.conversation.customer, "carol.work@corp.example", now
    )
    p = deliver(
        session,
        app,
        mail(
            "Carol <Carol.Work@corp.example>",
            "Re: Parcel never arrived",
            "Writing from work.",
            message_id="<cw-1@corp.example>",
            in_reply_to=OURS,
        ),
        later(now),
    )
    assert p.conversation is first.conversation and p.rule == "in-reply-to"


def test_someone_else_replying_to_a_forwarded_thread_gets_their_own_conversation(
    session, app, now, first
):
    # Carol forwarded our answer to Dave; Dave replies to the forward, with the thread's ids.
    p = deliver(
        session,
        app,
        mail(
            "Dave <dave@example.org>",
            "Re: Fwd: Parcel never arrived",
            "I am Carol's neighbour, I have the parcel.",
            message_id="<dave-1@example.org>",
            in_reply_to="<carol-fwd@example.com>",
            references=f"<carol-1@example.com> {OURS} <carol-fwd@example.com>",
        ),
        later(now),
    )
    assert p.rule == "new conversation"
    assert p.conversation is not None and p.conversation is not first.conversation
    assert p.conversation.customer.addresses[0].address == "dave@example.org"
    assert p.message is not None
    assert p.message.flags["answers_conversation_of_someone_else"] == first.conversation.id
    assert first.conversation is not None
    assert [m.text for m in first.conversation.messages if m.author_type == "customer"] == [
        "Order 1234 has not arrived."
    ]


def test_same_subject_from_someone_else_never_attaches(session, app, now, first):
    p = deliver(
        session,
        app,
        mail(
            "eve@example.net", "Parcel never arrived", "Mine too!", message_id="<eve-1@example.net>"
        ),
        later(now),
    )
    assert p.rule == "new conversation" and p.conversation is not first.conversation


def test_reply_whose_message_id_the_provider_rewrote(session, app, now, first):
    # Our relay rewrote OURS to an id we never stored; the reply still carries the customer's
    # own first Message-ID in References, which we did store.
    rewritten = "<0100018f.abcdef@email.amazonses.com>"
    p = carol_replies(
        session,
        app,
        later(now),
        "Thanks.",
        in_reply_to=rewritten,
        references=f"<carol-1@example.com> {rewritten}",
    )
    assert p.conversation is first.conversation and p.rule == "references"
    # A client that keeps only the rewritten id: the same-sender-same-subject rule catches it.
    p = carol_replies(
        session,
        app,
        later(now, 10),
        "Hello?",
        subject="RE: Parcel never arrived",
        message_id="<carol-3@example.com>",
        in_reply_to=rewritten,
    )
    assert p.conversation is first.conversation and p.rule == "same sender and subject"


def test_subject_rule_window_and_channel_switch(session, app, now, first):
    raw = mail(
        "carol@example.com", "Parcel never arrived", "Again.", message_id="<carol-9@example.com>"
    )
    off = ChannelRules(subject_threading=False)
    assert deliver(session, app, raw, later(now), rules=off).rule == "new conversation"
    raw = mail(
        "carol@example.com", "Parcel never arrived", "Later.", message_id="<carol-10@example.com>"
    )
    p = deliver(session, app, raw, now + dt.timedelta(days=15))
    assert p.rule == "new conversation"


def test_changed_subject_under_an_old_thread_is_flagged(session, app, now, first):
    p = carol_replies(
        session,
        app,
        now + dt.timedelta(days=40),
        "Different question: can you change my invoice address?",
        subject="Re: Invoice address change",
    )
    assert p.conversation is first.conversation
    assert p.message is not None
    assert p.message.flags["possible_new_topic"] == {"previous_subject": "Parcel never arrived"}


def test_redelivered_copy_is_stored_once(session, app, now, first):
    raw = mail(
        "carol@example.com",
        "Re: Parcel never arrived",
        "Still nothing.",
        message_id="<carol-2@example.com>",
        in_reply_to=OURS,
    )
    assert deliver(session, app, raw, later(now)).message is not None
    # The second IMAP copy has other transport headers but the same message.
    again = deliver(session, app, b"Received: from mx2 by imap\r\n" + raw, later(now, 6))
    assert again.message is None
    assert again.outcome == "duplicate of a stored message (<carol-2@example.com>)"
    stored = session.scalar(
        select(func.count(Message.id)).where(Message.email_message_id == "<carol-2@example.com>")
    )
    assert stored == 1


def test_same_message_id_with_other_content_is_stored_and_flagged(session, app, now, first):
    for minutes, body in ((5, "First text."), (6, "Entirely different text.")):
        p = deliver(
            session,
            app,
            mail(
                "carol@example.com",
                "Re: Parcel never arrived",
                body,
                message_id="<carol-2@example.com>",
                in_reply_to=OURS,
            ),
            later(now, minutes),
        )
    assert p.message is not None and p.message.text == "Entirely different text."
    assert p.message.flags["duplicate_message_id"] is True


@pytest.mark.parametrize("state", ["resolved", "snoozed"])
def test_auto_reply_is_stored_but_changes_nothing(session, app, now, first, state):
    conversation = first.conversation
    assert conversation is not None
    system = services.SYSTEM
    if state == "resolved":
        services.resolve(session, conversation, system, now)
    else:
        services.snooze(session, conversation, now + dt.timedelta(days=2), system, now)
    before = conversation.last_customer_message_at
    p = carol_replies(
        session,
        app,
        later(now),
        "I am out of the office until Monday.",
        subject="Automatic reply: Parcel never arrived",
        message_id="<ooo-1@example.com>",
        Auto_Submitted="auto-replied",
    )
    assert p.conversation is conversation and p.message is not None
    assert p.message.is_auto_reply and p.message.flags["auto_reply"]
    assert conversation.state == ConversationState(state)
    assert conversation.last_customer_message_at == before


def bounce_of_our_reply(session: Session, app: App, now: dt.datetime) -> tuple[Processing, bytes]:
    """Rgomez wrote in, an agent answered twice in one email; the postfix DSN for that email."""
    raw = (FIXTURES / "bounces" / "postfix" / "modern_dsn.eml").read_bytes()
    p = deliver(
        session,
        app,
        mail("rgomez@litware.example", "Help", "Please call me.", message_id="<rg-1@litware>"),
        now,
    )
    assert p.conversation is not None
    answered_by_agent(
        session, app, p.conversation, now, mid="<20240613150505.48250.feed@acme-help.example>"
    )
    return p, raw


def test_permanent_bounce_marks_address_and_messages(session, app, now):
    p, raw = bounce_of_our_reply(session, app, now)
    result = deliver(session, app, raw, later(now), envelope_from="")
    assert result.message is None
    assert result.outcome is not None and result.outcome.startswith("bounce (permanent, postfix)")
    address = session.scalar(
        select(CustomerAddress).where(CustomerAddress.address == "rgomez@litware.example")
    )
    assert address is not None and address.bounced_at == later(now)
    assert address.bounce_reason is not None and "5.1.1" in address.bounce_reason
    assert p.conversation is not None
    agent_messages = [m for m in p.conversation.messages if m.author_type == "agent"]
    assert [m.delivery_state for m in agent_messages] == ["bounced", "bounced"]
    assert "could not be delivered" in p.conversation.notes[-1].text


def test_temporary_bounce_marks_nothing(session, app, now):
    p, _ = bounce_of_our_reply(session, app, now)
    raw = (
        (FIXTURES / "bounces" / "postfix" / "delayed_warning.eml")
        .read_bytes()
        .replace(b"billing@adatum.example", b"rgomez@litware.example")
        .replace(
            b"<20240612060000.47100.abcd@acme-help.example>",
            b"<20240613150505.48250.feed@acme-help.example>",
        )
    )
    result = deliver(session, app, raw, later(now), envelope_from="")
    assert result.outcome is not None and result.outcome.startswith("bounce (temporary")
    address = session.scalar(
        select(CustomerAddress).where(CustomerAddress.address == "rgomez@litware.example")
    )
    assert address is not None and address.bounced_at is None
    assert p.conversation is not None
    assert all(m.delivery_state != "bounced" for m in p.conversation.messages)
    assert "is delayed" in p.conversation.notes[-1].text


def test_our_own_mail_coming_back_is_not_stored(session, app, now, first):
    # A Message-ID one of our emails carries (OURS, the agent's answer to Carol).
    ours = mail("support@acme-help.example", "Re: Parcel", "looped", message_id=OURS)
    p = deliver(session, app, ours, later(now))
    assert p.message is None and p.outcome == "dropped our own mail (a Message-ID we sent)"
    # Our signed loop mark, under any Message-ID (a relay may have rewritten it), CRLF or LF.
    mark = loop_mark(KEYRING, app.id, "<y@acme-help.example>")
    looped = mail("a@example.com", "Hi", "x", message_id="<y@example.com>", X_Gateway_Loop=mark)
    outcome = deliver(session, app, looped, now, TOKEN_RULES).outcome
    assert outcome == "dropped our own mail (X-Gateway-Loop)"
    crlf = looped.replace(b"\n", b"\r\n").replace(b"<y@", b"<y2@")
    outcome = deliver(session, app, crlf, now, TOKEN_RULES).outcome
    assert outcome == "dropped our own mail (X-Gateway-Loop)"


def test_mail_from_our_own_domain_that_we_did_not_send_is_processed(session, app, now):
    """An employee writes from the company domain (and their client puts it in Message-IDs)."""
    raw = mail(
        "Bo <bo@acme-help.example>", "Printer", "Jammed.", message_id="<x-1@acme-help.example>"
    )
    p = deliver(session, app, raw, now)
    assert p.message is not None and p.rule == "new conversation"
    # A loop header we did not sign (or cannot check) makes no mail disappear.
    for rules in (RULES, TOKEN_RULES):
        forged = mail(
            "a@example.com", "Hi", "x", message_id=f"<{id(rules)}@e.test>", X_Gateway_Loop="1"
        )
        p = deliver(session, app, forged, now, rules)
        assert p.outcome is not None and p.outcome.startswith("stored as message")


def test_a_customer_quoting_our_loop_header_in_the_body_is_still_a_customer(session, app, now):
    # As it comes over SMTP: CRLF line ends. Pasted headers of a notification in the body.
    raw = mail(
        "a@example.com",
        "Your notification",
        "I got this, what does it mean?\n\nX-Gateway-Loop: notification\nFrom: Support",
        message_id="<z@example.com>",
    ).replace(b"\n", b"\r\n")
    p = deliver(session, app, raw, now)
    assert p.outcome is not None and p.outcome.startswith("stored as message")


KEYRING = Keyring(b"a test key that is long enough to sign tokens")
TOKEN_RULES = ChannelRules(
    channel_addresses=frozenset({"support@acme-help.example"}),
    keyring=KEYRING,
)


def to_token_address(raw: bytes, token: CustomerToken | AgentToken) -> bytes:
    address = reply_address("support@acme-help.example", KEYRING.sign(token))
    return raw.replace(b"To: support@acme-help.example", f"To: {address}".encode(), 1)


def customer_token(p: Processing) -> CustomerToken:
    assert p.conversation is not None
    return CustomerToken(p.conversation.app_id, p.conversation.id, p.conversation.customer_id)


def test_customer_reply_token_threads_without_any_header(session, app, now, first):
    raw = mail(
        "Carol <carol@example.com>",
        "Re: Parcel never arrived",
        "My client drops the headers.",
        message_id="<carol-2@example.com>",
    )
    p = deliver(session, app, to_token_address(raw, customer_token(first)), later(now), TOKEN_RULES)
    assert p.conversation is first.conversation and p.rule == "reply token"


def test_reply_token_in_the_envelope_only(session, app, now, first):
    raw = mail("carol@example.com", "Parcel?", "Forwarded by my MTA.", message_id="<c-3@ex.com>")
    [row_id] = store_incoming(
        session,
        [
            IncomingMail(
                raw=raw,
                source="smtp",
                app_id=app.id,
                envelope_to=[
                    reply_address("support@acme-help.example", KEYRING.sign(customer_token(first)))
                ],
            )
        ],
        later(now),
    )
    row = session.get(InboundMail, row_id)
    assert row is not None
    p = run_pipeline(session, row, app, TOKEN_RULES, later(now), BatchIndex(session))
    assert p.conversation is first.conversation and p.rule == "reply token"


def test_customer_token_used_by_someone_else_does_not_merge(session, app, now, first):
    raw = mail("dave@example.org", "Re: Parcel", "Hi, Dave here.", message_id="<dave-1@ex.org>")
    p = deliver(session, app, to_token_address(raw, customer_token(first)), later(now), TOKEN_RULES)
    assert p.rule == "new conversation" and p.conversation is not first.conversation
    assert p.message is not None
    assert first.conversation is not None
    assert p.message.flags["answers_conversation_of_someone_else"] == first.conversation.id


def test_forged_token_is_ignored_and_headers_still_thread(session, app, now, first):
    signed = KEYRING.sign(customer_token(first))
    # One character changed inside the token: the signature no longer matches.
    tampered = signed[:10] + ("c" if signed[10] != "c" else "d") + signed[11:]
    forged = reply_address("support@acme-help.example", tampered)
    raw = mail(
        "carol@example.com",
        "Re: Parcel never arrived",
        "Reply.",
        message_id="<carol-2@example.com>",
        in_reply_to=OURS,
    ).replace(b"To: support@acme-help.example", f"To: {forged}".encode(), 1)
    p = deliver(session, app, raw, later(now), TOKEN_RULES)
    assert p.conversation is first.conversation and p.rule == "in-reply-to"
    assert p.message is not None and p.message.flags["reply_token_rejected"] == "bad-signature"


def test_agent_token_never_becomes_a_customer_message(session, app, now, first):
    assert first.conversation is not None
    agent = services.find_agent(session, app, "agent@acme-help.example")
    token = AgentToken(app.id, first.conversation.id, agent.id, "reply", later(now, 600))
    raw = mail("agent@acme-help.example", "Re: Parcel", "On its way.", message_id="<ag-1@ex>")
    before = len(first.conversation.messages)
    with pytest.raises(AgentReplyUnhandled, match="agent reply address"):
        deliver(session, app, to_token_address(raw, token), later(now), TOKEN_RULES)
    session.refresh(first.conversation)
    assert len(first.conversation.messages) == before


def test_a_customer_message_id_rewritten_by_their_provider(session, app, now):
    # Their provider replaced the id their client wrote and kept it in a header; their next mail
    # (a follow-up from their Sent folder) cites the id their client knows.
    first = mail(
        "Ola <ola@example.no>",
        "Refund",
        "Where is my refund?",
        message_id="<AM0PR01MB1234@eurprd01.prod.outlook.com>",
        X_Microsoft_Original_Message_ID="<ola-1@example.no>",
    )
    p = deliver(session, app, first, now)
    follow_up = mail(
        "ola@example.no",
        "Re: Refund",
        "Forgot the order number: 77.",
        message_id="<ola-2@example.no>",
        in_reply_to="<ola-1@example.no>",
    )
    q = deliver(session, app, follow_up, later(now))
    assert q.conversation is p.conversation and q.rule == "in-reply-to"
    # A second copy of the first mail under the id the client wrote is the same message.
    copy = mail(
        "Ola <ola@example.no>", "Refund", "Where is my refund?", message_id="<ola-1@example.no>"
    )
    assert deliver(session, app, copy, later(now, 6)).outcome == (
        "duplicate of a stored message (<ola-1@example.no>)"
    )
