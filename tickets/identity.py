"""Who a widget visitor is: an address they give counts only once they prove the mailbox is theirs.

A visitor who gives an address in the widget makes a *claim* (`AddressClaim`): a one-time link
is mailed to the address, and until it is followed nothing changes. The claim is not a customer
address: mail from that address does not reach the visitor's conversations, no reply of the
conversation is emailed to it, and no two customers become one. Whether the address already
belongs to a customer is not even looked at, so nothing in the answer can depend on it.

Following the link (and confirming on the page it opens, so that a mail scanner fetching links
confirms nothing) proves control of the mailbox. Then the conversation the address was given in
moves to the customer who owns the address, created with it if nobody does yet. It moves that
way, never the other way round: the owner's record, and every conversation on it, stays out of
reach of the visitor's browser (whose visitor token still names the visitor's own, now emptier,
record). The browser that followed the link gets the conversation's new link, and the replies
that waited for an address go out by email.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tickets import delivery, services
from tickets.errors import NotFound
from tickets.models import AddressClaim, App, Conversation

CLAIM_LIFETIME = dt.timedelta(hours=24)


def _link_hash(link: str) -> str:
    return hashlib.sha256(link.encode()).hexdigest()


def claim_address(
    session: Session,
    conversation: Conversation,
    email: str,
    now: dt.datetime,
    lifetime: dt.timedelta = CLAIM_LIFETIME,
) -> tuple[str, str] | None:
    """A claim of `email` for the conversation: (the link's secret, the normalised address).

    None when the address is already the conversation's customer's own: nothing to prove. The
    secret is returned once; only its hash is kept.
    """
    address = services.normalize_address(email)
    if any(a.address == address for a in conversation.customer.addresses):
        return None
    link = secrets.token_urlsafe(32)
    session.add(
        AddressClaim(
            app_id=conversation.app_id,
            conversation_id=conversation.id,
            address=address,
            link_hash=_link_hash(link),
            created_at=now,
            expires_at=now + lifetime,
        )
    )
    session.flush()
    return link, address


def pending_claim(session: Session, conversation: Conversation, now: dt.datetime) -> bool:
    """Has an address been given in this conversation whose link can still be followed?"""
    return (
        session.scalar(
            select(AddressClaim.id)
            .where(
                AddressClaim.conversation_id == conversation.id,
                AddressClaim.used_at.is_(None),
                AddressClaim.expires_at > now,
            )
            .limit(1)
        )
        is not None
    )


def find_claim(session: Session, app: App, link: str, now: dt.datetime) -> AddressClaim:
    """The claim a link names, while it can still be used; NotFound (one message) otherwise."""
    claim = session.scalar(
        select(AddressClaim)
        .where(AddressClaim.app_id == app.id, AddressClaim.link_hash == _link_hash(link))
        .with_for_update()
    )
    if claim is None or claim.used_at is not None or claim.expires_at <= now:
        raise NotFound(
            "this link has expired or was already used; give your address in the chat again"
        )
    return claim


def confirm_claim(
    session: Session,
    app: App,
    link: str,
    now: dt.datetime,
    *,
    visitor_token_hash: str | None = None,
) -> Conversation:
    """The mailbox is theirs: the conversation moves to the address's owner (see the module).

    `visitor_token_hash` is the hash of the visitor token held by the browser that followed the
    link. When it is the one that gave the address, that browser has proved both: it is the
    visitor, and it reads the mailbox. Then visitor and owner are one person and become one
    record, visitor token included, so that browser lists the owner's conversations too.
    """
    claim = find_claim(session, app, link, now)
    conversation = session.get(Conversation, claim.conversation_id, with_for_update=True)
    if conversation is None or conversation.app_id != app.id:
        raise NotFound("this link has expired or was already used")
    # Every open claim of the conversation ends here: the one followed, and any other address
    # given meanwhile (a second one would otherwise take the conversation somewhere else).
    session.execute(
        update(AddressClaim)
        .where(AddressClaim.conversation_id == conversation.id, AddressClaim.used_at.is_(None))
        .values(used_at=now)
    )
    visitor = conversation.customer
    owner = services.find_customer_by_address(session, app, claim.address)
    if owner is None:
        owner = services.create_customer(
            session, app, now, name=visitor.name, email=claim.address, locale=visitor.locale
        )
    proven = visitor_token_hash is not None and visitor.visitor_token_hash == visitor_token_hash
    if owner.id != visitor.id:
        moving = [conversation]
        if proven:
            moving += session.scalars(
                select(Conversation).where(
                    Conversation.customer_id == visitor.id, Conversation.id != conversation.id
                )
            )
            visitor.visitor_token_hash = None
            session.flush()  # the token is unique: off the visitor before it is on the owner
            owner.visitor_token_hash = visitor_token_hash
        for moved in moving:
            moved.customer = owner
        services.record(
            session,
            app_id=app.id,
            kind="conversation.address_confirmed",
            actor=services.Actor.customer(owner),
            now=now,
            conversation=conversation,
            ticket=conversation.ticket,
            address=claim.address,
            from_customer_id=visitor.id,
        )
    session.flush()
    delivery.rearm(session, owner, now)
    return conversation
