"""The projector: log after its position -> aggregated upserts + position, one transaction.

Each batch reads the notifications after the tracked position, folds them in
memory into per-key deltas (:class:`projections.day_fold.DayFold`), writes one
upsert per key, and moves the position, all in the transaction of
``ledger.store.transaction(commit=True)``: a crash anywhere rolls the whole
batch back and a rerun applies it once (invariant 4). The tracking row is
locked first (see :mod:`projections.tracking`). A rollup sets its account's
day: the day's rows are deleted before the batch's sums are upserted.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from ledger.billing_keys import billing_date_function
from ledger.store import event_log, read_model
from ledger.store._moved import moved
from ledger.store.watchdog import deadline_of
from projections.day_fold import fold_rows
from projections.errors import PositionMoved, ProjectionError
from projections.tracking import LIVE, Target, lock_position, move_position

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from ledger.application import Ledger
    from projections.day_fold import DayFold

__all__ = ["LIVE", "ProjectionError", "Projector", "Target", "gc_paused"]

#: Names that lived here before, importable from here for one more release.
__getattr__ = moved(__name__, {
    "PositionMoved": "projections.errors:PositionMoved",
    "RebuildSuperseded": "projections.errors:RebuildSuperseded",
    "ZoneMismatch": "projections.errors:ZoneMismatch",
    "lock_position": "projections.tracking:lock_position",
    "move_position": "projections.tracking:move_position",
    "record_zone": "ledger.store.read_model:record_zone",
    "billing_date_function": "ledger.billing_keys:billing_date_function",
    "group_key": "ledger.billing_keys:group_key",
    "state_decoder": "ledger.store.event_log:state_decoder",
    "is_plain_json": "ledger.store.event_log:is_plain_json",
    "Decoder": "ledger.store.event_log:Decoder",
    "SIGNS": "projections.day_fold:SIGNS",
    "Figures": "projections.day_fold:RunningFigures",
    "GroupKey": "ledger.billing_keys:GroupKey",
    "DayKey": "ledger.billing_keys:DayKey",
    "ROW_COLUMNS": "ledger.store.read_model:ROW_COLUMNS",
    "STAGING_TABLE": "ledger.store.read_model:STAGING_TABLE",
    "sqlite_upsert_sql": "ledger.store.read_model:sqlite_upsert_sql",
    "postgres_upsert_sql": "ledger.store.read_model:postgres_upsert_sql",
})


#: The client-side bound on one batch's transaction (see :mod:`ledger.store.watchdog`): a frozen
#: primary cannot hold the projector; the batch rolls back whole and the next run (the worker's
#: retry) applies it, exactly once, from the position committed with the last one.
BATCH_SECONDS = 300.0

def write_fold(session: Session, dialect: str, table: str, fold: DayFold, now: datetime) -> None:
    """Clear the days rollups reset, then add the batch's deltas (to the records table named ``table``)."""
    read_model.write_days(session, dialect, table, fold.resets, fold.days, now)


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a batch loop runs.

    Folding allocates a decoded dict per event and keeps each batch's rows
    alive, so the collector would run every few hundred events and rescan
    them; the fold makes no reference cycles, so there is nothing for it to
    find. It runs again (if it was on) when the loop ends.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class Projector:
    """Keeps ``daily_billing_records`` up to date with the ledger's log, exactly once.

    ``before_commit`` (optional) is called with the new position after a
    batch's writes and position update, just before its commit: a place to
    observe, or to crash on purpose.
    """

    def __init__(
        self,
        ledger: Ledger,
        *,
        batch_size: int | None = None,
        billing_tz: str | None = None,
        before_commit: Callable[[int], None] | None = None,
        target: Target = LIVE,
    ) -> None:
        self.ledger = ledger
        self.store = ledger.store
        self.batch_size = batch_size or ledger.settings.projector_batch_size
        self.zone = ZoneInfo(billing_tz) if billing_tz else ledger.settings.zone
        self.before_commit = before_commit
        self.target = target
        self.dialect = self.store.dialect
        self._reader = event_log.BatchReader(self.store, ledger.mapper)
        self._decode = event_log.state_decoder(ledger.mapper)
        self._date_of = billing_date_function(self.zone)
        self._prepared = False
        self._read_ahead = False
        self._prefetch: event_log.ReadAhead | None = None

    def prepare(self) -> None:
        """Make sure the tracking row exists (position 0 the first time)."""
        if self._prepared:
            return
        read_model.ensure_tracking(self.store, self.target.name)
        self._prepared = True

    def claim_zone(self) -> None:
        """Fail now (:class:`ZoneMismatch`) if the target holds another zone's dates; else note ours."""
        self.prepare()
        with self.store.transaction(commit=True) as session:
            lock_position(session, self.target, self.zone.key)

    def position(self) -> int:
        """The last notification id applied (0 if none)."""
        self.prepare()
        return read_model.tracked_position(self.store, self.target.name)

    def run(self, max_events: int | None = None, *, stop: int | None = None) -> int:
        """Apply the log up to its end (or ``stop``), at most ``max_events``; return notifications consumed.

        On PostgreSQL, while a full batch of the live table is folded and
        written, the next one is read ahead on a second connection (see
        :class:`ledger.store.event_log.ReadAhead`). Rebuilds into scratch do
        not read ahead: they are well within their time and keep to one
        batch in memory.
        """
        self.prepare()
        with deadline_of(BATCH_SECONDS):
            self.ledger.sequence()  # every charge acknowledged so far is in the log before it is read
        consumed = 0
        self._read_ahead = self.dialect == "postgresql" and max_events is None and self.target.owner is None
        with gc_paused():
            try:
                while max_events is None or consumed < max_events:
                    limit = self.batch_size if max_events is None else min(self.batch_size, max_events - consumed)
                    try:
                        with deadline_of(BATCH_SECONDS), self.store.transaction(commit=True) as session:
                            count, _ = self.apply_batch(session, limit, stop)
                    except PositionMoved:
                        continue  # rolled back; read the winner's position and go on
                    consumed += count
                    if count < limit:
                        break
            finally:
                self._read_ahead = False
                self._drop_prefetch()
        return consumed

    def apply_batch(self, session: Session, limit: int, stop: int | None = None) -> tuple[int, int]:
        """One batch inside the caller's transaction: (notifications consumed, new position).

        ``stop`` is applied here, not in SQL (see :mod:`ledger.store.event_log`).
        """
        position = lock_position(session, self.target, self.zone.key)
        rows = self._take_prefetch(position, limit)
        if rows is None:
            rows = self._reader.read(session, position, limit)
        if self._read_ahead and len(rows) == limit and (stop is None or rows[-1][0] < stop):
            self._prefetch = self._reader.read_ahead(int(rows[-1][0]), limit)
        if stop is not None and rows and rows[-1][0] > stop:
            rows = [row for row in rows if row[0] <= stop]
        if not rows:
            return 0, position
        fold = fold_rows(((row[1], row[2]) for row in rows), self.zone.key, self._date_of, self._decode)
        now = datetime.now(UTC)
        write_fold(session, self.dialect, self.target.table, fold, now)
        new_position = int(rows[-1][0])
        move_position(session, self.target, position, new_position, now)
        if self.before_commit is not None:
            self.before_commit(new_position)
        return len(rows), new_position

    def _take_prefetch(self, position: int, limit: int) -> list[event_log.Notification] | None:
        """The rows read ahead, if they start where this batch does (else None: read now)."""
        prefetch, self._prefetch = self._prefetch, None
        if prefetch is None:
            return None
        rows = prefetch.result()
        if rows is None or prefetch.after != position or prefetch.limit != limit:
            return None
        return rows

    def _drop_prefetch(self) -> None:
        prefetch, self._prefetch = self._prefetch, None
        if prefetch is not None:
            prefetch.result()  # let its connection go back to the pool
