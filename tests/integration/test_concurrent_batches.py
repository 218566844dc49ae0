"""Several workers processing batches at once on PostgreSQL: threads, senders and conversations
spread over their batches still come out whole, with no deadlock and no retry.

Each batch locks the threads, senders and conversations its mails touch before it reads
(channels/email/batch_index.py); before that, two batches holding replies of one thread, or
mail of one new sender, deadlocked or collided and were retried.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import func, select

from gateway.config import embedded_default
from gateway.inbound import RouteTable, process_batch, store_batch
from gateway.runtime import Runtime
from tests.conftest import reset_postgres
from tickets.inbound import IncomingMail
from tickets.models import Conversation, Customer, InboundMail, Message

PG_URL = os.environ.get("GATEWAY_TEST_DATABASE_URL")
CUSTOMERS = 16
MAILS_PER_THREAD = 4
WORKERS = 4
BATCH = 4


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    if not PG_URL:
        pytest.skip("GATEWAY_TEST_DATABASE_URL not set")
    reset_postgres(PG_URL).dispose()
    config = embedded_default().model_copy(
        update={"database_url": PG_URL, "data_dir": str(tmp_path)}
    )
    rt = Runtime.create(config)
    yield rt
    rt.close()


def thread_mails() -> list[bytes]:
    """Each customer's first mail and replies (In-Reply-To and References), in arrival order:
    round by round, so the mails of one thread sit far apart and land in different batches."""
    mails = []
    for k in range(MAILS_PER_THREAD):
        for c in range(CUSTOMERS):
            msg = EmailMessage()
            msg["From"] = f"Customer {c} <customer{c}@example.com>"
            msg["To"] = "support@localhost"
            msg["Subject"] = f"{'Re: ' if k else ''}Order {c}"
            msg["Message-ID"] = f"<c{c}-m{k}@example.com>"
            if k:
                msg["In-Reply-To"] = f"<c{c}-m{k - 1}@example.com>"
                msg["References"] = " ".join(f"<c{c}-m{j}@example.com>" for j in range(k))
            msg.set_content(f"Mail {k} of customer {c}.")
            mails.append(msg.as_bytes())
    return mails


def test_workers_at_once_keep_every_thread_whole_without_a_retry(runtime: Runtime) -> None:
    route = RouteTable(runtime)("support@localhost")
    assert route is not None
    ids = store_batch(
        runtime,
        [
            IncomingMail(
                raw=raw,
                source="smtp",
                envelope_to=("support@localhost",),
                app_id=route.app_id,
                channel_id=route.channel_id,
            )
            for raw in thread_mails()
        ],
    )
    assert all(isinstance(i, int) for i in ids)
    # Worker w takes every WORKERS-th mail: a thread's mails and a sender's go to all of them.
    shares = [[i for n, i in enumerate(ids) if n % WORKERS == w] for w in range(WORKERS)]
    start = threading.Barrier(WORKERS)
    failures: list[BaseException] = []

    def work(share: list[int]) -> None:
        try:
            start.wait()
            for n in range(0, len(share), BATCH):
                process_batch(runtime, share[n : n + BATCH])
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            failures.append(exc)

    workers = [threading.Thread(target=work, args=(share,)) for share in shares]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not failures

    with runtime.reading() as session:
        rows = session.execute(
            select(InboundMail.state, InboundMail.attempts, InboundMail.reason)
        ).all()
        assert {(state.value, attempts) for state, attempts, _ in rows} == {("processed", 1)}, [
            row for row in rows if row[1] != 1
        ]
        assert session.scalar(select(func.count()).select_from(Customer)) == CUSTOMERS
        threads = {
            conversation.subject: sorted(
                session.scalars(
                    select(Message.text).where(Message.conversation_id == conversation.id)
                )
            )
            for conversation in session.scalars(select(Conversation))
        }
    assert threads == {
        f"Order {c}": [f"Mail {k} of customer {c}." for k in range(MAILS_PER_THREAD)]
        for c in range(CUSTOMERS)
    }
