"""Database wiring: engines, sessions and migrations.

SQLite runs in WAL mode with foreign keys on and a busy timeout, so the SMTP accept path and the
workers of the embedded default can write concurrently; PostgreSQL is selected by URL.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import sqlite3
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from gateway.config import ConfigError


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def make_engine(url: str, **kwargs: Any) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            _create_private(Path(parsed.database))
        engine = create_engine(
            url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # pysqlite's own transaction handling defers BEGIN; we issue it ourselves below so
            # that SQLAlchemy's transaction boundaries are the database's.
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            # FULL: every commit is on disk (the WAL fsynced) before it returns, so a 250 sent
            # after it survives a power loss, not only a crash of the gateway. Accepted mail is
            # committed in groups, so the fsync is paid per group, not per message.
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        lock_file = (
            Path(f"{parsed.database}.writer-lock")
            if parsed.database and parsed.database != ":memory:"
            else None
        )
        _serialize_sqlite_writers(engine, lock_file)
        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


def _create_private(database: Path) -> None:
    """The database file, created readable by the gateway's user only (its directory too).

    SQLite gives the -wal and -shm files it creates beside it the database file's mode, so
    creating the file 0600 before SQLite opens it keeps all three private whatever the umask.
    """
    try:
        database.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    except OSError as exc:  # a path the operator gave: their mistake, told in one line
        raise ConfigError(
            f"database: cannot create {exc.filename or database}: {exc.strerror}"
        ) from exc


# Execution option of an engine whose transactions only read (see Runtime.reading).
READ_ONLY = "gateway_read_only"

# As long as SQLite's busy_timeout: a writer waits this long for another before giving up.
SQLITE_LOCK_SECONDS = 30.0


def _serialize_sqlite_writers(engine: Engine, lock_file: Path | None) -> None:
    """Every transaction takes SQLite's write lock up front, queuing on locks of our own first.

    IMMEDIATE takes the write lock at BEGIN, so two writers never deadlock upgrading a read
    lock. Before that they queue: threads of one process on a `threading.Lock`, processes
    (`serve --role ingress` beside `gateway worker`s, a CLI command) on an flock of a file
    beside the database. SQLite's own busy handler polls with sleeps of up to 100 ms, which
    under load left the SMTP accept path and the workers sleeping while the database was free.
    The locks are released right after COMMIT or ROLLBACK, which are therefore issued here on
    the driver connection; the driver's own commit() that SQLAlchemy calls next finds no
    transaction and does nothing.
    """
    lock = threading.Lock()
    holder: list[Any] = []  # the driver connection inside a transaction, if any
    between_processes = _FileLock(lock_file) if lock_file is not None else None

    def _release(dbapi_conn: Any) -> None:
        if holder and holder[0] is dbapi_conn:
            holder.clear()
            if between_processes is not None:
                between_processes.release()
            lock.release()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        if conn.get_execution_options().get(READ_ONLY):
            # A deferred BEGIN: a snapshot of the WAL that neither takes nor waits for the
            # write lock. Only for transactions that never write (`Runtime.reading`).
            conn.exec_driver_sql("BEGIN")
            return
        deadline = time.monotonic() + SQLITE_LOCK_SECONDS
        if not lock.acquire(timeout=SQLITE_LOCK_SECONDS):
            raise sqlite3.OperationalError("database is locked (waited for another writer)")
        if between_processes is not None and not between_processes.acquire(deadline):
            lock.release()
            raise sqlite3.OperationalError("database is locked (waited for another process)")
        dbapi_conn = conn.connection.dbapi_connection
        holder.append(dbapi_conn)
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            _release(dbapi_conn)
            raise

    def _end(conn: Any, finish: str) -> None:
        dbapi_conn = conn.connection.dbapi_connection
        try:
            getattr(dbapi_conn, finish)()
        finally:
            _release(dbapi_conn)

    event.listen(engine, "commit", lambda conn: _end(conn, "commit"))
    event.listen(engine, "rollback", lambda conn: _end(conn, "rollback"))
    # Backstops: a connection that goes back to the pool, or is thrown away, mid-transaction
    # must not keep every other writer waiting.
    event.listen(engine.pool, "checkin", lambda dbapi_conn, _record: _release(dbapi_conn))
    event.listen(engine.pool, "invalidate", lambda dbapi_conn, _record, _exc: _release(dbapi_conn))


class _FileLock:
    """An exclusive flock on a file, taken with a deadline.

    Waiting polls with short sleeps (0.1 ms, doubling to at most 2 ms): the kernel cannot
    time out a blocking flock, and a writer must give up (451, retry later) rather than hang
    behind a stuck process. A process that dies loses its lock at once.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def acquire(self, deadline: float) -> bool:
        pause = 0.0001
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(pause)
                pause = min(pause * 2, 0.002)

    def release(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)


def reading_engine(engine: Engine) -> Engine:
    """The engine for transactions that only read (on SQLite: no write lock, see READ_ONLY)."""
    return engine.execution_options(**{READ_ONLY: True})


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


def alembic_config(engine: Engine) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(resources.files("gateway") / "migrations"))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine) -> None:
    """Bring the schema up to date (idempotent)."""
    command.upgrade(alembic_config(engine), "head")
