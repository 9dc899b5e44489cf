"""Audit: prove the live daily billing records from the log.

Three independent checks, at one well-defined log position (the live one):

1. **Replay equality** - rebuild from position 0 into the scratch table and
   diff it with the live table, row by row (see :mod:`projections.rebuild`).
2. **Conservation** - the sums over the live records equal the sums over the
   log, streamed separately: charges add, reversals subtract, and a rollup
   replaces its account's day with its own totals. For accounts with rollups
   the aggregates' own running totals (which rollups never change, so they
   still count every pruned charge) must equal the log's figures too: a
   rollup that misstates its day cannot hide behind replay equality.
3. **Rollups** - each rollup's groups add up to its ``charges``, tokens add
   up, and where events it covers are still in the log (normally compaction
   prunes them with the rollup's own commit) its digest and totals are
   recomputed from them in :mod:`ledger.rollup_digest`'s format
   (:mod:`projections.rollup_check`).

4. **Budgets and credits** - each budget's spent and each credit balance,
   as reservations read them, recomputed from the log in one snapshot
   (:mod:`projections.budget_audit`).

The log is read in short transactions while writers keep recording. Only
compaction removes events; if it ran during the audit the rows it pruned may
have been seen by one pass and not by another, so the audit reports
``log_changed`` (not clean: run it again) instead of false differences.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from uuid import UUID

from ledger.measures import MEASURES
from ledger.store import event_log
from ledger.store._moved import moved
from projections import budget_audit
from projections.budget_audit import BalanceProof, BudgetProof
from projections.log_tally import LogTally, figures_dict
from projections.projector import Projector
from projections.rebuild import Difference, rebuild
from projections.rollup_check import RollupIssue, verify

if TYPE_CHECKING:
    from ledger.application import Ledger

__all__ = ["AuditResult", "Conservation", "RollupIssue", "audit"]

#: Names that lived here before, importable from here for one more release.
__getattr__ = moved(__name__, {
    "PROJECTED_TOPICS": "projections.rollup_check:PROJECTED_TOPICS",
    "RAW_TOPICS": "ledger.rollup_digest:RAW_TOPICS",
})


@dataclass
class Conservation:
    """Token sums over the live records against the same sums computed from the log."""

    records: dict[str, int]
    log: dict[str, int]
    #: Running totals of the accounts that have rollups, from the aggregates
    #: at the same position: rollups leave those totals alone, so they still
    #: count every charge compaction pruned ...
    accounts: dict[str, int]
    #: ... and what the log says for the same accounts (rollups included).
    accounts_log: dict[str, int]
    accounts_checked: int
    charge_events: int = 0
    reversal_events: int = 0
    rollup_events: int = 0

    @property
    def balanced(self) -> bool:
        return self.records == self.log and self.accounts == self.accounts_log

    def to_dict(self) -> dict[str, Any]:
        return {
            "balanced": self.balanced,
            "records": self.records,
            "log": self.log,
            "accounts": self.accounts,
            "accounts_log": self.accounts_log,
            "accounts_checked": self.accounts_checked,
            "charge_events": self.charge_events,
            "reversal_events": self.reversal_events,
            "rollup_events": self.rollup_events,
        }


@dataclass
class AuditResult:
    """Everything an audit found; ``clean`` only when every check passed."""

    position: int
    log_position: int
    events: int
    differences: list[Difference]
    difference_count: int
    conservation: Conservation
    rollups_checked: int = 0
    rollups_verified: int = 0
    rollup_issues: list[RollupIssue] = field(default_factory=list)
    log_changed: bool = False
    #: Each budget's spent and each credit balance, proved from the log (see :mod:`projections.budget_audit`).
    budgets: list[BudgetProof] = field(default_factory=list)
    balances: list[BalanceProof] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return (
            self.difference_count == 0
            and self.conservation.balanced
            and not self.rollup_issues
            and not self.log_changed
            and all(proof.ok for proof in self.budgets)
            and all(proof.ok for proof in self.balances)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "position": self.position,
            "log_position": self.log_position,
            "events": self.events,
            "difference_count": self.difference_count,
            "differences": [d.to_dict() for d in self.differences],
            "conservation": self.conservation.to_dict(),
            "rollups_checked": self.rollups_checked,
            "rollups_verified": self.rollups_verified,
            "rollup_issues": [issue.to_dict() for issue in self.rollup_issues],
            "log_changed": self.log_changed,
            "budgets": [proof.to_dict() for proof in self.budgets],
            "balances": [proof.to_dict() for proof in self.balances],
        }


def audit(
    ledger: Ledger,
    *,
    catch_up: bool = False,
    batch_size: int | None = None,
    billing_tz: str | None = None,
    max_differences: int = 1000,
) -> AuditResult:
    """Rebuild into scratch, diff with live, check conservation and rollups.

    The comparison is made at the live projector's position (``catch_up=True``
    runs the projector to the end of the log first); ``log_position`` says how
    far the log itself had reached. The log is read in short transactions.
    """
    projector = Projector(ledger, batch_size=batch_size, billing_tz=billing_tz)
    if catch_up:
        projector.run()
    store = ledger.store
    decode = event_log.state_decoder(ledger.mapper)
    ledger.sequence()
    head = event_log.max_position(store)
    rows_before = event_log.count_up_to(store, head)
    rebuilt = rebuild(
        ledger, batch_size=batch_size, billing_tz=billing_tz, max_differences=max_differences
    )
    tally = LogTally(projector.zone)
    for row in event_log.events_up_to(store, rebuilt.position, projector.batch_size):
        tally.add(row, decode)
    issues = [issue for rollup in tally.to_verify for issue in verify(store, decode, tally.date_of, rollup)]
    issues += tally.issues
    rolled = {origin: tally.versions[origin] for origin in tally.rolled}
    accounts, unloadable = _account_totals(ledger, rolled)
    issues += unloadable
    conservation = Conservation(
        records=rebuilt.live_totals,
        log=tally.totals(),
        accounts=accounts,
        accounts_log=tally.totals(set(tally.rolled.values())),
        accounts_checked=len(rolled),
        charge_events=tally.charge_events,
        reversal_events=tally.reversal_events,
        rollup_events=tally.rollup_events,
    )
    ledger.sequence()
    budgets, balances = budget_audit.prove(ledger)
    return AuditResult(
        position=rebuilt.position,
        log_position=event_log.max_position(store),
        events=rebuilt.events,
        differences=rebuilt.differences,
        difference_count=rebuilt.difference_count,
        conservation=conservation,
        rollups_checked=tally.rollup_events,
        rollups_verified=sum(1 for r in tally.to_verify if r.verified),
        rollup_issues=issues,
        log_changed=event_log.count_up_to(store, head) != rows_before,
        budgets=budgets,
        balances=balances,
    )


def _account_totals(ledger: Ledger, versions: dict[UUID, int]) -> tuple[dict[str, int], list[RollupIssue]]:
    """Sum of the given accounts' running totals, each at its version as of the audited position.

    Only accounts with rollups are loaded: elsewhere the log still holds every
    charge, and compaction's snapshots make rolled-up accounts cheap to load.
    """
    sums = [0] * len(MEASURES)
    issues = []
    for originator_id, version in versions.items():
        try:
            account = ledger.repository.get(originator_id, version=version)
        except Exception as exc:  # noqa: BLE001 - a gap no snapshot covers: report it, keep auditing
            issues.append(RollupIssue(0, str(originator_id), "", f"account not loadable at version {version}: {exc!r}"))
            continue
        totals = account.totals
        for i, name in enumerate(MEASURES):
            sums[i] += getattr(totals, name)
    return figures_dict(sums), issues
