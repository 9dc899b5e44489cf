"""Rebuild: project the whole log from position 0 into a scratch table, then swap or diff.

The scratch table fills in many short batch transactions (the projector's own
code, pointed at ``daily_billing_records_rebuild`` and its own tracking row),
so recording is never held up for long and memory stays bounded by one batch.
Only the last step holds the live tracking row (the live projector waits):
the scratch table catches up with the log's few newest events, then either
replaces the live rows and position in that one transaction (``swap=True``)
or is compared with the live table at exactly the live position.

Rows whose figures are all zero (a charge and its reversal) are equal to no
row at all: the comparison leaves them out on both sides.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from ledger.domain import DAY_ROLLED_UP_TOPIC
from ledger.store import event_log, read_model
from ledger.store._moved import moved
from ledger.store.schema import LIVE_NAME, SCRATCH_NAME
from projections.projector import Projector
from projections.tracking import LIVE, Target, lock_position, move_position

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from ledger.application import Ledger

#: Names that lived here before, importable from here for one more release.
__getattr__ = moved(__name__, {
    "table_totals": "ledger.store.read_model:table_totals",
    "diff_tables": "projections.rebuild:diff",
})


@dataclass(frozen=True)
class Difference:
    """One key where live and rebuilt disagree; None means no row (or all zeros)."""

    key: dict[str, Any]
    live: dict[str, int] | None
    rebuilt: dict[str, int] | None

    def to_dict(self) -> dict[str, Any]:
        key = dict(self.key)
        if isinstance(key.get("billing_date"), date):
            key["billing_date"] = key["billing_date"].isoformat()
        return {"key": key, "live": self.live, "rebuilt": self.rebuilt}


@dataclass
class RebuildResult:
    """What a rebuild did: the position it reached and, unless swapped, how live differs."""

    position: int
    events: int
    rows: int
    swapped: bool
    live_totals: dict[str, int]
    differences: list[Difference] = field(default_factory=list)
    difference_count: int = 0

    @property
    def clean(self) -> bool:
        return self.difference_count == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "events": self.events,
            "rows": self.rows,
            "swapped": self.swapped,
            "live_totals": self.live_totals,
            "difference_count": self.difference_count,
            "differences": [d.to_dict() for d in self.differences],
        }


def rebuild(
    ledger: Ledger,
    *,
    swap: bool = False,
    batch_size: int | None = None,
    billing_tz: str | None = None,
    max_differences: int = 1000,
) -> RebuildResult:
    """Project the log from 0 into scratch; swap it in, or diff it with live.

    Without ``swap`` the scratch table is built up to the live position (read
    at the start) and compared at the live position of the final step, so the
    answer is well defined while writers keep recording.
    """
    live = Projector(ledger, batch_size=batch_size, billing_tz=billing_tz)
    live.prepare()
    if not swap:
        live.claim_zone()  # a diff against a table of another zone's dates would be all noise
        pass_rollups(ledger, live)
    scratch = start_scratch(ledger, batch_size=batch_size, billing_tz=billing_tz)
    events = scratch.run(stop=None if swap else live.position())
    with ledger.store.transaction(commit=True) as session:
        live_position = lock_position(session, LIVE)
        events += catch_up(session, scratch, stop=None if swap else live_position)
        position = lock_position(session, scratch.target)
        if swap:
            swap_in(session, position=position, live_position=live_position, time_zone=scratch.zone.key)
            differences, count = [], 0
        else:
            position = live_position
            differences, count = diff(session, max_differences)
        rows = read_model.count_rows(session, SCRATCH_NAME)
        totals = read_model.table_totals(session, LIVE_NAME)
    if swap:
        clear_scratch(ledger, scratch.target)
    return RebuildResult(position, events, rows, swap, totals, differences, count)


def pass_rollups(ledger: Ledger, live: Projector) -> None:
    """Bring the live projector past any rollup it has not applied yet.

    Compaction prunes raw events the live table already counts and appends
    their rollup after the projector's position. Until the projector applies
    it, no replay up to the live position can restore those days, so the
    comparison is only meaningful past the last rollup. Projecting is
    exactly-once, so this is just the projector's next run, stopped early.
    """
    last = event_log.last_of_topic_after(ledger.store, live.position(), DAY_ROLLED_UP_TOPIC)
    if last is not None:
        live.run(stop=last)


def start_scratch(
    ledger: Ledger, *, batch_size: int | None = None, billing_tz: str | None = None
) -> Projector:
    """Empty the scratch table and claim it; a projector that fills it from 0."""
    owner = uuid.uuid4().hex
    target = Target(SCRATCH_NAME, SCRATCH_NAME, owner)
    scratch = Projector(ledger, batch_size=batch_size, billing_tz=billing_tz, target=target)
    scratch.prepare()
    with ledger.store.transaction(commit=True) as session:
        read_model.claim(session, scratch.dialect, SCRATCH_NAME, owner, datetime.now(UTC))
    return scratch


def clear_scratch(ledger: Ledger, target: Target) -> None:
    """Free the scratch rows once swapped in (only if still ours)."""
    with ledger.store.transaction(commit=True) as session:
        lock_position(session, target)  # raises if another rebuild took it over
        read_model.clear(session, target.table)


def catch_up(session: Session, projector: Projector, stop: int | None) -> int:
    """Apply batches inside the caller's transaction until the log (or ``stop``) is reached."""
    consumed = 0
    while True:
        count, _ = projector.apply_batch(session, projector.batch_size, stop)
        consumed += count
        if count < projector.batch_size:
            return consumed


def swap_in(session: Session, *, position: int, live_position: int, time_zone: str) -> None:
    """Replace the live rows, position and zone with the scratch ones (caller holds the live row)."""
    read_model.swap_in(session)
    move_position(session, LIVE, live_position, position, datetime.now(UTC))
    read_model.record_zone(session, LIVE_NAME, time_zone)


def diff(session: Session, limit: int) -> tuple[list[Difference], int]:
    """Keys whose figures differ between live and scratch: (first ``limit`` of them, how many)."""
    found, count = read_model.diff_tables(session, limit)
    return [Difference(key, live, rebuilt) for key, live, rebuilt in found], count
