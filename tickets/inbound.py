"""Durable acceptance of inbound mail and its quarantine.

Once a row of `inbound_mail` is committed, the gateway has taken responsibility for the message:
its bytes stay until an operator discards them. A message whose source names it (an IMAP
UIDVALIDITY+UID, an imported file's digest) is stored at most once: storing it again is a no-op.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from tickets.errors import NotAllowed, NotFound
from tickets.models import ImapFolder, InboundMail, InboundState
from tickets.services import insert_rows
from tickets.text import storable


@dataclass(frozen=True)
class IncomingMail:
    """A message as a transport received it, before anything is decided about it."""

    raw: bytes
    source: str  # smtp, imap, import
    envelope_from: str | None = None
    envelope_to: Sequence[str] = field(default_factory=tuple)
    peer: str | None = None
    source_key: str | None = None
    app_id: int | None = None
    channel_id: int | None = None


def store_incoming(session: Session, mails: Sequence[IncomingMail], now: dt.datetime) -> list[int]:
    """Add the rows for `mails` (not committed); the id of each, in order.

    A mail whose `source_key` is stored already gets the existing row's id, so a source that
    re-delivers after a crash between commit and acknowledgement stores nothing twice. The rows
    go in with one Core INSERT .. RETURNING, not as ORM objects: this runs in the SMTP accept
    path, in a thread that shares the interpreter (and its lock) with the event loop.
    """
    keys = [m.source_key for m in mails if m.source_key]
    existing: dict[str, int] = {}
    if keys:
        found = session.execute(
            select(InboundMail.source_key, InboundMail.id).where(InboundMail.source_key.in_(keys))
        )
        existing = {key: row_id for key, row_id in found if key is not None}
    new_rows: list[dict[str, object]] = []
    new_keys: set[str] = set()
    for mail in mails:
        if mail.source_key and (mail.source_key in existing or mail.source_key in new_keys):
            continue  # stored already, or twice in this batch: stored once
        if mail.source_key:
            new_keys.add(mail.source_key)
        new_rows.append(
            {
                "app_id": mail.app_id,
                "channel_id": mail.channel_id,
                "source": mail.source,
                "source_key": mail.source_key,
                "peer": mail.peer,
                "envelope_from": mail.envelope_from,
                "envelope_to": list(mail.envelope_to),
                "raw": mail.raw,
                "size": len(mail.raw),
                "sha256": hashlib.sha256(mail.raw).hexdigest(),
                "state": InboundState.PENDING.value,
                "attempts": 0,
                "received_at": now,
            }
        )
    new_ids = insert_rows(session, InboundMail, new_rows) if new_rows else []
    ids: list[int] = []
    fresh = iter(new_ids)
    for mail in mails:
        if mail.source_key and mail.source_key in existing:
            ids.append(existing[mail.source_key])
            continue
        row_id = next(fresh)
        ids.append(row_id)
        if mail.source_key:
            existing[mail.source_key] = row_id
    return ids


def source_keys_among(session: Session, keys: Sequence[str]) -> set[str]:
    """Which of these source keys are stored (by the unique index, whatever is stored else)."""
    found: set[str] = set()
    for start in range(0, len(keys), 500):
        found.update(
            key
            for key in session.scalars(
                select(InboundMail.source_key).where(
                    InboundMail.source_key.in_(keys[start : start + 500])
                )
            )
            if key is not None
        )
    return found


def hashes_stored(session: Session, shas: Sequence[str], key_prefix: str) -> set[str]:
    """Which of these sha256 digests are stored under source keys starting with the prefix."""
    return set(
        session.scalars(
            select(InboundMail.sha256).where(
                InboundMail.sha256.in_(list(shas)), InboundMail.source_key.startswith(key_prefix)
            )
        )
    )


def imap_bookmarks(session: Session, account: str, folder: str) -> dict[int, int]:
    """UIDVALIDITY -> the highest UID handled, for one mailbox folder."""
    return {
        int(validity): int(uid)
        for validity, uid in session.execute(
            select(ImapFolder.uidvalidity, ImapFolder.last_uid).where(
                ImapFolder.account == account, ImapFolder.folder == folder
            )
        )
    }


def move_imap_bookmark(
    session: Session, account: str, folder: str, uidvalidity: int, uid: int, now: dt.datetime
) -> None:
    """Record that the folder's mail up to `uid` was handled; never moves it back."""
    row = session.scalar(
        select(ImapFolder).where(
            ImapFolder.account == account,
            ImapFolder.folder == folder,
            ImapFolder.uidvalidity == uidvalidity,
        )
    )
    if row is None:
        session.add(
            ImapFolder(
                account=account,
                folder=folder,
                uidvalidity=uidvalidity,
                last_uid=uid,
                updated_at=now,
            )
        )
    elif uid > row.last_uid:
        row.last_uid, row.updated_at = uid, now


def quarantine(session: Session, row: InboundMail, reason: str, now: dt.datetime) -> None:
    row.state = InboundState.QUARANTINED
    row.reason = storable(reason[:4000])
    row.processed_at = now


def get_inbound(session: Session, inbound_id: int) -> InboundMail:
    row = session.get(InboundMail, inbound_id)
    if row is None:
        raise NotFound(f"no inbound mail {inbound_id}")
    return row


def release_for_reprocessing(session: Session, inbound_id: int) -> InboundMail:
    row = get_inbound(session, inbound_id)
    if row.state != InboundState.QUARANTINED:
        raise NotAllowed(f"inbound mail {inbound_id} is {row.state.value}, not quarantined")
    row.state = InboundState.PENDING
    row.reason = None
    return row


def discard(session: Session, inbound_id: int, now: dt.datetime) -> InboundMail:
    """Give up on a quarantined message; the row stays (with its reason) as a record."""
    row = get_inbound(session, inbound_id)
    if row.state != InboundState.QUARANTINED:
        raise NotAllowed(f"inbound mail {inbound_id} is {row.state.value}, not quarantined")
    row.state = InboundState.DISCARDED
    row.processed_at = now
    return row


def list_quarantined(session: Session, limit: int = 100) -> Sequence[InboundMail]:
    return session.scalars(
        select(InboundMail)
        .where(InboundMail.state == InboundState.QUARANTINED)
        .order_by(InboundMail.id)
        .limit(limit)
    ).all()


def pending_ids(session: Session, older_than: dt.datetime, limit: int) -> Sequence[int]:
    return session.scalars(
        select(InboundMail.id)
        .where(InboundMail.state == InboundState.PENDING, InboundMail.received_at <= older_than)
        .order_by(InboundMail.id)
        .limit(limit)
    ).all()
