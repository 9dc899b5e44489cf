"""The audit log: when each audit ran and what it found, for the dashboard and for operators.

An audit proves the records from the event log (``projections.audit``); its
result is kept here (table ``audit_runs`` in the ledger's own database,
created on first use) whenever the entry points run one, so "when was the
last audit, and was it clean" has an answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

from ledger.store.schema import audit_runs, ensure_schema



@dataclass(frozen=True)
class AuditRun:
    finished_at: datetime
    clean: bool
    position: int
    events: int
    differences: int


def _engine(ledger: Any) -> sa.engine.Engine:
    engine = ledger.recorder.datastore.engine
    assert isinstance(engine, sa.engine.Engine)
    ensure_schema(engine)
    return engine


def record_audit(ledger: Any, result: Any) -> None:
    """Keep an audit's verdict (a ``projections.audit`` result)."""
    with _engine(ledger).begin() as connection:
        connection.execute(audit_runs.insert().values(
            finished_at=datetime.now(timezone.utc), clean=bool(result.clean), position=int(result.position),
            events=int(result.events), differences=int(result.difference_count)))


def last_audit(ledger: Any) -> AuditRun | None:
    """The most recent audit kept, or None."""
    query = sa.select(audit_runs).order_by(audit_runs.c.id.desc()).limit(1)
    with _engine(ledger).connect() as connection:
        row = connection.execute(query).first()
        connection.rollback()
    if row is None:
        return None
    finished = row.finished_at if row.finished_at.tzinfo else row.finished_at.replace(tzinfo=timezone.utc)
    return AuditRun(finished, bool(row.clean), int(row.position), int(row.events), int(row.differences))
