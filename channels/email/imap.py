"""The IMAP poller: pulls a mailbox folder's mail into the durable inbound store.

For channels whose mail sits in a mailbox (a hosted provider, a shared inbox) rather than
arriving at our SMTP server. The rule is nothing lost, nothing doubled:

* a message is marked (``\\Seen``, or moved to ``processed_folder``) only after ``store`` has
  committed it, and is fetched with ``BODY.PEEK[]`` so fetching alone never marks it;
* every message is stored under ``imap:<account>:<folder>:<uidvalidity>:<uid>``, so a crash
  between storing and marking is harmless: the key is skipped on the next poll;
* the highest UID handled per UIDVALIDITY is bookmarked in the database, so a poll asks about
  the messages it considers, never about everything ever stored from the folder;
* when UIDVALIDITY changes every key changes, so a message whose sha256 is already stored for
  the account is skipped (and still marked) instead of stored again.

Which messages are considered does not depend on ``\\Seen``, since people may read the mailbox
too: each poll takes those with an INTERNALDATE within ``backfill_days`` plus any UID beyond the
bookmark, minus the keys already stored.

This module does not know the configuration or the database; the gateway builds an
``ImapAccount`` and supplies the storage callables.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from ssl import SSLContext
from typing import Any, Protocol

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError

from tickets.inbound import IncomingMail

log = logging.getLogger(__name__)

FETCH_BATCH = 50
# Servers may drop an IDLE after 30 minutes and NAT boxes much sooner; re-issuing it every
# few minutes also bounds how long a silently dead connection goes unnoticed.
IDLE_SECONDS = 290.0
# IDLE is waited on in slices this long so `run` notices its stop event quickly.
IDLE_SLICE = 1.0
BACKOFF_MIN = 1.0
BACKOFF_MAX = 300.0
SOCKET_TIMEOUT = 60.0

SEEN = b"\\Seen"
DELETED = b"\\Deleted"

StoreMails = Callable[[Sequence[IncomingMail]], list[int]]
Clock = Callable[[], dt.datetime]


class FolderLedger(Protocol):
    """What the poller needs to know of the database besides storing: the gateway's adapter."""

    def stored_keys(self, keys: Sequence[str]) -> set[str]:
        """Which of these source keys are stored."""
        ...

    def stored_hashes(self, account: str, shas: Sequence[str]) -> set[str]:
        """Which of these sha256 digests are stored from the account (any folder or
        UIDVALIDITY)."""
        ...

    def bookmarks(self, account: str, folder: str) -> dict[int, int]:
        """UIDVALIDITY -> the highest UID handled in that folder."""
        ...

    def move_bookmark(self, account: str, folder: str, uidvalidity: int, uid: int) -> None:
        """Record that the folder's mail up to `uid` was handled (it never moves back)."""
        ...


class ImapError(Exception):
    """A mailbox problem an operator can act on, in plain words (never with credentials)."""


@dataclass(frozen=True)
class ImapAccount:
    """One mailbox folder to poll, and the channel its mail belongs to."""

    name: str  # the channel's name; part of every source key, so it must not change
    host: str
    port: int
    ssl: bool
    starttls: bool
    username: str
    password: str | None = field(default=None, repr=False)
    oauth2_token: str | None = field(default=None, repr=False)  # XOAUTH2
    folder: str = "INBOX"
    processed_folder: str | None = None
    backfill_days: int = 7
    poll_seconds: float = 60.0
    idle: bool = True
    ssl_context: SSLContext | None = field(default=None, repr=False, compare=False)
    app_id: int | None = None
    channel_id: int | None = None

    @property
    def folder_prefix(self) -> str:
        return f"imap:{self.name}:{self.folder}:"

    def key_prefix(self, uidvalidity: int) -> str:
        return f"{self.folder_prefix}{uidvalidity}:"

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _ignore(_inbound_id: int) -> None:
    return None


def _batches(uids: Iterable[int], size: int) -> Iterator[list[int]]:
    batch: list[int] = []
    for uid in uids:
        batch.append(uid)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _server_text(exc: BaseException) -> str:
    text = str(exc).strip()
    # imaplib wraps the server's words as "b'[AUTHENTICATIONFAILED] ...'"; keep the words.
    match = re.fullmatch(r"b'(.*)'", text) or re.fullmatch(r'b"(.*)"', text)
    return match.group(1) if match else text


class ImapPoller:
    """Polls one account's folder; `run` it in a thread of its own."""

    def __init__(
        self,
        account: ImapAccount,
        store: StoreMails,
        ledger: FolderLedger,
        on_stored: Callable[[int], object] = _ignore,
        clock: Clock = _utcnow,
        *,
        timeout: float = SOCKET_TIMEOUT,
    ) -> None:
        """`store` must commit before it returns: only then are the messages marked.

        `ledger` answers which keys and bytes are stored and keeps the folder's bookmarks.
        `on_stored` hears of each stored row (e.g. to enqueue its processing); its failures
        are logged, never retried here, since the row is committed and a sweep can find it.
        """
        if account.password is None and account.oauth2_token is None:
            raise ImapError(
                f"no password or OAuth2 token configured for IMAP account {account.name}"
            )
        self.account = account
        self._store = store
        self._ledger = ledger
        self._on_stored = on_stored
        self._clock = clock
        self._timeout = timeout
        self._client: IMAPClient | None = None
        self._processed_folder_ready = False
        self._last_uidvalidity: int | None = None
        # UIDVALIDITY -> first UID not yet looked at (the bookmark + 1): mail beyond it is
        # taken whatever its INTERNALDATE (a delayed or imported message can carry an old one).
        self._next_uid: dict[int, int] = {}
        # (UIDVALIDITY, UID) whose bytes were stored under another key: without this, in
        # \Seen mode they would be fetched again on every poll of the backfill window.
        self._duplicates: set[tuple[int, int]] = set()
        # (UIDVALIDITY, UID) stored but not yet marked because marking failed.
        self._unmarked: set[tuple[int, int]] = set()
        # UIDVALIDITYs for which a crash's unmarked leftovers have been looked for.
        self._recovered: set[int] = set()

    # -- connection ------------------------------------------------------------------

    def _connect(self, readonly: bool = False) -> tuple[IMAPClient, dict[bytes, Any]]:
        """A logged-in client with the folder selected, and the SELECT response.

        Failures raise ImapError in plain words.
        """
        acct = self.account
        try:
            client = IMAPClient(
                acct.host,
                port=acct.port,
                ssl=acct.ssl,
                ssl_context=acct.ssl_context,
                timeout=self._timeout,
            )
        except (OSError, IMAPClientError) as exc:
            raise ImapError(f"cannot connect to {acct.where}: {exc}") from exc
        try:
            if acct.starttls and not acct.ssl:
                try:
                    client.starttls(acct.ssl_context)
                except (OSError, IMAPClientError) as exc:
                    raise ImapError(f"STARTTLS failed with {acct.where}: {exc}") from exc
            self._login(client)
            info = self._select(client, readonly=readonly)
        except BaseException:
            _close(client)
            raise
        return client, info

    def _login(self, client: IMAPClient) -> None:
        acct = self.account
        try:
            if acct.oauth2_token is not None:
                client.oauth2_login(acct.username, acct.oauth2_token)
            else:
                assert acct.password is not None
                client.login(acct.username, acct.password)
        except LoginError as exc:
            raise ImapError(
                f"login failed for {acct.username} at {acct.host}: {_server_text(exc)}"
            ) from exc

    def _select(self, client: IMAPClient, readonly: bool = False) -> dict[bytes, Any]:
        folder = self.account.folder
        try:
            return dict(client.select_folder(folder, readonly=readonly))
        except IMAPClientError as exc:
            if not client.folder_exists(folder):
                raise ImapError(
                    f"folder {folder} does not exist for {self.account.username} "
                    f"at {self.account.host}"
                ) from exc
            raise

    def _selected(self) -> tuple[IMAPClient, int, int | None]:
        """The poller's connection with the folder freshly selected, reconnecting if needed.

        Selecting on every poll is what tells us the current UIDVALIDITY and UIDNEXT.
        """
        if self._client is not None:
            try:
                info = self._select(self._client)
                return self._client, *_validity(info)
            except (OSError, IMAPClientError) as exc:
                # The server may have dropped an idle connection; one fresh attempt.
                log.info("IMAP %s: reconnecting (%s)", self.account.name, exc)
                self.close()
        client, info = self._connect()
        self._client = client
        self._processed_folder_ready = False
        return client, *_validity(info)

    def close(self) -> None:
        """Log out (best effort); the next poll reconnects."""
        client, self._client = self._client, None
        if client is not None:
            _close(client)

    # -- polling ---------------------------------------------------------------------

    def poll_once(self) -> int:
        """Store every message in the folder not yet ingested, then mark it; the number stored."""
        acct = self.account
        client, uidvalidity, uidnext = self._selected()
        self._note_uidvalidity(uidvalidity)

        since = (self._clock() - dt.timedelta(days=acct.backfill_days)).date()
        candidates = set(client.search(["SINCE", since]))
        next_uid = self._next_uid.get(uidvalidity)
        if next_uid is not None:
            candidates |= {u for u in client.search(["UID", f"{next_uid}:*"]) if u >= next_uid}
        stored = self._stored(uidvalidity, candidates)

        self._finish_marking(client, uidvalidity, stored, since)

        dups = {uid for (validity, uid) in self._duplicates if validity == uidvalidity}
        todo = sorted(candidates - stored - dups)
        count = 0
        for batch in _batches(todo, FETCH_BATCH):
            count += self._ingest(client, uidvalidity, batch)
        # Everything below UIDNEXT (as the SELECT saw it) has now been handled or left as
        # older than the backfill window: the bookmark moves there, and a restart goes on
        # from it rather than from the whole window's stored keys.
        upto = max(todo, default=0)
        if uidnext is not None:
            upto = max(upto, uidnext - 1)
        if upto >= self._next_uid.get(uidvalidity, 1):
            self._ledger.move_bookmark(acct.name, acct.folder, uidvalidity, upto)
            self._next_uid[uidvalidity] = upto + 1
        if count:
            log.info("IMAP %s: stored %d new message(s) from %s", acct.name, count, acct.folder)
        return count

    def _stored(self, uidvalidity: int, uids: Iterable[int]) -> set[int]:
        prefix = self.account.key_prefix(uidvalidity)
        keys = self._ledger.stored_keys([f"{prefix}{uid}" for uid in sorted(uids)])
        return {int(key[len(prefix) :]) for key in keys}

    def _note_uidvalidity(self, uidvalidity: int) -> None:
        """On the first poll of a UIDVALIDITY in this process: where the bookmark stands, and
        whether the server changed UIDVALIDITY (every message then gets a new key)."""
        previous = self._last_uidvalidity
        self._last_uidvalidity = uidvalidity
        if previous == uidvalidity:
            return
        bookmarks = self._ledger.bookmarks(self.account.name, self.account.folder)
        if uidvalidity in bookmarks:
            # After a restart the bookmark is the best-known boundary: mail beyond it is new.
            self._next_uid.setdefault(uidvalidity, bookmarks[uidvalidity] + 1)
        if previous is not None:
            changed_from: str | None = str(previous)
        elif uidvalidity in bookmarks:
            changed_from = None
        else:
            # Nothing handled under this UIDVALIDITY: a first connection, or a change while
            # the gateway was down (then there are bookmarks of another UIDVALIDITY).
            older = sorted(str(v) for v in bookmarks if v != uidvalidity)
            changed_from = ", ".join(older) if older else None
            if not older:
                log.info(
                    "IMAP %s: first poll of %s, taking mail of the last %d day(s)",
                    self.account.name,
                    self.account.folder,
                    self.account.backfill_days,
                )
        if changed_from is not None:
            log.warning(
                "IMAP %s: UIDVALIDITY of %s changed from %s to %d; every message gets a new "
                "key, so messages whose bytes are already stored are skipped",
                self.account.name,
                self.account.folder,
                changed_from,
                uidvalidity,
            )

    def _ingest(self, client: IMAPClient, uidvalidity: int, batch: list[int]) -> int:
        acct = self.account
        prefix = acct.key_prefix(uidvalidity)
        # PEEK: fetching must not set \Seen before the message is stored.
        fetched = client.fetch(batch, [b"BODY.PEEK[]"])
        raws: dict[int, bytes] = {}
        for uid in batch:
            raw = fetched.get(uid, {}).get(b"BODY[]")
            if isinstance(raw, bytes):  # absent when expunged since the search
                raws[uid] = raw
        hashes = {uid: hashlib.sha256(raw).hexdigest() for uid, raw in raws.items()}
        known = (
            self._ledger.stored_hashes(acct.name, sorted(set(hashes.values()))) if hashes else set()
        )
        duplicates = [uid for uid in raws if hashes[uid] in known]
        new = [uid for uid in raws if hashes[uid] not in known]
        if duplicates:
            log.info(
                "IMAP %s: %d message(s) in %s already stored under another key, skipped",
                acct.name,
                len(duplicates),
                acct.folder,
            )
        mails = [
            IncomingMail(
                raw=raws[uid],
                source="imap",
                source_key=f"{prefix}{uid}",
                app_id=acct.app_id,
                channel_id=acct.channel_id,
            )
            for uid in new
        ]
        ids = self._store(mails) if mails else []
        # Committed: from here on a crash is covered by the stored keys.
        for inbound_id in ids:
            try:
                self._on_stored(inbound_id)
            except Exception:
                log.exception("IMAP %s: on_stored(%d) failed", acct.name, inbound_id)
        self._duplicates.update((uidvalidity, uid) for uid in duplicates)
        done = new + duplicates
        self._unmarked.update((uidvalidity, uid) for uid in done)
        self._mark(client, uidvalidity, done)
        return len(mails)

    def _finish_marking(
        self, client: IMAPClient, uidvalidity: int, stored_here: set[int], since: dt.date
    ) -> None:
        """Mark messages stored earlier but left unmarked (a crash, a failed mark)."""
        leftover = {uid for (validity, uid) in self._unmarked if validity == uidvalidity}
        leftover &= stored_here | {u for (v, u) in self._duplicates if v == uidvalidity}
        if self.account.processed_folder is not None:
            # The folder is meant to hold only unprocessed mail, so any stored one goes.
            leftover |= stored_here
        elif uidvalidity not in self._recovered and stored_here:
            # Once per process: a person may mark a message unread on purpose later, and
            # that must not be undone on every poll.
            leftover |= stored_here & set(client.search(["UNSEEN", "SINCE", since]))
        self._recovered.add(uidvalidity)
        if leftover:
            log.info(
                "IMAP %s: marking %d message(s) stored earlier but not yet marked",
                self.account.name,
                len(leftover),
            )
            self._mark(client, uidvalidity, sorted(leftover))
        self._unmarked = {(v, u) for (v, u) in self._unmarked if v == uidvalidity}

    def _mark(self, client: IMAPClient, uidvalidity: int, uids: list[int]) -> None:
        if not uids:
            return
        target = self.account.processed_folder
        if target is None:
            client.add_flags(uids, [SEEN], silent=True)
        else:
            self._ensure_processed_folder(client, target)
            if client.has_capability("MOVE"):
                client.move(uids, target)
            else:
                client.copy(uids, target)
                client.add_flags(uids, [DELETED], silent=True)
                if client.has_capability("UIDPLUS"):
                    client.uid_expunge(uids)
                else:
                    # Without UIDPLUS this also expunges whatever else is \Deleted.
                    client.expunge()
        self._unmarked.difference_update((uidvalidity, uid) for uid in uids)

    def _ensure_processed_folder(self, client: IMAPClient, target: str) -> None:
        if self._processed_folder_ready:
            return
        if not client.folder_exists(target):
            log.info("IMAP %s: creating folder %s", self.account.name, target)
            try:
                client.create_folder(target)
            except IMAPClientError:
                if not client.folder_exists(target):  # else another client just made it
                    raise
        self._processed_folder_ready = True

    # -- the loop --------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Poll until `stop` is set, waiting with IDLE (or sleeping) in between.

        Never raises: every failure is logged and retried after an exponential backoff.
        """
        failures = 0
        try:
            while not stop.is_set():
                try:
                    self.poll_once()
                    failures = 0
                    if not stop.is_set():
                        self._wait_for_mail(stop)
                except Exception as exc:
                    delay = min(BACKOFF_MAX, BACKOFF_MIN * 2**failures * random.uniform(1.0, 1.5))
                    failures += 1
                    if isinstance(exc, (ImapError, IMAPClientError, OSError)):
                        log.warning("IMAP %s: %s; retrying in %.0fs", self.account.name, exc, delay)
                    else:
                        log.exception(
                            "IMAP %s: poll failed; retrying in %.0fs", self.account.name, delay
                        )
                    self.close()
                    stop.wait(delay)
        finally:
            self.close()

    def _wait_for_mail(self, stop: threading.Event) -> None:
        client = self._client
        if client is None or not self.account.idle or not client.has_capability("IDLE"):
            stop.wait(self.account.poll_seconds)
            return
        client.idle()
        deadline = time.monotonic() + IDLE_SECONDS
        early_empty = 0
        while not stop.is_set() and time.monotonic() < deadline:
            started = time.monotonic()
            responses = client.idle_check(timeout=IDLE_SLICE)
            if any(_is_new_mail(r) for r in responses):
                break
            if any(r and r[0] == b"BYE" for r in responses):
                raise ImapError(f"{self.account.where} closed the connection during IDLE")
            # idle_check swallows EOF and returns at once; a few in a row is a dead socket.
            early_empty = (
                early_empty + 1
                if not responses and (time.monotonic() - started < IDLE_SLICE / 2)
                else 0
            )
            if early_empty >= 3:
                raise ImapError(f"connection to {self.account.where} lost during IDLE")
        client.idle_done()

    # -- checking ----------------------------------------------------------------------

    def reconcile(self) -> dict[str, Any]:
        """Compare the folder's backfill window with what is stored, on a connection of its own.

        `missing` lists UIDs (under the current UIDVALIDITY) neither stored nor known to be a
        duplicate of a stored message; a poll would take them.
        """
        client, info = self._connect(readonly=True)
        try:
            uidvalidity, _ = _validity(info)
            since = (self._clock() - dt.timedelta(days=self.account.backfill_days)).date()
            on_server = set(client.search(["SINCE", since]))
        finally:
            _close(client)
        stored = self._stored(uidvalidity, on_server)
        # A copy: `run` may be adding to the set in another thread.
        dups = {uid for (validity, uid) in self._duplicates.copy() if validity == uidvalidity}
        return {
            "on_server": len(on_server),
            "ingested": len(on_server & stored),
            "missing": sorted(on_server - stored - dups),
        }


def _validity(info: dict[bytes, Any]) -> tuple[int, int | None]:
    try:
        uidvalidity = int(info[b"UIDVALIDITY"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ImapError("the server gave no UIDVALIDITY for the folder") from exc
    uidnext = info.get(b"UIDNEXT")
    return uidvalidity, int(uidnext) if uidnext is not None else None


def _is_new_mail(response: Any) -> bool:
    return (
        isinstance(response, tuple) and len(response) >= 2 and response[1] in (b"EXISTS", b"RECENT")
    )


def _close(client: IMAPClient) -> None:
    try:
        client.logout()
    except Exception:  # noqa: BLE001 - the connection is being dropped anyway
        with contextlib.suppress(Exception):
            client.shutdown()
