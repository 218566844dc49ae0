"""The one query shape every sweep step uses: ids of rows whose due time has come.

It walks the index on the due column (the cost follows the due rows, not the table), oldest
first, and on PostgreSQL skips rows another sweeper has locked, so two schedulers during a
leader handover split the work instead of doubling it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import InstrumentedAttribute, Session


def due_ids(
    session: Session,
    id_column: InstrumentedAttribute[int],
    due_column: InstrumentedAttribute[Any],
    before: dt.datetime,
    limit: int,
    *where: ColumnElement[bool],
) -> list[int]:
    return list(
        session.scalars(
            select(id_column)
            .where(due_column <= before, *where)
            .order_by(due_column)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
    )
