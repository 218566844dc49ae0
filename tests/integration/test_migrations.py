"""The migrations: they build the schema the models describe, and carry old data forward."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.orm import Session

from gateway.db import alembic_config, make_engine, upgrade
from tickets.inbound import imap_bookmarks
from tickets.models import Base


def test_the_migrations_build_what_the_models_describe(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    upgrade(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_imap_bookmarks_are_taken_from_mail_polled_before_they_existed(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    command.upgrade(alembic_config(engine), "0004")
    now = dt.datetime(2026, 11, 1, tzinfo=dt.UTC).isoformat()
    keys = [
        "imap:support:INBOX:7:3",
        "imap:support:INBOX:7:12",
        "imap:support:INBOX:9:2",
        "imap:support:Team:Inbox:5:40",  # a folder name with a colon
        "import:abc",
        None,
    ]
    with engine.begin() as conn:
        for key in keys:
            conn.execute(
                text(
                    "INSERT INTO inbound_mail (source, source_key, envelope_to, raw, size,"
                    " sha256, state, attempts, received_at)"
                    " VALUES (:source, :key, '[]', x'00', 1, 'h', 'processed', 1, :now)"
                ),
                {"source": (key or "smtp").split(":")[0], "key": key, "now": now},
            )
    upgrade(engine)
    with Session(engine) as session:
        assert imap_bookmarks(session, "support", "INBOX") == {7: 12, 9: 2}
        assert imap_bookmarks(session, "support", "Team:Inbox") == {5: 40}
