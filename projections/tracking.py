"""Where a projection writes, and its tracking row: the position it reached, locked and moved.

A projector's writes and its position commit in one transaction
(invariant 4): the tracking row is locked first (``SELECT ... FOR UPDATE``
on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` serialises writers), so a second
projector waits, then reads the new position; the position update is a
compare-and-set besides. The row also records the time zone whose billing
dates the table holds, so runs in two zones never mix in one table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ledger.store import read_model
from ledger.store.schema import LIVE_NAME
from projections.errors import (
    PositionMoved,
    ProjectionError,
    RebuildSuperseded,
    ZoneMismatch,
)

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy.orm import Session


@dataclass(frozen=True)
class Target:
    """Where a projection writes: its records table and its tracking row (both by name).

    ``owner`` marks a scratch rebuild: every batch checks it still owns the row.
    """

    table: str = LIVE_NAME
    name: str = LIVE_NAME
    owner: str | None = None


LIVE = Target()


def lock_position(session: Session, target: Target, zone: str | None = None) -> int:
    """The target's position, its row locked until commit (PostgreSQL).

    With ``zone``, the batch about to be applied bills in that zone: it must
    be the zone the table already holds (one never recorded, or recorded
    before anything was applied, is set to it).
    """
    row = read_model.lock_tracking(session, target.name)
    if row is None:
        raise ProjectionError(f"no tracking row for {target.name!r}")
    if target.owner is not None and row.owner != target.owner:
        raise RebuildSuperseded(f"{target.name} now belongs to rebuild {row.owner}")
    if zone is not None and row.time_zone != zone:
        if row.time_zone is not None and row.position:
            raise ZoneMismatch(target.name, row.time_zone, zone)
        read_model.record_zone(session, target.name, zone)  # nothing applied yet: any zone may start
    return row.position


def move_position(session: Session, target: Target, old: int, new: int, now: datetime) -> None:
    """Compare-and-set the position; anything else means another writer won."""
    if not read_model.move_tracking(session, target.name, old, new, now, target.owner):
        raise PositionMoved(f"{target.name} is no longer at {old}")
