"""Processing of stored inbound mail in batches: one transaction per batch, a failing mail
quarantined without harming the rest, and a reply never overtaking the mail it answers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import func, select

from gateway.config import embedded_default
from gateway.inbound import RouteTable, process_batch, process_inbound, store_batch
from gateway.runtime import Runtime
from tickets.inbound import IncomingMail
from tickets.models import Conversation, Customer, InboundMail, InboundState, Message


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    config = embedded_default().model_copy(
        update={"database_url": f"sqlite:///{tmp_path / 'gw.db'}", "data_dir": str(tmp_path)}
    )
    rt = Runtime.create(config)
    yield rt
    rt.close()


def raw_mail(sender: str, subject: str, body: str, message_id: str, **headers: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "support@localhost"
    msg["Subject"] = subject
    msg["Message-ID"] = message_id
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg.as_bytes()


def store(runtime: Runtime, *raws: bytes) -> list[int]:
    route = RouteTable(runtime)("support@localhost")
    assert route is not None
    return store_batch(
        runtime,
        [
            IncomingMail(
                raw=raw,
                source="smtp",
                envelope_to=("support@localhost",),
                app_id=route.app_id,
                channel_id=route.channel_id,
            )
            for raw in raws
        ],
    )


def conversations(runtime: Runtime) -> list[list[str]]:
    """The text of each conversation's messages, conversation by conversation."""
    with runtime.unit_of_work() as session:
        return [
            [
                m.text
                for m in session.scalars(
                    select(Message).where(Message.conversation_id == c.id).order_by(Message.id)
                )
            ]
            for c in session.scalars(select(Conversation).order_by(Conversation.id))
        ]


def states(runtime: Runtime) -> list[str]:
    with runtime.unit_of_work() as session:
        rows = session.scalars(select(InboundMail).order_by(InboundMail.id))
        return [r.state.value for r in rows]


def test_a_reply_processed_before_its_parent_still_joins_the_parents_conversation(runtime):
    # Both arrive before either is processed; a worker happens to pick up the reply first.
    first, reply = store(
        runtime,
        raw_mail("ana@example.com", "Parcel missing", "My parcel never came.", "<p1@example.com>"),
        raw_mail(
            "ana@example.com",
            "Re: Parcel missing",
            "Also, the tracking page is blank.",
            "<p2@example.com>",
            In_Reply_To="<p1@example.com>",
        ),
    )
    outcome = process_inbound(runtime, reply)
    assert outcome is not None and outcome.state == "processed"
    assert conversations(runtime) == [
        ["My parcel never came.", "Also, the tracking page is blank."]
    ]
    assert states(runtime) == ["processed", "processed"]
    # The parent's own job comes later and finds nothing to do.
    assert process_inbound(runtime, first) is None


def test_a_reply_by_someone_else_does_not_pull_in_anothers_mail(runtime):
    store(
        runtime,
        raw_mail("ana@example.com", "Parcel missing", "My parcel never came.", "<q1@example.com>"),
    )
    (other,) = store(
        runtime,
        raw_mail(
            "eve@example.com",
            "Re: Parcel missing",
            "I got this forwarded.",
            "<q2@example.com>",
            References="<q1@example.com>",
        ),
    )
    process_inbound(runtime, other)
    # Ana's mail was processed first (it is the parent), and Eve still gets her own conversation.
    assert conversations(runtime) == [["My parcel never came."], ["I got this forwarded."]]


def test_one_broken_mail_in_a_batch_is_quarantined_and_the_rest_are_stored(runtime):
    good = raw_mail("ben@example.com", "Invoice", "Where is my invoice?", "<b1@example.com>")
    no_sender = b"Subject: who am I\r\nMessage-ID: <b2@example.com>\r\n\r\nnobody wrote this\r\n"
    ids = store(
        runtime,
        good,
        no_sender,
        raw_mail("cleo@example.com", "Login", "I cannot log in.", "<b3@example.com>"),
    )
    outcomes = process_batch(runtime, ids)
    assert [outcomes[i].state for i in ids] == ["processed", "quarantined", "processed"]
    assert "From" in outcomes[ids[1]].detail
    assert conversations(runtime) == [["Where is my invoice?"], ["I cannot log in."]]
    with runtime.unit_of_work() as session:
        kept = session.get(InboundMail, ids[1])
        assert kept is not None and kept.raw == no_sender and kept.state == InboundState.QUARANTINED
    # Run twice: nothing happens the second time.
    assert process_batch(runtime, ids) == {}
    assert len(conversations(runtime)) == 2


def test_a_mail_that_cannot_be_parsed_leaves_the_rest_of_its_batch_stored_once(runtime):
    # The parser refuses it before the pipeline runs: the batch goes on without savepoints,
    # and what the mails before it stored must stay, once.
    nested = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
        for i in range(60)
    )
    too_deep = (
        b"From: dan@example.com\r\nSubject: deep\r\nMessage-ID: <d2@example.com>\r\n"
        b"MIME-Version: 1.0\r\n" + nested + b"Content-Type: text/plain\r\n\r\nhi\r\n"
    )
    ids = store(
        runtime,
        raw_mail("ben@example.com", "Invoice", "Where is my invoice?", "<d1@example.com>"),
        too_deep,
        raw_mail("cleo@example.com", "Login", "I cannot log in.", "<d3@example.com>"),
    )
    outcomes = process_batch(runtime, ids)
    assert [outcomes[i].state for i in ids] == ["processed", "quarantined", "processed"]
    assert states(runtime) == ["processed", "quarantined", "processed"]
    assert process_batch(runtime, ids) == {}
    assert conversations(runtime) == [["Where is my invoice?"], ["I cannot log in."]]


def test_a_database_conflict_leaves_the_mail_pending_for_a_retry_not_quarantined(
    runtime, monkeypatch
):
    """A deadlock or a concurrent insert (several workers on PostgreSQL) is not the mail's
    fault: it is retried; only a mail that keeps meeting conflicts ends in quarantine."""
    from sqlalchemy.exc import OperationalError

    import gateway.inbound as inbound_wiring

    real = inbound_wiring.run_pipeline
    # Twice: the batch's first run (no savepoints) fails whole and is run again with a
    # savepoint per mail, where the conflict comes back.
    conflicts = {"left": 2}

    def conflicting(session, row, *args, **kwargs):
        if b"<c2@" in row.raw and conflicts["left"]:
            conflicts["left"] -= 1
            raise OperationalError("SELECT pg_advisory_xact_lock(...)", {}, Exception("deadlock"))
        return real(session, row, *args, **kwargs)

    monkeypatch.setattr(inbound_wiring, "run_pipeline", conflicting)
    ids = store(
        runtime,
        raw_mail("dan@example.com", "Refund", "Where is my refund?", "<c1@example.com>"),
        raw_mail("eli@example.com", "Login", "I cannot log in.", "<c2@example.com>"),
    )
    first = process_batch(runtime, ids)
    assert [first[i].state for i in ids] == ["processed", "pending"]
    assert states(runtime) == ["processed", "pending"]
    # The retry (the sweep hands it on again) stores it.
    again = process_batch(runtime, ids)
    assert again[ids[1]].state == "processed"
    assert conversations(runtime) == [["Where is my refund?"], ["I cannot log in."]]

    # A mail that never gets through is quarantined after a few tries, with the reason.
    conflicts["left"] = 100
    (stubborn,) = store(
        runtime, raw_mail("fay@example.com", "Hello", "Anyone there?", "<c2@example.net>")
    )
    outcomes = [process_batch(runtime, [stubborn])[stubborn].state for _ in range(5)]
    assert outcomes == ["pending"] * 4 + ["quarantined"]
    with runtime.unit_of_work() as session:
        row = session.get(InboundMail, stubborn)
        assert row is not None and "deadlock" in (row.reason or "")


def test_looking_up_pending_mail_does_not_wait_for_a_writer(runtime: Runtime) -> None:
    """On SQLite a worker finds and reads the mail it will process while another transaction
    holds the write lock (the SMTP accept path committing, another batch being stored)."""
    [mail_id] = store(runtime, raw_mail("ana@example.com", "Hello", "Hi", "<r1@example.com>"))
    holding, done = threading.Event(), threading.Event()

    def writer() -> None:
        with runtime.unit_of_work() as session:
            session.execute(select(InboundMail.id)).all()
            holding.set()
            done.wait(10)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert holding.wait(5)
        started = time.monotonic()
        with runtime.reading() as session:
            state = session.scalar(select(InboundMail.state).where(InboundMail.id == mail_id))
        assert state == InboundState.PENDING
        assert time.monotonic() - started < 2, "the read waited for the writer"
    finally:
        done.set()
        thread.join()


def test_mails_of_one_batch_see_what_the_earlier_ones_stored(runtime: Runtime) -> None:
    """One transaction, mails that depend on each other: a reply, a follow-up by subject, a
    second copy, a customer's second address... each sees what the mails before it stored."""
    ids = store(
        runtime,
        raw_mail("ana@example.com", "Parcel missing", "It never came.", "<b1@example.com>"),
        raw_mail(
            "ana@example.com",
            "Re: Parcel missing",
            "Tracking is blank.",
            "<b2@example.com>",
            In_Reply_To="<b1@example.com>",
            References="<b1@example.com>",
        ),
        raw_mail("ana@example.com", "Parcel missing", "Any news?", "<b3@example.com>"),
        raw_mail("ana@example.com", "Parcel missing", "It never came.", "<b1@example.com>"),
        raw_mail(
            "ben@example.com",
            "Re: Parcel missing",
            "I have the same problem.",
            "<b4@example.com>",
            In_Reply_To="<b2@example.com>",
        ),
        raw_mail("ana@example.com", "Invoice", "Wrong address on it.", "<b5@example.com>"),
    )
    outcomes = process_batch(runtime, ids)
    assert [outcomes[i].state for i in ids] == ["processed"] * 6
    assert "duplicate" in outcomes[ids[3]].detail
    assert conversations(runtime) == [
        ["It never came.", "Tracking is blank.", "Any news?"],
        ["I have the same problem."],  # Ben's own: another customer's thread is not his
        ["Wrong address on it."],
    ]
    with runtime.unit_of_work() as session:
        owners = session.scalars(select(Conversation.customer_id).order_by(Conversation.id)).all()
        flags = session.scalars(select(Message.flags).where(Message.inbound_mail_id == ids[4]))
        assert owners[0] == owners[2] != owners[1]  # Ana is one customer, Ben another
        assert flags.one()["answers_conversation_of_someone_else"]


def test_a_commit_on_sqlite_is_on_disk_before_it_returns(runtime: Runtime) -> None:
    """The 250 goes out after the commit; that commit must survive a power loss, not only a
    crash of the gateway: SQLite syncs its log at every commit (synchronous=FULL, 2)."""
    with runtime.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2


def test_a_mail_failing_after_it_wrote_leaves_nothing_behind(runtime, monkeypatch):
    """A pipeline that fails midway (its conversation and message already written) must not
    leave them: the batch is run again with a savepoint per mail, and only that mail's writes
    are undone."""
    from tickets import services

    real = services.add_customer_message_without_effects

    def fails_after_writing(*args, **kwargs):
        ids = real(*args, **kwargs)
        if "boom" in args[5]:
            raise RuntimeError("disk on fire")
        return ids

    monkeypatch.setattr(services, "add_customer_message_without_effects", fails_after_writing)
    ids = store(
        runtime,
        raw_mail("gus@example.com", "Order", "Where is my order?", "<f1@example.com>"),
        raw_mail("hal@example.com", "Oops", "boom", "<f2@example.com>"),
        raw_mail("ivy@example.com", "Refund", "Refund please.", "<f3@example.com>"),
    )
    outcomes = process_batch(runtime, ids)
    assert [outcomes[i].state for i in ids] == ["processed", "quarantined", "processed"]
    assert "disk on fire" in outcomes[ids[1]].detail
    assert conversations(runtime) == [["Where is my order?"], ["Refund please."]]
    with runtime.unit_of_work() as session:
        assert session.scalar(select(func.count()).select_from(Customer)) == 2
