"""The audit log: when each audit ran and what it found, for the dashboard and for operators.

An audit proves the records from the event log (``projections.audit``); its
result is kept here (table ``audit_runs`` in the ledger's own database,
through :mod:`ledger.store.audit_runs`) whenever the entry points run one,
so "when was the last audit, and was it clean" has an answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ledger.store import audit_runs as stored

if TYPE_CHECKING:
    from ledger import Ledger
    from projections.audit import AuditResult


@dataclass(frozen=True)
class AuditRun:
    finished_at: datetime
    clean: bool
    position: int
    events: int
    differences: int


def record_audit(ledger: Ledger, result: AuditResult) -> None:
    """Keep an audit's verdict (a ``projections.audit`` result)."""
    stored.add_run(ledger.store, stored.AuditRunRow(
        finished_at=datetime.now(UTC), clean=bool(result.clean), position=int(result.position),
        events=int(result.events), differences=int(result.difference_count)))


def last_audit(ledger: Ledger) -> AuditRun | None:
    """The most recent audit kept, or None."""
    row = stored.last_run(ledger.store)
    return None if row is None else AuditRun(*row)
