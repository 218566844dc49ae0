"""Shared fixtures: databases (SQLite always, PostgreSQL when GATEWAY_TEST_DATABASE_URL is set)
and a session per test inside a transaction that is rolled back afterwards.

The whole suite runs on two processes (pytest-xdist, `-n 2` in the README command). Each worker
gets what the tests reset or purge to itself: its own PostgreSQL database beside the configured
one (`test` -> `test_gw0`), created here and put back in GATEWAY_TEST_DATABASE_URL before any
test module reads it; its own temporary directories and free ports. The shared Redis and
RabbitMQ servers are purged by the broker tests, which take turns on them through a lock file
(tests/support/brokers.py)."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.orm import Session

from gateway.db import make_engine, upgrade
from tickets import services
from tickets.models import App, Base

pytest_plugins = [
    "tests.support.browser",
    "tests.support.dovecot",
    "tests.support.http",
    "tests.support.api_world",
    "tests.support.smtp_sink",
]

NOW = dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.UTC)


def worker_database_url(url: str | None, worker: str | None) -> str | None:
    """The PostgreSQL database of this xdist worker: the configured name plus the worker id."""
    if not url or not worker:
        return url
    configured = make_url(url)
    return configured.set(database=f"{configured.database}_{worker}").render_as_string(
        hide_password=False
    )


def create_database(configured: str, wanted: str) -> None:
    """Create the database of `wanted` unless it exists, connected to the configured one."""
    name = make_url(wanted).database
    if name == make_url(configured).database:
        return
    admin = create_engine(configured, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            if not conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}):
                quoted = conn.dialect.identifier_preparer.quote(str(name))
                conn.execute(text(f"CREATE DATABASE {quoted}"))
    finally:
        admin.dispose()


CONFIGURED_PG_URL = os.environ.get("GATEWAY_TEST_DATABASE_URL")
PG_URL = worker_database_url(CONFIGURED_PG_URL, os.environ.get("PYTEST_XDIST_WORKER"))
if CONFIGURED_PG_URL and PG_URL:
    # Test modules read the variable when they are imported, after this conftest.
    create_database(CONFIGURED_PG_URL, PG_URL)
    os.environ["GATEWAY_TEST_DATABASE_URL"] = PG_URL
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
