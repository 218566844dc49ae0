"""The attack suite runs every HTTP attack on each database: `http_api` here is the embedded
default on SQLite and, when GATEWAY_TEST_DATABASE_URL is set, the same runtime on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.runtime import Runtime
from tests.conftest import DATABASES, PG_URL, reset_postgres
from tests.support.http import RunningHttp, loopback_config, running_http


def fresh_database(kind: str, directory: Path) -> str:
    """The URL of an empty database of `kind` (a file in `directory` for SQLite), migrated to
    the newest schema."""
    if kind == "postgresql":
        assert PG_URL
        reset_postgres(PG_URL).dispose()
        return PG_URL
    return f"sqlite:///{directory / 'gw.db'}"


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each kind, migrated to the newest schema."""
    return fresh_database(request.param, tmp_path)


@pytest.fixture
def http_api(tmp_path: Path, database_url: str) -> Iterator[RunningHttp]:
    config = loopback_config(tmp_path).model_copy(update={"database_url": database_url})
    runtime = Runtime.create(config)
    try:
        with running_http(runtime) as running:
            yield running
    finally:
        runtime.close()
