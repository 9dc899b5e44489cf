"""The read side: daily billing records, their projector, rebuild and audit.

``Projector(ledger).run()`` keeps ``daily_billing_records`` up to date from the
ledger's log, exactly once; ``rebuild`` replays the log from position 0 into
scratch tables (then swaps or diffs); ``audit`` proves the live records from
the log; :mod:`projections.reports` holds the queries billing reads.
"""

from projections.audit import AuditResult, Conservation, RollupIssue, audit
from projections.projector import ProjectionError, Projector
from projections.rebuild import Difference, RebuildResult, rebuild

__all__ = [
    "AuditResult",
    "Conservation",
    "Difference",
    "ProjectionError",
    "Projector",
    "RebuildResult",
    "RollupIssue",
    "audit",
    "rebuild",
]
