"""On PostgreSQL two sweepers at once (a leader handover) split the due rows: each sweep query
locks what it takes with FOR UPDATE SKIP LOCKED, and the other skips those rows."""

from __future__ import annotations

import datetime as dt
import os

import pytest
from sqlalchemy import delete
from sqlalchemy.orm import Session

from tests.conftest import reset_postgres
from tickets import services, sla
from tickets.models import Base

PG_URL = os.environ.get("GATEWAY_TEST_DATABASE_URL")
T0 = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)


@pytest.mark.skipif(not PG_URL, reason="GATEWAY_TEST_DATABASE_URL not set")
def test_two_sweepers_split_the_due_timers():
    assert PG_URL
    engine = reset_postgres(PG_URL)
    try:
        with Session(engine) as s, s.begin():
            app = services.ensure_app(s, "acme", "Acme", T0)
            app.sla_policies = [
                sla.policy_json(
                    "p",
                    priorities=["normal"],
                    categories=[],
                    durations={"resolution": "1h"},
                    calendar=None,
                    warn_at=0.9,
                )
            ]
            agent = services.add_agent(s, app, "ana@acme.example", "Ana", T0)
            for i in range(10):
                at = T0 + dt.timedelta(minutes=i)  # distinct due times: one order for both
                customer = services.create_customer(s, app, at, email=f"c{i}@example.com")
                conversation, _ = services.start_conversation(s, app, customer, "chat", "hi", at)
                services.convert(s, conversation, agent, at, type="back_office")
        later = T0 + dt.timedelta(hours=3)
        with Session(engine) as first, Session(engine) as second:
            with first.begin():
                taken = sla.due_timer_ids(first, later, 6)
                # `first` still holds its locks: `second` gets only the others, without waiting.
                with second.begin():
                    rest = sla.due_timer_ids(second, later, 100)
            assert len(taken) == 6
            assert len(rest) == 4
            assert not set(taken) & set(rest)
    finally:
        with engine.begin() as conn:
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(delete(table))
        engine.dispose()
