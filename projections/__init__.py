"""The read side: daily billing records, their projector, rebuild and audit.

``Projector(ledger).run()`` keeps ``daily_billing_records`` up to date from the
ledger's log, exactly once; ``rebuild`` replays the log from position 0 into
scratch tables (then swaps or diffs); ``audit`` proves the live records from
the log; :mod:`projections.reports` holds the queries billing reads. Their
SQL lives in :mod:`ledger.store.read_model` and :mod:`ledger.store.event_log`.
"""

from projections.audit import AuditResult, Conservation, audit
from projections.errors import ProjectionError, ZoneMismatch
from projections.projector import Projector
from projections.rebuild import Difference, RebuildResult, rebuild
from projections.rollup_check import RollupIssue

__all__ = [
    "AuditResult",
    "Conservation",
    "Difference",
    "ProjectionError",
    "Projector",
    "RebuildResult",
    "RollupIssue",
    "ZoneMismatch",
    "audit",
    "rebuild",
]
