"""The lookups of one processing transaction's mails, read with one query each, and the locks
that keep them true while other workers write.

A batch of inbound mails processed in one transaction asks the same questions many times: which
conversation a Message-ID belongs to, who owns a sender address, whether we sent a Message-ID.
`BatchIndex` answers them from a few queries made up front, and keeps itself true as the
batch's mails are stored (see gateway/inbound.py, which runs the batches).

Several workers on PostgreSQL each run batches at once. Two batches conflict only when they
touch the same thread (a Message-ID one mail carries and another cites), the same sender, or
the same conversation; so before reading, a batch takes a transaction-scoped advisory lock on
each of those keys, all in one statement and in one fixed order (so two batches can never wait
for each other in a circle), and holds them until it commits. Whatever another batch wrote
under one of those keys is committed before this batch reads it, and nothing it reads can
change under it: the reads made up front stay true, with no savepoint per mail and no deadlock
to retry. On SQLite the transaction holds the database's single write lock, which does the same.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping
from typing import NamedTuple, Protocol

from sqlalchemy import BigInteger, bindparam, insert, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session, joinedload, selectinload

from channels.email.loop import sent_by_us
from channels.email.parse import ParsedMail
from tickets.deferred import DeferredWrites
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

    `load` takes the batch's locks (see the module docstring) before it reads; a mail
    processed without `load` (a parent found later, `gateway explain`) is looked up lazily.

    The rows nobody reads back but through this index (thread refs, events, the inbound rows'
    state) are held in `later` and written in bulk by `flush`; until then the refs the batch
    stored are merged into what the database answers.
    """

    def __init__(self, session: Session) -> None:
        self.session = session
        self._refs: dict[tuple[int, str], list[Ref]] = {}
        self._customers: dict[tuple[int, str], Customer | None] = {}
        self._sent: dict[str, bool] = {}  # Message-ID -> one of our outbox rows carries it
        self._held: list[object] = []  # strong references: the identity map is weak
        self.later = DeferredWrites()
        self._unflushed: dict[tuple[int, str], list[Ref]] = {}  # refs held in `later`

    def load(self, mails: Mapping[int, list[ParsedMail]]) -> None:
        """Lock and read what these mails (by app id) will ask for."""
        mids = {app_id: _thread_ids(parsed) for app_id, parsed in mails.items()}
        _lock(
            self.session,
            [("thread", app_id, mid) for app_id, app_mids in mids.items() for mid in app_mids]
            + [
                ("sender", app_id, mail.from_address.lower())
                for app_id, parsed in mails.items()
                for mail in parsed
                if mail.from_address
            ],
        )
        conversation_ids: set[int] = set()
        for app_id, parsed in sorted(mails.items()):
            self.refs(app_id, mids[app_id])
            self._load_sent(mail.message_id for mail in parsed)
            conversation_ids |= {
                ref.conversation_id
                for mid in mids[app_id]
                for ref in self._refs.get((app_id, mid), ())
            }
            self._load_customers(
                app_id, {mail.from_address for mail in parsed if mail.from_address}
            )
        # Two batches may reach one conversation through different Message-IDs: one waits.
        # Taken after the keys above, and in order, so that no two batches wait in a circle.
        _lock(self.session, [("conversation", 0, str(i)) for i in conversation_ids])
        if conversation_ids:
            self._held += self.session.scalars(
                select(Conversation)
                .where(Conversation.id.in_(conversation_ids))
                .options(
                    joinedload(Conversation.customer).selectinload(Customer.addresses),
                    selectinload(Conversation.ticket),
                )
            ).all()

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
            for mid in missing:
                self._refs[(app_id, mid)] += self._unflushed.get((app_id, mid), ())
        return [ref for mid in mids for ref in self._refs[(app_id, mid)]]

    def customer(self, app_id: int, address: str) -> Customer | None:
        """The customer who owns this address (as `services.find_customer_by_address`)."""
        self._load_customers(app_id, [address])
        return self._customers[(app_id, address.lower())]

    def store_refs(
        self, app_id: int, mids: Iterable[str], ref: Ref, now: dt.datetime
    ) -> list[tuple[str, Ref]]:
        """Store these Message-IDs as `ref`s (held in `later`); what `keep` takes in."""
        stored = [(mid, ref) for mid in mids]
        for mid, _ in stored:
            self._unflushed.setdefault((app_id, mid), []).append(ref)
        if stored:
            self.later.add(
                _THREAD_REF_INSERT,
                [
                    {
                        "app_id": app_id,
                        "message_id_header": mid,
                        "conversation_id": ref.conversation_id,
                        "message_id": ref.message_id,
                        "outbound": ref.outbound,
                        "content_sha256": ref.content_sha256,
                        "created_at": now,
                    }
                    for mid, _ in stored
                ],
            )
        return stored

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

    def flush(self) -> None:
        """Write what `later` holds (before a read that does not go through this index)."""
        self.later.flush(self.session)
        self._unflushed.clear()

    def discard(self) -> None:
        """Drop what `later` holds: its mail failed and its savepoint was rolled back."""
        self.later.discard()
        self._unflushed.clear()


_THREAD_REF_INSERT = insert(ThreadRef.__table__)  # type: ignore[arg-type]

# Only the last few References: a deeper ancestor was stored long ago, and every lock costs a
# slot in the server's shared lock table.
_REFERENCES_LOCKED = 10


def _thread_ids(parsed: Iterable[ParsedMail]) -> set[str]:
    """The Message-IDs these mails carry or cite: the keys of the threads they touch."""
    return {
        mid
        for mail in parsed
        for mid in (
            mail.message_id,
            *mail.original_message_ids,
            mail.in_reply_to,
            *mail.references[-_REFERENCES_LOCKED:],
        )
        if mid
    }


_LOCK_KEYS = text(
    "SELECT pg_advisory_xact_lock(k) FROM unnest(:keys) WITH ORDINALITY AS t(k, n) ORDER BY n"
).bindparams(bindparam("keys", type_=ARRAY(BigInteger)))


def _lock(session: Session, keys: Iterable[tuple[str, int, str]]) -> None:
    """Transaction-scoped advisory locks on these keys, in ascending order (PostgreSQL; on
    SQLite the transaction's write lock already excludes every other writer)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    wanted = sorted({_key(*key) for key in keys})
    if wanted:
        session.execute(_LOCK_KEYS, {"keys": wanted})


def _key(kind: str, app_id: int, value: str) -> int:
    digest = hashlib.blake2b(f"{kind}\0{app_id}\0{value}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)
