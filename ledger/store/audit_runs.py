"""The ``audit_runs`` table: each audit's verdict, newest last.

The table is defined in :mod:`ledger.store.schema`; times come back
UTC-aware (SQLite returns naive ones).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, NamedTuple

import sqlalchemy as sa

from ledger.store.schema import audit_runs, stored_utc

if TYPE_CHECKING:
    from ledger.store.base import Store


class AuditRunRow(NamedTuple):
    """One kept verdict."""

    finished_at: datetime
    clean: bool
    position: int
    events: int
    differences: int


def add_run(store: Store, run: AuditRunRow) -> None:
    """Keep a verdict."""
    with store.engine.begin() as connection:
        connection.execute(audit_runs.insert().values(**run._asdict()))


def last_run(store: Store) -> AuditRunRow | None:
    """The verdict kept last, or None."""
    query = sa.select(audit_runs).order_by(audit_runs.c.id.desc()).limit(1)
    with store.engine.connect() as connection:
        row = connection.execute(query).first()
        connection.rollback()
    if row is None:
        return None
    finished = stored_utc(row.finished_at)
    return AuditRunRow(finished, bool(row.clean), int(row.position), int(row.events),
                       int(row.differences))
