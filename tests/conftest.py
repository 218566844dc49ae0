"""Shared fixtures: databases (SQLite always, PostgreSQL when GATEWAY_TEST_DATABASE_URL is set)
and a session per test inside a transaction that is rolled back afterwards."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from gateway.db import make_engine, upgrade
from tickets import services
from tickets.models import App, Base

pytest_plugins = [
    "tests.support.dovecot",
    "tests.support.http",
    "tests.support.api_world",
    "tests.support.smtp_sink",
]

NOW = dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.UTC)

PG_URL = os.environ.get("GATEWAY_TEST_DATABASE_URL")
DATABASES = ["sqlite"] + (["postgresql"] if PG_URL else [])


def reset_postgres(url: str) -> Engine:
    engine = make_engine(url)
    with engine.begin() as conn:
        Base.metadata.drop_all(conn)
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    upgrade(engine)
    return engine


@pytest.fixture(scope="session", params=DATABASES)
def engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    if request.param == "postgresql":
        assert PG_URL
        eng = reset_postgres(PG_URL)
    else:
        eng = make_engine(f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}")
        upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """A session whose every change is rolled back at the end of the test."""
    with engine.connect() as connection:
        transaction = connection.begin()
        db = Session(
            bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
        )
        try:
            yield db
        finally:
            db.close()
            transaction.rollback()


@pytest.fixture
def app(session: Session) -> App:
    return services.ensure_app(session, "acme", "Acme", NOW)


@pytest.fixture
def now() -> dt.datetime:
    return NOW
