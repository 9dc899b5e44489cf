"""How much work each scenario does: the full run, the quick smoke test, overrides."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any


@dataclass(frozen=True)
class Sizes:
    """Counts per scenario. ``single`` also sizes the CRUD baseline and end to end."""

    #: record_charge calls (and raw one-row commits, CRUD inserts, end to end).
    single: int = 2_000
    #: charges for batch recording and the raw batched inserts.
    batch: int = 50_000
    #: charges per record_charges call / raw rows per commit.
    batch_size: int = 1_000
    #: charges each hot-account writer records (4 writers, 1 account).
    hot_per_writer: int = 300
    #: charges each concurrent writer records (8 writers, 100 accounts).
    concurrent_per_writer: int = 300
    #: rows or charges each of ``writers`` processes commits, one per commit,
    #: in the writer-scaling scenario (PostgreSQL).
    scaling_per_writer: int = 1_500
    #: charges in the log for projection and rebuild.
    charges: int = 1_000_000
    #: charges over one closed month for compaction.
    month_charges: int = 100_000
    #: accounts with a year of daily records for the report query.
    report_accounts: int = 100
    #: report queries timed (one account's year each).
    report_queries: int = 100
    #: accounts for the multi-account scenarios.
    accounts: int = 100
    #: writer processes (or threads) for the concurrent load.
    writers: int = 8
    #: writer processes on the hot account.
    hot_writers: int = 4
    #: mirrored turns (ABC…CBA) of the multi-process kinds; 1 is one pass, as ``--quick`` does.
    turns: int = 2
    #: the longest a ``wrk`` turn runs, in seconds; below 1, ``wrk`` is interrupted after it.
    wrk_seconds: float = 2.0
    #: PostgreSQL: drop and recreate the schema before each scenario; False: drop it
    #: once, then empty its tables (small sizes, where making the schema outweighs the work).
    recreate_schema: bool = True
    #: start ``ledger serve``, the task path's worker and the rebuild as children of the bench's
    #: fork server (the service imported once) instead of new interpreters (small sizes,
    #: where an interpreter's start-up outweighs the work).
    fork_starts: bool = False

    @classmethod
    def full(cls) -> "Sizes":
        return cls()

    @classmethod
    def quick(cls) -> "Sizes":
        """Everything small: a smoke test of completion and consistency."""
        return cls(
            single=100,
            batch=3_000,
            hot_per_writer=20,
            concurrent_per_writer=20,
            scaling_per_writer=30,
            charges=10_000,
            month_charges=3_000,
            report_accounts=5,
            report_queries=10,
            turns=1,
        )

    def with_overrides(self, **overrides: Any) -> "Sizes":
        """These sizes with the given (non-None) fields replaced."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unknown sizes: {', '.join(unknown)}")
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})
