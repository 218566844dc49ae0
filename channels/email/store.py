"""The pipeline's last steps: store the mail as a message of its conversation, then note
whom the customer copied.

Most mail is a few Core statements (a new conversation, or a message on an open one without a
ticket); attachments and messages with effects (a ticket's state, SLA) take the ORM services.
"""

from __future__ import annotations

import email
import email.policy
from typing import Any

from channels.email.addresses import header_addresses
from channels.email.agent_forward import finish_agent_forward
from channels.email.batch_index import Ref
from channels.email.copied import copy_refusal
from channels.email.headers import header_section
from channels.email.parse import attachment_rows
from channels.email.process_record import ChannelRules, Processing, find_customer
from channels.email.threading_rules import body_digest
from tickets import participants, services
from tickets.models import Via


def step_store(p: Processing) -> None:
    assert p.parsed
    parsed = p.parsed
    fields = {
        "html": parsed.html,
        "quoted_text": parsed.stripped.quoted or None,
        "signature": parsed.stripped.signature or None,
        "email_message_id": parsed.message_id,
        "inbound_mail_id": p.row.id,
        "from_address": parsed.from_address,
        "flags": {
            k: v
            for k, v in {
                "auto_reply": parsed.auto_reply,
                "forwarded": parsed.stripped.forwarded or None,
                "defects": list(parsed.defects) or None,
                "duplicate_message_id": p.duplicate_message_id,
                "thread_rule": p.rule,
                **p.flags,
            }.items()
            if v
        },
    }
    text = parsed.stripped.reply_text or parsed.text.strip() or "(no text)"
    is_auto_reply = parsed.auto_reply is not None
    # Most mail starts a conversation or continues an open one without a ticket: that is a few
    # Core statements. Attachments and a message with effects take the ORM services.
    stored = None if parsed.attachments else _store_without_effects(p, text, is_auto_reply, fields)
    if stored is not None:
        p.conversation_id, p.message_id = stored
    elif p.conversation is None:
        name = parsed.from_name or None
        customer = p.customer
        if customer is None and p.customer_looked_up:
            customer = services.create_customer(
                p.session, p.app, p.now, name=name, email=parsed.from_address
            )
        elif customer is None:
            customer = services.customer_by_address(
                p.session, p.app, parsed.from_address, p.now, name=name
            )
        elif name and not customer.name:
            customer.name = name
        p.conversation, p.message = services.start_conversation(
            p.session,
            p.app,
            customer,
            Via.EMAIL,
            text,
            p.now,
            subject=parsed.subject,
            channel_id=p.row.channel_id,
            is_auto_reply=is_auto_reply,
            **fields,
        )
    else:
        p.message = services.add_customer_message(
            p.session, p.conversation, text, Via.EMAIL, p.now, is_auto_reply=is_auto_reply, **fields
        )
    if parsed.attachments:  # stored by the ORM path; an untouched collection costs a query
        assert p.message is not None
        p.message.attachments.extend(attachment_rows(parsed))
    assert p.conversation_id is not None and p.message_id is not None
    # The original id of a rewritten Message-ID is stored as well: replies may cite either, and
    # a second copy under the other id is recognised as a duplicate.
    digest = body_digest(parsed) if parsed.message_id else None
    mids = (parsed.message_id, *parsed.original_message_ids) if parsed.message_id else ()
    ref = Ref(p.conversation_id, p.message_id, False, digest)
    p.new_refs = p.index.store_refs(p.app.id, mids, ref, p.now)
    if p.forward is not None:
        finish_agent_forward(p.session, p.conversation_id, p.message_id, p.forward, p.now)
    p.outcome = f"stored as message {p.message_id} in conversation {p.conversation_id} ({p.rule})"


def _store_without_effects(
    p: Processing, text: str, is_auto_reply: bool, fields: dict[str, Any]
) -> tuple[int, int] | None:
    assert p.parsed
    conversation = p._conversation
    customer_id = conversation.customer_id if conversation is not None else _customer_id(p)
    return services.add_customer_message_without_effects(
        p.session,
        p.app.id,
        customer_id,
        conversation,
        Via.EMAIL,
        text,
        p.now,
        subject=p.parsed.subject,
        channel_id=p.row.channel_id,
        is_auto_reply=is_auto_reply,
        later=p.index.later,
        **fields,
    )


def _customer_id(p: Processing) -> int:
    """The sender's customer, created (Core statements) on first sight."""
    assert p.parsed
    name = p.parsed.from_name or None
    customer = p.customer
    if customer is None and not p.customer_looked_up:
        address = services.normalize_address(p.parsed.from_address)
        customer = p.customer = find_customer(p, address)
        p.customer_looked_up = True
    if customer is None:
        return services.insert_customer(
            p.session, p.app.id, p.parsed.from_address, p.now, name=name
        )
    if name and not customer.name:
        customer.name = name
    return customer.id


def step_participants(p: Processing) -> None:
    """The customer's own mail: whom it copies (Cc, and To beside our address) becomes a
    participant of the conversation (tickets/participants.py says who never can). A
    participant's mail gives them the name they write under; it adds nobody."""
    assert p.parsed and p.conversation_id is not None
    parsed = p.parsed
    if p.flags.get("participant"):
        assert p.conversation is not None
        participant = participants.find(p.conversation, parsed.from_address)
        if participant is not None and not participant.name:
            participant.name = participants.clean_name(parsed.from_name)
        return
    if parsed.auto_reply is not None:
        return
    copied = [
        address
        for address in dict.fromkeys((*parsed.to, *parsed.cc))
        if address != parsed.from_address.lower() and not _ours(address, p.rules)
    ]
    if not copied:
        return  # mail to the support address alone: no query at all
    conversation = p.conversation
    assert conversation is not None
    p.index.flush()  # the refusal reads this conversation's thread refs
    names = _display_names(p.row.raw)
    refused = copy_refusal(  # a forged From must not copy anyone in (see copied.py)
        p.session,
        p.app.id,
        conversation.id,
        p.rule,
        [mid for mid in (parsed.in_reply_to, *parsed.references) if mid],
        p.row.raw,
        parsed.from_address,
        p.rules.agent_mail.trusted_authserv_id if p.rules.agent_mail else None,
    )
    added = participants.add_copied(
        p.session,
        conversation,
        [(names.get(address), address) for address in copied],
        services.Actor("customer", conversation.customer_id),
        p.now,
        limit=p.rules.max_participants,
        own=p.rules.channel_addresses,
        refused=refused,
    )
    if added:
        p.outcome = f"{p.outcome}; copied: {', '.join(added)}"


def _ours(address: str, rules: ChannelRules) -> bool:
    """One of the channel addresses, or a plus form of one (a reply token)."""
    local, _, domain = address.rpartition("@")
    return f"{local.partition('+')[0]}@{domain}" in rules.channel_addresses


def _display_names(raw: bytes) -> dict[str, str]:
    message = email.message_from_bytes(header_section(raw), policy=email.policy.compat32)
    return {
        m.address.lower(): m.name
        for header in ("To", "Cc")
        for m in header_addresses(message, header).mailboxes
        if m.name
    }
