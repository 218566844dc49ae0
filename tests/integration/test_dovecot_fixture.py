"""Proves the throwaway Dovecot harness (tests/support/dovecot.py) behaves like a real
IMAP server for the poller's integration tests: every transport, exact message
round-trips, IDLE wake-ups, UIDVALIDITY changes and failed logins.
"""

from __future__ import annotations

import ssl
import time
from email.utils import make_msgid

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

import tests.support.dovecot as dovecot_module
from tests.support.dovecot import (  # noqa: F401  (importing registers the fixtures)
    Dovecot,
    DovecotError,
    dovecot_factory_fixture,
    dovecot_fixture,
)

USER = "support@example.test"
PASSWORD = "secret"


def make_message(subject: str = "Printer on fire") -> bytes:
    # CRLF throughout, and a non-ASCII header and body, so "exactly the same
    # bytes" would catch any re-encoding or line-ending rewrite.
    return (
        f"From: Customer <customer@example.test>\r\n"
        f"To: {USER}\r\n"
        f"Subject: {subject}\r\n"
        f"Message-ID: {make_msgid(domain='example.test')}\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
        "Bonjour, l'imprimante brûle encore.\r\n"
        ".leading dot and trailing spaces   \r\n"
    ).encode()


def test_login_on_plain_port(dovecot: Dovecot) -> None:
    client = IMAPClient(dovecot.host, port=dovecot.port, ssl=False, timeout=10)
    try:
        assert b"STARTTLS" in client.capabilities()
        client.login(USER, PASSWORD)
        assert client.select_folder("INBOX")[b"EXISTS"] == 0
    finally:
        client.logout()


def test_starttls_on_plain_port(dovecot: Dovecot) -> None:
    client = IMAPClient(dovecot.host, port=dovecot.port, ssl=False, timeout=10)
    try:
        # Trust only the generated certificate; hostname checking stays on and
        # matches the 127.0.0.1 subjectAltName.
        context = ssl.create_default_context(cafile=str(dovecot.cert_path))
        client.starttls(context)
        assert client._imap.sock.version() in {"TLSv1.2", "TLSv1.3"}
        client.login(USER, PASSWORD)
        assert client.folder_exists("INBOX")
    finally:
        client.logout()


def test_imaps_on_ssl_port(dovecot: Dovecot) -> None:
    context = ssl.create_default_context(cafile=str(dovecot.cert_path))
    client = IMAPClient(
        dovecot.host, port=dovecot.ssl_port, ssl=True, ssl_context=context, timeout=10
    )
    try:
        client.login(USER, PASSWORD)
        assert client.folder_exists("INBOX")
    finally:
        client.logout()


def test_imaps_rejects_untrusted_certificate(dovecot: Dovecot) -> None:
    # Guards against the positive TLS tests passing because verification is off.
    with pytest.raises(ssl.SSLCertVerificationError):
        IMAPClient(
            dovecot.host, port=dovecot.ssl_port, ssl=True,
            ssl_context=ssl.create_default_context(), timeout=10,
        )  # fmt: skip


def test_wrong_password_raises_login_error(dovecot: Dovecot) -> None:
    client = IMAPClient(dovecot.host, port=dovecot.port, ssl=False, timeout=10)
    try:
        with pytest.raises(LoginError):
            client.login(USER, "not-the-password")
    finally:
        client.logout()


def test_deliver_round_trips_exact_bytes(dovecot: Dovecot) -> None:
    raw = make_message()
    uid = dovecot.deliver(USER, raw)
    other_uid = dovecot.deliver(USER, make_message("elsewhere"), folder="Archive")

    with dovecot.login(USER, tls="starttls") as client:
        client.select_folder("INBOX", readonly=True)
        assert client.search("ALL") == [uid]
        fetched = client.fetch([uid], [b"BODY.PEEK[]", b"RFC822.SIZE"])[uid]
        assert fetched[b"BODY[]"] == raw
        assert fetched[b"RFC822.SIZE"] == len(raw)
        client.select_folder("Archive", readonly=True)
        assert client.search("ALL") == [other_uid]


def test_idle_sees_message_delivered_from_another_connection(dovecot: Dovecot) -> None:
    with dovecot.login(USER) as watcher:
        watcher.select_folder("INBOX")
        watcher.idle()
        try:
            started = time.monotonic()
            uid = dovecot.deliver(USER, make_message("wake up"))
            exists: list[int] = []
            while not exists and time.monotonic() - started < 5:
                responses = watcher.idle_check(timeout=1)
                exists = [num for num, kind in responses if kind == b"EXISTS"]
            waited = time.monotonic() - started
        finally:
            watcher.idle_done()
        assert exists == [1], f"no EXISTS within {waited:.1f}s"
        assert waited < 3
        assert watcher.search("ALL") == [uid]


def test_reset_uidvalidity_changes_uidvalidity(dovecot: Dovecot) -> None:
    first = dovecot.deliver(USER, make_message("one"))
    second = dovecot.deliver(USER, make_message("two"))
    before = dovecot.uidvalidity(USER)

    after = dovecot.reset_uidvalidity(USER)

    assert after != before
    with dovecot.login(USER) as client:
        selected = client.select_folder("INBOX", readonly=True)
        assert selected[b"UIDVALIDITY"] == after
        assert client.search("ALL") == [first, second]


def test_reset_uidvalidity_with_renumber_keeps_messages_under_new_uids(
    dovecot: Dovecot,
) -> None:
    raws = [make_message("one"), make_message("two")]
    old_uids = [dovecot.deliver(USER, raw) for raw in raws]
    with dovecot.login(USER) as client:
        client.select_folder("INBOX")
        client.add_flags([old_uids[0]], [b"\\Seen"])
    before = dovecot.uidvalidity(USER)

    after = dovecot.reset_uidvalidity(USER, renumber=True)

    assert after != before
    with dovecot.login(USER) as client:
        client.select_folder("INBOX", readonly=True)
        new_uids = client.search("ALL")
        assert len(new_uids) == 2
        assert not set(new_uids) & set(old_uids)
        fetched = client.fetch(new_uids, [b"BODY.PEEK[]", b"FLAGS"])
        assert [fetched[uid][b"BODY[]"] for uid in new_uids] == raws
        assert b"\\Seen" in fetched[new_uids[0]][b"FLAGS"]
        assert b"\\Seen" not in fetched[new_uids[1]][b"FLAGS"]


def test_uidvalidity_change_is_observable_by_a_connected_poller(dovecot: Dovecot) -> None:
    # A long-lived poller session cannot go on using stale UIDs: Dovecot ends a
    # session whose selected mailbox changed UIDVALIDITY under it ("IMAP session
    # state is inconsistent, please relogin"), and a new session sees the new value.
    dovecot.deliver(USER, make_message())
    with dovecot.login(USER) as poller:
        before = poller.select_folder("INBOX")[b"UIDVALIDITY"]
        after = dovecot.reset_uidvalidity(USER)
        with pytest.raises(IMAPClient.AbortError):
            poller.noop()
    with dovecot.login(USER) as poller:
        assert poller.select_folder("INBOX")[b"UIDVALIDITY"] == after != before


def test_users_and_factory(dovecot_factory) -> None:
    server = dovecot_factory(users={"a@example.test": "pw-a", "b@example.test": "pw-b"})
    assert server.users == {"a@example.test": "pw-a", "b@example.test": "pw-b"}
    server.deliver("b@example.test", make_message())
    with server.login("a@example.test") as client:
        assert client.select_folder("INBOX")[b"EXISTS"] == 0
    with server.login("b@example.test") as client:
        assert client.select_folder("INBOX")[b"EXISTS"] == 1

    server.add_user("c@example.test", "pw-c")
    with server.login("c@example.test") as client:
        assert client.folder_exists("INBOX")

    with pytest.raises(DovecotError, match="unknown user"):
        server.deliver("nobody@example.test", make_message())

    server.stop()
    assert not server.running


@pytest.mark.parametrize(
    ("ci", "outcome"), [("", pytest.skip.Exception), ("1", pytest.fail.Exception)]
)
def test_missing_dovecot_skips_locally_but_fails_in_ci(
    monkeypatch: pytest.MonkeyPatch, ci: str, outcome: type[BaseException]
) -> None:
    monkeypatch.setattr(dovecot_module, "find_binary", lambda name: None)
    if ci:
        monkeypatch.setenv("CI", ci)
    else:
        monkeypatch.delenv("CI", raising=False)
    with pytest.raises(outcome, match="not installed"):
        dovecot_module.require_dovecot()
