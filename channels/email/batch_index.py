"""The lookups of one processing transaction's mails, read with one query each (SQLite).

A batch of inbound mails processed in one transaction asks the same questions many times: which
conversation a Message-ID belongs to, who owns a sender address, whether we sent a Message-ID.
`BatchIndex` answers them from a few queries made up front, and keeps itself true as the
batch's mails are stored (see gateway/inbound.py, which runs the batches).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload, selectinload

from channels.email.loop import sent_by_us
from channels.email.parse import ParsedMail
from tickets.models import App, Conversation, Customer, CustomerAddress, ThreadRef


class Ref(NamedTuple):
    """A stored Message-ID: which conversation and message it belongs to."""

    conversation_id: int
    message_id: int | None
    outbound: bool
    content_sha256: str | None


class Processed(Protocol):
    """What `BatchIndex.keep` reads of a processed mail (a `process_record.Processing`)."""

    app: App
    parsed: ParsedMail | None
    ended_by: str | None  # the pipeline step that ended it
    new_refs: list[tuple[str, Ref]]  # the refs the store step wrote


class BatchIndex:
    """What the mails of one processing transaction look up, read with one query each.

    The thread refs of every Message-ID the batch's mails carry or cite, the conversations
    they point at (with customer, addresses and ticket), and the customers of the senders.
    A mail stored by `step_store` adds its refs once it is through (`keep`); anything else
    that may have written refs or customers (an agent's mail, a bounce, a failure) makes it
    `forget`, and later lookups ask the database again.

    Only for a transaction that holds the database's single write lock (SQLite): with
    concurrent writers (PostgreSQL workers) a read made before the dedupe lock could be stale.
    """

    def __init__(self, session: Session) -> None:
        self.session = session
        self._refs: dict[tuple[int, str], list[Ref]] = {}
        self._customers: dict[tuple[int, str], Customer | None] = {}
        self._sent: dict[str, bool] = {}  # Message-ID -> one of our outbox rows carries it
        self._held: list[object] = []  # strong references: the identity map is weak

    def load(self, app_id: int, parsed: list[ParsedMail]) -> None:
        mids = {
            mid
            for mail in parsed
            for mid in (
                mail.message_id,
                *mail.original_message_ids,
                mail.in_reply_to,
                *mail.references,
            )
            if mid
        }
        self.refs(app_id, mids)
        self._load_sent(mail.message_id for mail in parsed)
        conversation_ids = {
            ref.conversation_id for mid in mids for ref in self._refs.get((app_id, mid), ())
        }
        if conversation_ids:
            self._held += self.session.scalars(
                select(Conversation)
                .where(Conversation.id.in_(conversation_ids))
                .options(
                    joinedload(Conversation.customer).selectinload(Customer.addresses),
                    selectinload(Conversation.ticket),
                )
            ).all()
        self._load_customers(app_id, {mail.from_address for mail in parsed if mail.from_address})

    def _load_customers(self, app_id: int, addresses: Iterable[str]) -> None:
        wanted = [a for a in {a.lower() for a in addresses} if (app_id, a) not in self._customers]
        if not wanted:
            return
        for address in wanted:
            self._customers[(app_id, address)] = None
        for customer, address in self.session.execute(
            select(Customer, CustomerAddress.address)
            .join(CustomerAddress, CustomerAddress.customer_id == Customer.id)
            .where(CustomerAddress.app_id == app_id, CustomerAddress.address.in_(wanted))
        ):
            self._customers[(app_id, address)] = customer
            self._held.append(customer)

    def _load_sent(self, mids: Iterable[str | None]) -> None:
        wanted = [mid for mid in dict.fromkeys(mids) if mid and mid not in self._sent]
        ours = sent_by_us(self.session, wanted)
        self._sent.update({mid: mid in ours for mid in wanted})

    def sent_by_us(self, message_id: str) -> bool:
        """Whether one of our outbox rows carries this Message-ID."""
        self._load_sent([message_id])
        return self._sent[message_id]

    def refs(self, app_id: int, mids: Iterable[str]) -> list[Ref]:
        """The refs of these Message-IDs, oldest first per Message-ID."""
        mids = list(dict.fromkeys(mids))
        missing = [mid for mid in mids if (app_id, mid) not in self._refs]
        if missing:
            for mid in missing:
                self._refs[(app_id, mid)] = []
            for row in self.session.execute(
                select(
                    ThreadRef.message_id_header,
                    ThreadRef.conversation_id,
                    ThreadRef.message_id,
                    ThreadRef.outbound,
                    ThreadRef.content_sha256,
                )
                .where(ThreadRef.app_id == app_id, ThreadRef.message_id_header.in_(missing))
                .order_by(ThreadRef.id)
            ):
                self._refs[(app_id, row[0])].append(Ref(*row[1:]))
        return [ref for mid in mids for ref in self._refs[(app_id, mid)]]

    def customer(self, app_id: int, address: str) -> Customer | None:
        """The customer who owns this address (as `services.find_customer_by_address`)."""
        self._load_customers(app_id, [address])
        return self._customers[(app_id, address.lower())]

    def keep(self, p: Processed) -> None:
        """Take in what a processed mail stored (after its savepoint was released)."""
        if p.ended_by not in ("store", "dedupe", "own-loop"):
            self.forget()  # an agent's mail or a bounce: it may have written what we hold
            return
        for mid, ref in p.new_refs:
            # Newest last, as the query orders them; a Message-ID not asked for yet stays
            # unknown, so that its first lookup still reads the older ones.
            if (p.app.id, mid) in self._refs:
                self._refs[(p.app.id, mid)].append(ref)
        if p.parsed is not None and p.ended_by == "store":
            self._customers.pop((p.app.id, p.parsed.from_address.lower()), None)

    def forget(self) -> None:
        self._refs.clear()
        self._customers.clear()
