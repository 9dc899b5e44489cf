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
from datetime import date, datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ledger.domain import DAY_ROLLED_UP_TOPIC
from projections.projector import LIVE, Projector, Target, lock_position, move_position, record_zone
from projections.tables import (
    KEY_COLUMNS,
    LIVE_NAME,
    SCRATCH_NAME,
    UNSPECIFIED,
    VALUE_COLUMNS,
    daily_billing_records,
    daily_billing_records_rebuild,
    projection_tracking,
)


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
    ledger: Any,
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
    with ledger.recorder.transaction(commit=True) as session:
        live_position = lock_position(session, LIVE)
        events += catch_up(session, scratch, stop=None if swap else live_position)
        position = lock_position(session, scratch.target)
        if swap:
            swap_in(session, position=position, live_position=live_position, time_zone=scratch.zone.key)
            differences, count = [], 0
        else:
            position = live_position
            differences, count = diff_tables(session, max_differences)
        rows = _count(session, daily_billing_records_rebuild)
        totals = table_totals(session, daily_billing_records)
    if swap:
        clear_scratch(ledger, scratch.target)
    return RebuildResult(position, events, rows, swap, totals, differences, count)


def pass_rollups(ledger: Any, live: Projector) -> None:
    """Bring the live projector past any rollup it has not applied yet.

    Compaction prunes raw events the live table already counts and appends
    their rollup after the projector's position. Until the projector applies
    it, no replay up to the live position can restore those days, so the
    comparison is only meaningful past the last rollup. Projecting is
    exactly-once, so this is just the projector's next run, stopped early.
    """
    events = ledger.recorder.events_record_cls.__table__
    position = live.position()
    with ledger.recorder.transaction(commit=False) as session:
        last = session.execute(
            sa.select(sa.func.max(events.c.id)).where(
                events.c.id > position, events.c.topic == DAY_ROLLED_UP_TOPIC
            )
        ).scalar()
    if last is not None:
        live.run(stop=int(last))


def start_scratch(
    ledger: Any, *, batch_size: int | None = None, billing_tz: str | None = None
) -> Projector:
    """Empty the scratch table and claim it; a projector that fills it from 0."""
    owner = uuid.uuid4().hex
    target = Target(daily_billing_records_rebuild, SCRATCH_NAME, owner)
    scratch = Projector(ledger, batch_size=batch_size, billing_tz=billing_tz, target=target)
    scratch.prepare()
    with ledger.recorder.transaction(commit=True) as session:
        if scratch.dialect == "postgresql":  # no dead rows left for the rebuild's upserts to wade through
            session.execute(sa.text(f"TRUNCATE TABLE {daily_billing_records_rebuild.name}"))
        else:
            session.execute(daily_billing_records_rebuild.delete())
        session.execute(
            projection_tracking.update()
            .where(projection_tracking.c.name == SCRATCH_NAME)
            .values(position=0, owner=owner, updated_at=datetime.now(timezone.utc))
        )
    return scratch


def clear_scratch(ledger: Any, target: Target) -> None:
    """Free the scratch rows once swapped in (only if still ours)."""
    with ledger.recorder.transaction(commit=True) as session:
        lock_position(session, target)  # raises if another rebuild took it over
        session.execute(target.table.delete())


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
    live, scratch = daily_billing_records, daily_billing_records_rebuild
    names = [column.name for column in live.columns]
    session.execute(live.delete())
    session.execute(live.insert().from_select(names, sa.select(*(scratch.c[n] for n in names))))
    move_position(session, LIVE, live_position, position, datetime.now(timezone.utc))
    record_zone(session, LIVE_NAME, time_zone)


def diff_tables(session: Session, limit: int) -> tuple[list[Difference], int]:
    """Keys whose figures differ between live and scratch: (first ``limit`` of them, how many)."""
    live_only = _except(daily_billing_records, daily_billing_records_rebuild)
    rebuilt_only = _except(daily_billing_records_rebuild, daily_billing_records)
    found: dict[tuple[Any, ...], dict[str, Any]] = {}
    truncated = False
    for side, query in (("live", live_only), ("rebuilt", rebuilt_only)):
        rows = session.execute(query.limit(limit)).all()
        truncated = truncated or len(rows) == limit
        for row in rows:
            key = tuple(row[: len(KEY_COLUMNS)])
            entry = found.setdefault(key, {"live": None, "rebuilt": None})
            entry[side] = {name: int(row._mapping[name]) for name in VALUE_COLUMNS}
    keys = sorted(found)[:limit]
    differences = [
        Difference(_public_key(key), found[key]["live"], found[key]["rebuilt"]) for key in keys
    ]
    count = _count_keys(session, live_only, rebuilt_only) if truncated else len(found)
    return differences, count


def table_totals(session: Session, table: sa.Table) -> dict[str, int]:
    """Sums of every figure over a table."""
    row = session.execute(
        sa.select(*(sa.func.coalesce(sa.func.sum(table.c[n]), 0) for n in VALUE_COLUMNS))
    ).one()
    return {name: int(value) for name, value in zip(VALUE_COLUMNS, row)}


def _nonzero(table: sa.Table) -> sa.ColumnElement[bool]:
    return sa.or_(*(table.c[name] != 0 for name in VALUE_COLUMNS))


def _figures(table: sa.Table) -> sa.Select[Any]:
    columns = [table.c[name] for name in KEY_COLUMNS + VALUE_COLUMNS]
    return sa.select(*columns).where(_nonzero(table))


def _except(left: sa.Table, right: sa.Table) -> Any:
    return sa.except_(_figures(left), _figures(right))


def _count_keys(session: Session, *queries: Any) -> int:
    """Distinct keys over the rows the queries return."""
    subqueries = [query.subquery() for query in queries]
    keys = sa.union(*(sa.select(*(sub.c[name] for name in KEY_COLUMNS)) for sub in subqueries))
    return int(session.execute(sa.select(sa.func.count()).select_from(keys.subquery())).scalar() or 0)


def _count(session: Session, table: sa.Table) -> int:
    return int(session.execute(sa.select(sa.func.count()).select_from(table)).scalar() or 0)


def _public_key(key: tuple[Any, ...]) -> dict[str, Any]:
    """A stored key as reports show it: unspecified provider/model as None."""
    public = dict(zip(KEY_COLUMNS, key))
    for name in ("provider", "model"):
        if public[name] == UNSPECIFIED:
            public[name] = None
    return public
