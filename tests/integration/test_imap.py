"""The IMAP poller against a real Dovecot and a real SQLite database: nothing lost, nothing
doubled, across crashes, UIDVALIDITY changes and reconnections."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from channels.email import imap
from channels.email.imap import ImapAccount, ImapError, ImapPoller
from gateway.db import make_engine, upgrade
from gateway.inbound import FolderLedger
from tests.support.dovecot import (  # noqa: F401  (importing registers the fixtures)
    Dovecot,
    _free_port,
    dovecot_factory_fixture,
    dovecot_fixture,
)
from tickets.inbound import IncomingMail, store_incoming
from tickets.models import InboundMail

USER = "support@example.test"
PASSWORD = "secret"
NAME = "support"


def message(subject: str) -> bytes:
    # CRLF and non-ASCII, so "the exact bytes" would catch any re-encoding.
    return (
        "From: Customer <customer@example.test>\r\n"
        f"To: {USER}\r\n"
        f"Subject: {subject}\r\n"
        f"Message-ID: {make_msgid(domain='example.test')}\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
        "Bonjour, l'imprimante brûle encore.\r\n"
    ).encode()


class Db:
    """The poller's storage callables, as the gateway would supply them, on a real database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.stored_ids: list[int] = []

    def store(self, mails: Sequence[IncomingMail]) -> list[int]:
        with Session(self.engine) as s, s.begin():
            return store_incoming(s, mails, dt.datetime.now(dt.UTC))

    @property
    def ledger(self) -> FolderLedger:
        return FolderLedger(self.engine, lambda: dt.datetime.now(dt.UTC))

    def rows(self) -> list[InboundMail]:
        with Session(self.engine, expire_on_commit=False) as s:
            return list(s.scalars(select(InboundMail).order_by(InboundMail.id)))

    def count(self) -> int:
        with Session(self.engine) as s:
            return int(s.scalar(select(func.count()).select_from(InboundMail)) or 0)

    def poller(
        self, account: ImapAccount, store: Callable[..., list[int]] | None = None
    ) -> ImapPoller:
        return ImapPoller(
            account,
            store or self.store,
            self.ledger,
            on_stored=self.stored_ids.append,
        )


@pytest.fixture
def db(tmp_path: Path) -> Db:
    engine = make_engine(f"sqlite:///{tmp_path / 't.db'}")
    upgrade(engine)
    return Db(engine)


def account(dovecot: Dovecot, tls: str = "plain", **kwargs: Any) -> ImapAccount:
    settings: dict[str, Any] = {
        "name": NAME,
        "host": dovecot.host,
        "port": dovecot.ssl_port if tls == "ssl" else dovecot.port,
        "ssl": tls == "ssl",
        "starttls": tls == "starttls",
        "username": USER,
        "password": PASSWORD,
        "ssl_context": dovecot.ssl_context() if tls != "plain" else None,
    }
    settings.update(kwargs)
    return ImapAccount(**settings)


def server_flags(dovecot: Dovecot, folder: str = "INBOX") -> dict[int, set[bytes]]:
    with dovecot.login(USER) as client:
        client.select_folder(folder, readonly=True)
        flags = client.get_flags(client.search("ALL"))
    return {uid: set(f) for uid, f in flags.items()}


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(imap, "BACKOFF_MIN", 0.05)


def test_first_poll_stores_exact_bytes_once_and_marks_seen(dovecot: Dovecot, db: Db) -> None:
    raws = [message("one"), message("two")]
    uids = [dovecot.deliver(USER, raw) for raw in raws]
    poller = db.poller(account(dovecot))

    assert poller.poll_once() == 2
    rows = db.rows()
    assert [r.raw for r in rows] == raws
    validity = dovecot.uidvalidity(USER)
    assert [r.source_key for r in rows] == [f"imap:{NAME}:INBOX:{validity}:{u}" for u in uids]
    assert [r.sha256 for r in rows] == [hashlib.sha256(raw).hexdigest() for raw in raws]
    assert db.stored_ids == [r.id for r in rows]
    assert all(b"\\Seen" in f for f in server_flags(dovecot).values())

    assert poller.poll_once() == 0
    assert db.count() == 2
    assert poller.reconcile() == {"on_server": 2, "ingested": 2, "missing": []}
    poller.close()


def test_a_message_read_by_a_person_is_still_taken(dovecot: Dovecot, db: Db) -> None:
    dovecot.deliver(USER, message("read already"), flags=[b"\\Seen"])
    poller = db.poller(account(dovecot))
    assert poller.poll_once() == 1
    poller.close()


def test_processed_folder_is_created_and_receives_the_stored_mail(dovecot: Dovecot, db: Db) -> None:
    raws = [message("one"), message("two")]
    for raw in raws:
        dovecot.deliver(USER, raw)
    poller = db.poller(account(dovecot, processed_folder="Processed"))

    assert poller.poll_once() == 2
    assert server_flags(dovecot) == {}
    with dovecot.login(USER) as client:
        client.select_folder("Processed", readonly=True)
        moved = client.fetch(client.search("ALL"), [b"BODY.PEEK[]"])
    assert sorted(d[b"BODY[]"] for d in moved.values()) == sorted(raws)

    assert poller.poll_once() == 0
    assert db.count() == 2
    poller.close()


@pytest.mark.parametrize("processed_folder", [None, "Processed"])
def test_crash_between_store_and_mark_stores_once(
    dovecot: Dovecot, db: Db, processed_folder: str | None
) -> None:
    dovecot.deliver(USER, message("crash"))
    acct = account(dovecot, processed_folder=processed_folder)

    def store_then_crash(mails: Sequence[IncomingMail]) -> list[int]:
        db.store(mails)  # committed
        raise RuntimeError("process killed before marking")

    crashing = db.poller(acct, store=store_then_crash)
    with pytest.raises(RuntimeError):
        crashing.poll_once()
    crashing.close()
    assert db.count() == 1
    assert all(b"\\Seen" not in f for f in server_flags(dovecot).values())

    restarted = db.poller(acct)
    assert restarted.poll_once() == 0
    assert db.count() == 1
    if processed_folder is None:
        assert all(b"\\Seen" in f for f in server_flags(dovecot).values())
    else:
        assert server_flags(dovecot) == {}
        assert len(server_flags(dovecot, processed_folder)) == 1
    restarted.close()


def test_failed_store_marks_nothing_and_is_retried(dovecot: Dovecot, db: Db) -> None:
    dovecot.deliver(USER, message("db down"))
    acct = account(dovecot)

    def broken(mails: Sequence[IncomingMail]) -> list[int]:
        raise RuntimeError("database unavailable")

    with pytest.raises(RuntimeError):
        db.poller(acct, store=broken).poll_once()
    assert all(b"\\Seen" not in f for f in server_flags(dovecot).values())
    assert db.poller(acct).poll_once() == 1


@pytest.mark.parametrize("restart", [False, True], ids=["same-poller", "restarted"])
def test_uidvalidity_change_stores_no_duplicates(
    dovecot: Dovecot, db: Db, restart: bool, caplog: pytest.LogCaptureFixture
) -> None:
    raws = [message("one"), message("two")]
    for raw in raws:
        dovecot.deliver(USER, raw)
    poller = db.poller(account(dovecot))
    assert poller.poll_once() == 2
    old_validity = dovecot.uidvalidity(USER)

    new_validity = dovecot.reset_uidvalidity(USER, renumber=True)
    assert new_validity != old_validity
    later = message("after the change")
    dovecot.deliver(USER, later)
    if restart:
        poller.close()
        poller = db.poller(account(dovecot))

    with caplog.at_level(logging.WARNING, logger="channels.email.imap"):
        # The server dropped the old session: this poll also proves the reconnection.
        assert poller.poll_once() == 1
    assert "UIDVALIDITY" in caplog.text
    rows = db.rows()
    assert [r.raw for r in rows] == [*raws, later]
    assert rows[-1].source_key is not None
    assert rows[-1].source_key.startswith(f"imap:{NAME}:INBOX:{new_validity}:")
    assert all(b"\\Seen" in f for f in server_flags(dovecot).values())
    assert poller.poll_once() == 0
    assert db.count() == 3
    poller.close()


def test_backfill_window_skips_old_mail_on_first_connect(dovecot: Dovecot, db: Db) -> None:
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    old_uid = dovecot.deliver(USER, message("ancient"), msg_time=old)
    recent = message("recent")
    dovecot.deliver(USER, recent)
    poller = db.poller(account(dovecot, backfill_days=7))

    assert poller.poll_once() == 1
    assert [r.raw for r in db.rows()] == [recent]
    assert b"\\Seen" not in server_flags(dovecot)[old_uid]
    assert poller.poll_once() == 0
    assert poller.reconcile() == {"on_server": 1, "ingested": 1, "missing": []}
    poller.close()


def test_old_dated_mail_arriving_after_the_first_poll_is_taken(dovecot: Dovecot, db: Db) -> None:
    # A delayed or imported message can carry an old INTERNALDATE; it is new to us all the same.
    dovecot.deliver(USER, message("first"))
    poller = db.poller(account(dovecot, backfill_days=1))
    assert poller.poll_once() == 1
    dovecot.deliver(USER, message("imported"), msg_time=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    assert poller.poll_once() == 1
    poller.close()


def test_a_restarted_poller_goes_on_from_the_bookmark_in_the_database(
    dovecot: Dovecot, db: Db
) -> None:
    """The highest UID looked at is kept per UIDVALIDITY: after a restart, mail beyond it is
    taken whatever its date, and old mail the first poll left outside the window stays left."""
    ancient = dovecot.deliver(
        USER, message("ancient"), msg_time=dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    )
    dovecot.deliver(USER, message("first"))
    first = db.poller(account(dovecot, backfill_days=1))
    assert first.poll_once() == 1
    first.close()
    with dovecot.login(USER) as client:
        validity = int(client.select_folder("INBOX")[b"UIDVALIDITY"])
    assert db.ledger.bookmarks(NAME, "INBOX") == {validity: ancient + 1}

    # Down for a while; meanwhile an imported, old-dated message arrives.
    late = message("imported")
    imported = dovecot.deliver(USER, late, msg_time=dt.datetime(2020, 1, 2, tzinfo=dt.UTC))
    again = db.poller(account(dovecot, backfill_days=1))
    assert again.poll_once() == 1
    assert db.rows()[-1].raw == late
    assert b"\\Seen" not in server_flags(dovecot)[ancient]
    assert db.ledger.bookmarks(NAME, "INBOX") == {validity: imported}
    assert again.poll_once() == 0
    again.close()


def test_reconcile_reports_what_a_poll_would_take(dovecot: Dovecot, db: Db) -> None:
    uid = dovecot.deliver(USER, message("waiting"))
    poller = db.poller(account(dovecot))
    assert poller.reconcile() == {"on_server": 1, "ingested": 0, "missing": [uid]}
    # reconcile only looks (EXAMINE), so the message is still unread and unstored.
    assert b"\\Seen" not in server_flags(dovecot)[uid]
    assert db.count() == 0


def test_run_idles_and_stores_new_mail_quickly_then_stops_promptly(
    dovecot: Dovecot, db: Db
) -> None:
    # poll_seconds is long, so only IDLE can explain a quick pickup.
    poller = db.poller(account(dovecot, poll_seconds=600))
    stop = threading.Event()
    thread = threading.Thread(target=poller.run, args=(stop,), daemon=True)
    thread.start()
    try:
        time.sleep(0.5)  # let the first poll finish and IDLE begin
        raw = message("while idling")
        dovecot.deliver(USER, raw)
        assert wait_until(lambda: db.count() == 1, timeout=5)
        assert db.rows()[0].raw == raw
    finally:
        stop.set()
        started = time.monotonic()
        thread.join(timeout=3)
    assert not thread.is_alive()
    assert time.monotonic() - started < 2.0


def test_run_without_idle_sleeps_poll_seconds(dovecot: Dovecot, db: Db) -> None:
    poller = db.poller(account(dovecot, idle=False, poll_seconds=0.2))
    stop = threading.Event()
    thread = threading.Thread(target=poller.run, args=(stop,), daemon=True)
    thread.start()
    try:
        dovecot.deliver(USER, message("polled"))
        assert wait_until(lambda: db.count() == 1, timeout=5)
    finally:
        stop.set()
        thread.join(timeout=2)
    assert not thread.is_alive()


def test_run_survives_a_dropped_connection(dovecot: Dovecot, db: Db, fast_backoff: None) -> None:
    dovecot.deliver(USER, message("before"))
    poller = db.poller(account(dovecot, poll_seconds=600))
    stop = threading.Event()
    thread = threading.Thread(target=poller.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: db.count() == 1)
        time.sleep(0.3)
        # Dovecot disconnects the idling session when UIDVALIDITY changes.
        dovecot.reset_uidvalidity(USER, renumber=True)
        dovecot.deliver(USER, message("after"))
        assert wait_until(lambda: db.count() == 2, timeout=8)
        time.sleep(0.5)
        assert db.count() == 2
    finally:
        stop.set()
        thread.join(timeout=3)
    assert not thread.is_alive()


def test_run_retries_a_failing_login_without_logging_the_password(
    dovecot: Dovecot, db: Db, fast_backoff: None, caplog: pytest.LogCaptureFixture
) -> None:
    dovecot.deliver(USER, message("patience"))
    poller = db.poller(account(dovecot, password="not-yet-valid"))
    stop = threading.Event()
    thread = threading.Thread(target=poller.run, args=(stop,), daemon=True)
    with caplog.at_level(logging.INFO, logger="channels.email.imap"):
        thread.start()
        try:
            assert wait_until(lambda: "login failed" in caplog.text, timeout=5)
            dovecot.add_user(USER, "not-yet-valid")  # the operator fixes the password
            assert wait_until(lambda: db.count() == 1, timeout=8)
        finally:
            stop.set()
            thread.join(timeout=3)
    assert not thread.is_alive()
    assert "not-yet-valid" not in caplog.text


def test_wrong_password_is_a_clear_error(dovecot: Dovecot, db: Db) -> None:
    poller = db.poller(account(dovecot, password="wrong-password"))
    with pytest.raises(ImapError, match=rf"^login failed for {USER} at 127\.0\.0\.1: .+") as err:
        poller.poll_once()
    assert "wrong-password" not in str(err.value)
    assert "wrong-password" not in repr(poller.account)


def test_xoauth2_is_attempted_and_a_refusal_is_a_clear_error(dovecot: Dovecot, db: Db) -> None:
    # The harness offers only PLAIN and LOGIN, so the server refuses the mechanism.
    poller = db.poller(account(dovecot, password=None, oauth2_token="ya29.token"))
    with pytest.raises(ImapError, match=rf"^login failed for {USER} at 127\.0\.0\.1: ") as err:
        poller.poll_once()
    assert "ya29" not in str(err.value)


def test_missing_folder_is_a_clear_error(dovecot: Dovecot, db: Db) -> None:
    poller = db.poller(account(dovecot, folder="Nope"))
    with pytest.raises(ImapError, match=r"^folder Nope does not exist"):
        poller.poll_once()


def test_unreachable_server_is_a_clear_error(db: Db) -> None:
    port = _free_port()
    acct = ImapAccount(
        name=NAME, host="127.0.0.1", port=port, ssl=False, starttls=False,
        username=USER, password=PASSWORD,
    )  # fmt: skip
    with pytest.raises(ImapError, match=rf"^cannot connect to 127\.0\.0\.1:{port}: "):
        db.poller(acct).poll_once()


def test_no_credentials_is_refused_up_front(dovecot: Dovecot, db: Db) -> None:
    with pytest.raises(ImapError, match="no password or OAuth2 token"):
        db.poller(account(dovecot, password=None))


@pytest.mark.parametrize("tls", ["starttls", "ssl"])
def test_tls_transports(dovecot: Dovecot, db: Db, tls: str) -> None:
    raw = message(f"over {tls}")
    dovecot.deliver(USER, raw)
    poller = db.poller(account(dovecot, tls))
    assert poller.poll_once() == 1
    assert db.rows()[0].raw == raw
    poller.close()


@pytest.mark.parametrize("tls", ["starttls", "ssl"])
def test_tls_verifies_the_certificate(dovecot: Dovecot, db: Db, tls: str) -> None:
    # Without the harness's context the self-signed certificate is not trusted: proof that
    # the transport really is TLS and that verification is on by default.
    poller = db.poller(account(dovecot, tls, ssl_context=None))
    with pytest.raises(ImapError, match=r"(?i)certificate"):
        poller.poll_once()
