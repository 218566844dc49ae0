"""Participants: the people a customer copies on their mail stay in the loop of the conversation.

A participant is an address, not a customer: being copied opens no conversation of its own. Our
replies go To the customer and Cc the participants; a participant's answer threads into the
conversation as theirs, by the same rules as the customer's (a signed reply token, or the
Message-IDs it answers), never by a subject alone. Agents add and remove participants.

Never a participant: the gateway's own addresses (every channel address, its plus forms that
carry reply tokens, the `bounces` return paths on a channel's domain), the app's agents, and the
conversation's own customer. At most `limit` per conversation (`[limits] max_participants`):
a Cc list of a hundred must not turn every reply into a mailing.

Mail copies nobody in when the caller says it cannot prove it is the customer's answer to this
conversation (channels/email/copied.py), and an address the team removed is not brought back by
mail (a forged From with an old email's reply address would do it): only an agent adds it
again. Either way the team sees who was copied and not added (`participant.not_added`). Names
are kept without control or bidirectional-override characters: they are shown to the customer
in the quoted history, and must neither break a line nor turn text around.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from tickets.errors import InvalidValue, NotAllowed, NotFound
from tickets.models import (
    Agent,
    AgentAddress,
    ChannelAddress,
    Conversation,
    Event,
    Participant,
)
from tickets.services import Actor, normalize_address, record

MAX_PARTICIPANTS = 10
BOUNCE_LOCAL_PART = "bounces"  # the return path's local part (channels/email/tokens.py)
# Explicit direction marks and overrides (Unicode bidi controls); other format characters stay.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
REMOVED_BY_TEAM = "the team removed this address from the conversation"


@dataclass(frozen=True)
class Excluded:
    """The addresses that can never be participants of an app's conversations."""

    ours: frozenset[str]  # channel addresses
    our_domains: frozenset[str]
    agents: frozenset[str]

    def is_ours(self, address: str) -> bool:
        """A channel address of any app, a plus form of one (a reply token), a return path."""
        local, _, domain = address.lower().rpartition("@")
        base = local.partition("+")[0]
        return f"{base}@{domain}" in self.ours or (
            domain in self.our_domains and base == BOUNCE_LOCAL_PART
        )

    def reason(self, address: str) -> str | None:
        if self.is_ours(address):
            return "it is one of the support addresses"
        if address in self.agents:
            return "it is an agent's address"
        return None


def excluded(session: Session, app_id: int, own: Iterable[str] = ()) -> Excluded:
    """What `reason` checks against: the channel addresses stored (of every app: an address
    belongs to one app, and another app's is no person either) plus `own` (the config's), and
    the addresses of the app's agents."""
    ours = {a.lower() for a in own}
    ours.update(a.lower() for a in session.scalars(select(ChannelAddress.address)))
    agents = set(session.scalars(select(AgentAddress.address).where(AgentAddress.app_id == app_id)))
    agents.update(
        e.lower() for e in session.scalars(select(Agent.email).where(Agent.app_id == app_id))
    )
    return Excluded(
        frozenset(ours), frozenset(a.rpartition("@")[2] for a in ours), frozenset(agents)
    )


def clean_name(name: str | None) -> str | None:
    """A display name as it may be shown: no control or bidi characters, one line, at most
    200 characters; None when nothing is left."""
    if not name:
        return None
    kept = "".join(" " if unicodedata.category(c) == "Cc" else c for c in name if c not in _BIDI)
    return " ".join(kept.split())[:200] or None


def find(conversation: Conversation, address: str) -> Participant | None:
    wanted = address.strip().lower()
    return next((p for p in conversation.participants if p.address == wanted), None)


def copied_to(conversation: Conversation) -> list[str]:
    """The addresses our emails of this conversation Cc: every participant that has not
    bounced, and none that is also the customer's."""
    own = {a.address for a in conversation.customer.addresses}
    return [
        p.address
        for p in conversation.participants
        if p.bounced_at is None and p.address not in own
    ]


def _refusal(conversation: Conversation, address: str, ex: Excluded) -> str | None:
    if any(a.address == address for a in conversation.customer.addresses):
        return "it is the customer's own address"
    return ex.reason(address)


def _add(
    session: Session,
    conversation: Conversation,
    address: str,
    name: str | None,
    by: Actor,
    now: dt.datetime,
) -> Participant:
    participant = Participant(
        app_id=conversation.app_id,
        address=address,
        name=clean_name(name),
        added_by="customer" if by.type == "customer" else "agent",  # the team (or operator)
        created_at=now,
    )
    conversation.participants.append(participant)
    _event(session, conversation, "participant.added", by, now, address=address)
    return participant


def _event(
    session: Session,
    conversation: Conversation,
    kind: str,
    by: Actor,
    now: dt.datetime,
    **data: object,
) -> None:
    record(
        session,
        app_id=conversation.app_id,
        kind=kind,
        actor=by,
        now=now,
        conversation=conversation,
        ticket=conversation.ticket,
        **data,
    )


def add(
    session: Session,
    conversation: Conversation,
    address: str,
    by: Actor,
    now: dt.datetime,
    *,
    name: str | None = None,
    limit: int = MAX_PARTICIPANTS,
    own: Iterable[str] = (),
) -> Participant:
    """An agent adds `address`; adding a participant again changes nothing (and a bounced one
    is copied again). InvalidValue for an address that cannot be one, NotAllowed at the limit."""
    clean = normalize_address(address)
    reason = _refusal(conversation, clean, excluded(session, conversation.app_id, own))
    if reason is not None:
        raise InvalidValue(f"{clean} cannot be copied on this conversation: {reason}")
    existing = find(conversation, clean)
    if existing is not None:
        existing.bounced_at = None
        return existing
    if len(conversation.participants) >= limit:
        raise NotAllowed(
            f"this conversation has {len(conversation.participants)} participants already, "
            f"the most allowed ({limit}); remove one first"
        )
    return _add(session, conversation, clean, name, by, now)


def add_copied(
    session: Session,
    conversation: Conversation,
    copied: Sequence[tuple[str | None, str]],
    by: Actor,
    now: dt.datetime,
    *,
    limit: int = MAX_PARTICIPANTS,
    own: Iterable[str] = (),
    refused: str | None = None,
) -> list[str]:
    """The customer's mail copied these (name, address) pairs: the new participants among them,
    in order. What cannot be one is skipped without a word (the support address is copied on
    half of all mail); what is over the limit, what the team removed before, and everything
    when the caller `refused` the mail's copies, is skipped and the agents see it in an event."""
    known = {p.address for p in conversation.participants}
    wanted: dict[str, str | None] = {}
    for name, address in copied:
        try:
            clean = normalize_address(address)
        except InvalidValue:
            continue
        if clean not in known:
            wanted.setdefault(clean, name)
    if not wanted:
        return []
    ex = excluded(session, conversation.app_id, own)
    candidates = {a: n for a, n in wanted.items() if _refusal(conversation, a, ex) is None}
    if refused is not None:
        _not_added(session, conversation, list(candidates), refused, by, now)
        return []
    removed = _removed(session, conversation, candidates)
    if removed:
        _not_added(session, conversation, removed, REMOVED_BY_TEAM, by, now)
    added: list[str] = []
    over: list[str] = []
    for address, name in candidates.items():
        if address in removed:
            continue
        if len(conversation.participants) >= limit:
            over.append(address)
            continue
        _add(session, conversation, address, name, by, now)
        added.append(address)
    if over:
        _event(session, conversation, "participant.limit", by, now, limit=limit, not_added=over)
    return added


def _removed(session: Session, conversation: Conversation, addresses: Iterable[str]) -> list[str]:
    """Those of `addresses` that were removed from the conversation before."""
    wanted = list(addresses)
    if not wanted:
        return []
    removed = {
        data.get("address")
        for data in session.scalars(
            select(Event.data).where(
                Event.conversation_id == conversation.id, Event.kind == "participant.removed"
            )
        )
        if isinstance(data, dict)
    }
    return [a for a in wanted if a in removed]


def _not_added(
    session: Session,
    conversation: Conversation,
    addresses: list[str],
    reason: str,
    by: Actor,
    now: dt.datetime,
) -> None:
    if addresses:
        _event(
            session,
            conversation,
            "participant.not_added",
            by,
            now,
            addresses=addresses,
            reason=reason,
        )


def remove(
    session: Session, conversation: Conversation, address: str, by: Actor, now: dt.datetime
) -> None:
    """No longer copied; their answers no longer thread in (they start their own)."""
    participant = find(conversation, address)
    if participant is None:
        raise NotFound(f"{address.strip()} is not a participant of this conversation")
    conversation.participants.remove(participant)
    _event(session, conversation, "participant.removed", by, now, address=participant.address)


def mark_bounced(
    session: Session, conversation_id: int, addresses: Iterable[str], now: dt.datetime
) -> list[str]:
    """A permanent bounce of these addresses: they are no longer copied (an agent may add one
    again). The participants marked."""
    wanted = [a.lower() for a in addresses]
    marked = []
    for participant in session.scalars(
        select(Participant).where(
            Participant.conversation_id == conversation_id, Participant.address.in_(wanted)
        )
    ):
        if participant.bounced_at is None:
            participant.bounced_at = now
            marked.append(participant.address)
    return marked
