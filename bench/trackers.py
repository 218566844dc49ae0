"""Tracker benchmark: "tell every linked customer" for a tracker with many linked customers.

    python bench/trackers.py [--count 1000] [--count 10000]

On a fresh SQLite database it links `count` customer tickets (a mix: by email, German by
email, chat only, bounced) to one tracker and times, each in its own transaction:

1. the tracker panel: `trackers.linked` + `trackers.preview` (what the page draws);
2. `trackers.tell_linked` with a German version, committed;
3. the limit: the same number of bare message rows in one executemany INSERT, committed
   (no routes, no languages, no events, no note).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import insert
from sqlalchemy.orm import Session

from gateway.db import make_engine, session_factory, upgrade
from tickets import services, trackers
from tickets.models import (
    AuthorType,
    Channel,
    ChannelAddress,
    ConversationState,
    Message,
    Ticket,
    TicketStatus,
    TicketType,
    Via,
)

NOW = dt.datetime(2026, 12, 3, 10, 0, tzinfo=dt.UTC)
TEXTS = ("I cannot log in since this morning", "Ich kann mich nicht anmelden, bitte helfen Sie")


def setup(session: Session, count: int) -> tuple[int, int]:
    """The app, an agent, a channel, a tracker and `count` linked tickets, by bulk inserts."""
    app = services.ensure_app(session, "bench", "Bench", NOW)
    agent = services.add_agent(session, app, "ana@bench.test", "Ana", NOW)
    channel = Channel(app_id=app.id, name="support", created_at=NOW)
    channel.addresses.append(ChannelAddress(address="support@bench.test"))
    session.add(channel)
    reporter = services.customer_by_address(session, app, "first@example.com", NOW)
    conversation, _ = services.start_conversation(session, app, reporter, "email", "Down", NOW)
    tracker = services.convert(session, conversation, agent, NOW, type="tracker")
    customers = services.insert_rows(
        session,
        services.Customer,
        [
            {
                "app_id": app.id,
                "name": f"Customer {i}",
                "locale": None,
                "visitor_token_hash": f"{i:064x}" if i % 4 == 2 else None,
                "created_at": NOW,
            }
            for i in range(count)
        ],
    )
    session.execute(
        insert(services.CustomerAddress),
        [
            {
                "app_id": app.id,
                "customer_id": cid,
                "address": f"c{i}@example.com",
                "bounced_at": NOW if i % 4 == 3 else None,
                "created_at": NOW,
            }
            for i, cid in enumerate(customers)
            if i % 4 != 2
        ],
    )
    conversations = services.insert_rows(
        session,
        services.Conversation,
        [
            {
                "app_id": app.id,
                "customer_id": cid,
                "started_via": Via.EMAIL,
                "subject": TEXTS[i % 2],
                "state": ConversationState.OPEN,
                "created_at": NOW,
                "updated_at": NOW,
            }
            for i, cid in enumerate(customers)
        ],
    )
    session.execute(
        insert(Message),
        [
            {
                "conversation_id": cid,
                "author_type": AuthorType.CUSTOMER,
                "via": Via.EMAIL,
                "text": TEXTS[i % 2],
                "created_at": NOW,
            }
            for i, cid in enumerate(conversations)
        ],
    )
    session.execute(
        insert(Ticket),
        [
            {
                "app_id": app.id,
                "number": 100 + i,
                "conversation_id": cid,
                "type": TicketType.CUSTOMER,
                "status": TicketStatus.OPEN,
                "tracker_id": tracker.id,
                "created_at": NOW,
                "updated_at": NOW,
            }
            for i, cid in enumerate(conversations)
        ],
    )
    return tracker.id, agent.id


def timed(label: str, count: int, seconds: float) -> None:
    print(f"  {label:<44} {seconds * 1000:9.1f} ms  ({seconds / count * 1e6:7.1f} µs per customer)")


def run(count: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'bench.db'}")
        upgrade(engine)
        sessions = session_factory(engine)
        with sessions() as s, s.begin():
            tracker_id, agent_id = setup(s, count)
        print(f"{count} linked customers (SQLite):")
        start = time.perf_counter()
        with sessions() as s, s.begin():
            preview = trackers.preview(trackers.linked(s, s.get(Ticket, tracker_id)))
        timed("panel: linked + preview", count, time.perf_counter() - start)
        start = time.perf_counter()
        with sessions() as s, s.begin():
            told = trackers.tell_linked(
                s,
                s.get(Ticket, tracker_id),
                s.get(services.Agent, agent_id),
                "The login problem is fixed.",
                NOW,
                versions={"de": "Das Anmeldeproblem ist behoben."},
                key="bench",
            )
        timed("tell_linked (committed)", count, time.perf_counter() - start)
        assert len(told.told) == preview.email + preview.widget
        start = time.perf_counter()
        with sessions() as s, s.begin():
            s.execute(
                insert(Message),
                [
                    {
                        "conversation_id": x.conversation_id,
                        "author_type": AuthorType.AGENT,
                        "via": Via.CHAT,
                        "text": "limit",
                        "created_at": NOW,
                    }
                    for x in told.told
                ],
            )
        timed("limit: bare INSERT of the messages", count, time.perf_counter() - start)
        print(
            f"  told {len(told.told)} ({preview.email} by email, {preview.widget} in the chat),"
            f" not told {len(told.not_told)}"
        )
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, action="append")
    for count in parser.parse_args().count or [1000]:
        run(count)


if __name__ == "__main__":
    main()
