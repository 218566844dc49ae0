"""Rows a batch writes at its end, one statement per kind: the writes nothing in the batch reads
back from the database.

Processing a batch of inbound mail writes, per mail, a few rows that nothing later in the same
batch reads from the database: the events agents are told of, the thread refs the batch's index
already holds, the inbound row's new state. Each is a round trip to the database; held until the
batch ends, they go as one executemany per statement instead. Rows run in the order they were
added, statements in the order they were first added (so an update of rows that an earlier
insert writes runs after it). The statements are built once (module constants): they group by
identity.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Executable
from sqlalchemy.orm import Session


class DeferredWrites:
    """Statements and their rows, held until `flush`."""

    def __init__(self) -> None:
        self._pending: dict[Executable, list[dict[str, Any]]] = {}

    def add(self, statement: Executable, rows: Sequence[dict[str, Any]]) -> None:
        self._pending.setdefault(statement, []).extend(rows)

    def flush(self, session: Session) -> None:
        pending, self._pending = self._pending, {}
        for statement, rows in pending.items():
            session.execute(statement, rows)

    def discard(self) -> None:
        """Forget what was held (its mail failed, and its savepoint was rolled back)."""
        self._pending.clear()

    def __bool__(self) -> bool:
        return bool(self._pending)
