"""The projector: log after its position -> aggregated upserts + position, one transaction.

Each batch reads the notifications after the tracked position, folds them in
memory into per-key deltas (a batch of thousands of charges touches a few
hundred keys), writes one upsert per key, and moves the position, all in the
transaction of ``ledger.recorder.transaction(commit=True)``: a crash anywhere
rolls the whole batch back and a rerun applies it once (invariant 4). The
tracking row is locked first (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's
``BEGIN IMMEDIATE`` serialises writers), so a second projector waits, then
reads the new position, and the position update is conditional besides.

A rollup (``Account.DayRolledUp``) *sets* its account's day: it drops what the
batch had pending for that day (the rollup stands for it) and the day's rows
are deleted before the batch's sums are upserted.
"""

from __future__ import annotations

import gc
import io
import json
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from operator import add
from typing import Any, Callable, Iterable, Iterator
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ledger.domain import CHARGE_RECORDED_TOPIC, CHARGE_REVERSED_TOPIC, DAY_ROLLED_UP_TOPIC
from ledger.measures import charge_figures, group_figures
from projections.tables import (
    KEY_COLUMNS,
    LIVE_NAME,
    UNSPECIFIED,
    VALUE_COLUMNS,
    daily_billing_records,
    engine_of,
    ensure_tables,
    projection_tracking,
)

#: (account_id, billing_date)
DayKey = tuple[str, date]
#: (user_id, charge_type, provider, model), provider/model '' when unspecified.
GroupKey = tuple[str, str, str, str]
#: [charges, prompt_tokens, completion_tokens, total_tokens, cost_micros, unpriced_charges]
Figures = list[int]

Decoder = Callable[[bytes], dict[str, Any]]


class ProjectionError(Exception):
    """The log holds something this projection cannot apply as configured."""


def _loads() -> Decoder:
    """The fastest JSON parser at hand: the projector's hot path is decoding."""
    try:
        import orjson
    except ImportError:  # pragma: no cover - orjson is a dependency
        return json.loads
    return orjson.loads


loads = _loads()


def is_plain_json(mapper: Any) -> bool:
    """Stored state is the transcoder's UTF-8 JSON (no cipher, no compressor)."""
    return getattr(mapper, "cipher", None) is None and getattr(mapper, "compressor", None) is None


def state_decoder(mapper: Any) -> Decoder:
    """Event state bytes -> dict, undoing the mapper's cipher/compressor if any."""
    cipher = getattr(mapper, "cipher", None)
    compressor = getattr(mapper, "compressor", None)
    if cipher is None and compressor is None:
        return loads

    def decode(state: bytes) -> dict[str, Any]:
        if state.__class__ is memoryview:
            state = bytes(state)  # psycopg2 gives memoryview for bytea
        if cipher is not None:
            state = cipher.decrypt(state)
        if compressor is not None:
            state = compressor.decompress(state)
        return loads(state)

    return decode


def billing_date_function(zone: ZoneInfo) -> Callable[[str], date]:
    """ISO timestamp -> its calendar date in the billing zone (DST-correct via ZoneInfo).

    Events store UTC (``...+00:00``). Within one UTC hour the local date is
    the same unless midnight falls inside the hour (zones with odd offsets),
    so each hour is converted once and cached; such hours, and non-UTC
    strings, are converted one by one.
    """
    by_hour: dict[str, date | None] = {}
    one_hour = timedelta(hours=1, microseconds=-1)

    def hour_date(hour: str) -> date | None:
        start = datetime.fromisoformat(hour + ":00:00+00:00")
        first = start.astimezone(zone).date()
        return first if (start + one_hour).astimezone(zone).date() == first else None

    def date_of(iso: str) -> date:
        if iso.endswith("+00:00"):
            hour = iso[:13]
            try:
                day = by_hour[hour]
            except KeyError:
                day = by_hour[hour] = hour_date(hour)
            if day is not None:
                return day
        return datetime.fromisoformat(iso).astimezone(zone).date()

    return date_of


#: How a charge event moves its key's figures: recorded adds, reversed subtracts.
SIGNS = {CHARGE_RECORDED_TOPIC: 1, CHARGE_REVERSED_TOPIC: -1}


def group_key(e: dict[str, Any]) -> GroupKey:
    """The key within an account's day of a charge or rollup group."""
    return (e["user_id"], e["charge_type"], e["provider"] or UNSPECIFIED, e["model"] or UNSPECIFIED)


class DayFold:
    """Pending per-key deltas of one batch, and the days its rollups reset."""

    __slots__ = ("days", "resets", "zone_name", "_date_of")

    def __init__(self, zone_name: str, date_of: Callable[[str], date]) -> None:
        self.days: dict[DayKey, dict[GroupKey, Figures]] = {}
        self.resets: set[DayKey] = set()
        self.zone_name = zone_name
        self._date_of = date_of

    def add_rows(self, rows: Iterable[tuple[str, Any]], decode: Decoder) -> None:
        """Fold (topic, state) rows in log order; other topics are skipped before decoding.

        The hot loop of the projector: one dict lookup picks the sign by topic,
        the state is decoded once, and the figures are added in place.
        """
        days = self.days
        date_of = self._date_of
        sign_of = SIGNS.get
        values_of = charge_figures  # ledger.measures: the one mapping of state to figures
        for topic, state in rows:
            sign = sign_of(topic)
            if sign is None:
                if topic == DAY_ROLLED_UP_TOPIC:
                    self.roll_up(decode(state))
                continue
            e = decode(state)
            day = (e["account_id"], date_of(e["occurred_at"]["_data_"]))
            groups = days.get(day)
            if groups is None:
                groups = days[day] = {}
            # group_key(e), inlined: a call per event costs more than the key itself
            key = (e["user_id"], e["charge_type"], e["provider"] or UNSPECIFIED, e["model"] or UNSPECIFIED)
            values = values_of(e)
            figures = groups.get(key)
            if sign < 0:
                values = [-value for value in values]
            if figures is None:
                groups[key] = list(values)
            else:
                figures[:] = map(add, figures, values)

    def roll_up(self, e: dict[str, Any]) -> None:
        """Set the account's day to the rollup's groups (dropping what was pending)."""
        if e.get("time_zone", self.zone_name) != self.zone_name:
            raise ProjectionError(
                f"rollup of {e['account_id']} {e['billing_date']} is in time zone "
                f"{e['time_zone']!r} but this projection bills in {self.zone_name!r}"
            )
        day = (e["account_id"], date.fromisoformat(e["billing_date"]))
        self.resets.add(day)
        groups: dict[GroupKey, Figures] = {}
        for g in e["groups"]:
            key = group_key(g)
            figures = groups.get(key)
            if figures is None:
                groups[key] = list(group_figures(g))
            else:
                figures[:] = map(add, figures, group_figures(g))
        self.days[day] = groups

    def rows(self, billing_date: Callable[[date], Any], updated_at: Any) -> list[tuple[Any, ...]]:
        """One upsert row per touched key, in ``ROW_COLUMNS`` order."""
        rows = []
        append = rows.append
        for (account_id, day), groups in self.days.items():
            when = billing_date(day)
            for key, figures in groups.items():
                append((account_id, when, *key, *figures, updated_at))
        return rows


class PositionMoved(ProjectionError):
    """Another projector committed this position first; the batch was rolled back."""


class RebuildSuperseded(ProjectionError):
    """Another rebuild took over the scratch table; this one stopped."""


class ZoneMismatch(ProjectionError):
    """A run would add billing dates of one zone to a table that holds another's."""

    def __init__(self, name: str, recorded: str, requested: str) -> None:
        super().__init__(
            f"{name} holds billing dates in time zone {recorded!r}, but this run bills in "
            f"{requested!r}: the two would mix in one table. Run in {recorded!r} "
            f"(--billing-tz or LEDGER_BILLING_TZ), or rebuild the table in the new zone: "
            f"ledger --billing-tz {requested} rebuild"
        )
        self.recorded = recorded
        self.requested = requested


@dataclass(frozen=True)
class Target:
    """Where a projection writes: its table and its tracking row.

    ``owner`` marks a scratch rebuild: every batch checks it still owns the row.
    """

    table: sa.Table = daily_billing_records
    name: str = LIVE_NAME
    owner: str | None = None


LIVE = Target()


def _insert(dialect: str, table: sa.Table) -> Any:
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


#: Columns of an upsert row, in order.
ROW_COLUMNS = KEY_COLUMNS + VALUE_COLUMNS + ("updated_at",)


def _on_conflict(table: sa.Table) -> str:
    added = ", ".join(f"{name} = {table.name}.{name} + excluded.{name}" for name in VALUE_COLUMNS)
    return f"ON CONFLICT ({', '.join(KEY_COLUMNS)}) DO UPDATE SET {added}, updated_at = excluded.updated_at"


def sqlite_upsert_sql(table: sa.Table) -> str:
    """INSERT ... VALUES (?, ...) ON CONFLICT (key) DO UPDATE SET value = value + excluded.value."""
    placeholders = ", ".join("?" for _ in ROW_COLUMNS)
    return f"INSERT INTO {table.name} ({', '.join(ROW_COLUMNS)}) VALUES ({placeholders}) {_on_conflict(table)}"


#: PostgreSQL: the batch's rows are copied here, then upserted in one statement.
STAGING_TABLE = "projection_batch"
_STAGING_DDL = (
    f"CREATE TEMPORARY TABLE IF NOT EXISTS {STAGING_TABLE} ("
    + ", ".join(f"{name} {'date' if name == 'billing_date' else 'text'}" for name in KEY_COLUMNS)
    + ", "
    + ", ".join(f"{name} bigint" for name in VALUE_COLUMNS)
    + ") ON COMMIT DELETE ROWS"
)
#: COPY's text format: these characters must be escaped in a value.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def postgres_upsert_sql(table: sa.Table) -> str:
    """The upsert from the staging table: one statement for the whole batch."""
    names = ", ".join(KEY_COLUMNS + VALUE_COLUMNS)
    return (
        f"INSERT INTO {table.name} ({', '.join(ROW_COLUMNS)}) "
        f"SELECT {names}, %s FROM {STAGING_TABLE} {_on_conflict(table)}"
    )


def _copy_field(value: str) -> str:
    """A text value escaped for COPY's text format."""
    return value.translate(_COPY_ESCAPES)


def _copy_text(fold: "DayFold") -> io.StringIO:
    """The fold's rows in COPY text format (tab-separated, escaped, one per line).

    Group keys repeat across a batch's days: each distinct one is escaped and
    joined once, as is each account-day prefix.
    """
    escaped: dict[GroupKey, str] = {}
    lines = []
    append = lines.append
    for (account_id, day), groups in fold.days.items():
        prefix = f"{_copy_field(account_id)}\t{day.isoformat()}\t"
        for key, figures in groups.items():
            text = escaped.get(key)
            if text is None:
                text = escaped[key] = "\t".join([_copy_field(part) for part in key]) + "\t"
            append(prefix + text + "\t".join(map(str, figures)) + "\n")
    return io.StringIO("".join(lines))


def upsert_rows(session: Session, dialect: str, table: sa.Table, fold: "DayFold", now: datetime) -> None:
    """Add the fold's deltas to the table, straight through the driver.

    The projector writes thousands of rows per batch: SQLAlchemy's per-row
    parameter processing would cost more than the database does. SQLite takes
    one ``executemany``; PostgreSQL takes a ``COPY`` into a temporary table
    and one ``INSERT ... SELECT ... ON CONFLICT`` (no per-row parameters to
    format or parse).
    """
    connection = session.connection()
    if dialect == "postgresql":
        cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(_STAGING_DDL)
            cursor.copy_expert(f"COPY {STAGING_TABLE} FROM STDIN", _copy_text(fold))
            cursor.execute(postgres_upsert_sql(table), (now,))
            cursor.execute(f"TRUNCATE {STAGING_TABLE}")
        finally:
            cursor.close()
    else:  # SQLite stores dates and times as text, exactly as SQLAlchemy reads them back
        stamp = now.strftime("%Y-%m-%d %H:%M:%S.%f")
        connection.exec_driver_sql(sqlite_upsert_sql(table), fold.rows(date.isoformat, stamp))


def ensure_tracking(session: Session, dialect: str, name: str) -> None:
    """The tracking row exists (position 0) without touching an existing one."""
    statement = _insert(dialect, projection_tracking).values(name=name, position=0)
    session.execute(statement.on_conflict_do_nothing(index_elements=["name"]))


def lock_position(session: Session, target: Target, zone: str | None = None) -> int:
    """The target's position, its row locked until commit (PostgreSQL).

    With ``zone``, the batch about to be applied bills in that zone: it must
    be the zone the table already holds (one never recorded, or recorded
    before anything was applied, is set to it).
    """
    row = session.execute(
        sa.select(projection_tracking.c.position, projection_tracking.c.owner, projection_tracking.c.time_zone)
        .where(projection_tracking.c.name == target.name)
        .with_for_update()
    ).first()
    if row is None:
        raise ProjectionError(f"no tracking row for {target.name!r}")
    if target.owner is not None and row.owner != target.owner:
        raise RebuildSuperseded(f"{target.name} now belongs to rebuild {row.owner}")
    if zone is not None and row.time_zone != zone:
        if row.time_zone is not None and row.position:
            raise ZoneMismatch(target.name, row.time_zone, zone)
        record_zone(session, target.name, zone)  # nothing applied yet: any zone may start
    return int(row.position)


def record_zone(session: Session, name: str, zone: str) -> None:
    """Note the zone whose billing dates the tracked table holds."""
    session.execute(
        projection_tracking.update().where(projection_tracking.c.name == name).values(time_zone=zone)
    )


def move_position(session: Session, target: Target, old: int, new: int, now: datetime) -> None:
    """Compare-and-set the position; anything else means another writer won."""
    condition = sa.and_(projection_tracking.c.name == target.name, projection_tracking.c.position == old)
    if target.owner is not None:
        condition = sa.and_(condition, projection_tracking.c.owner == target.owner)
    result = session.execute(
        projection_tracking.update().where(condition).values(position=new, updated_at=now)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise PositionMoved(f"{target.name} is no longer at {old}")


def write_fold(session: Session, dialect: str, table: sa.Table, fold: DayFold, now: datetime) -> None:
    """Clear the days rollups reset, then add the batch's deltas."""
    if fold.resets:
        session.execute(
            table.delete().where(
                table.c.account_id == sa.bindparam("day_account"),
                table.c.billing_date == sa.bindparam("day_date"),
            ),
            [{"day_account": account, "day_date": day} for account, day in fold.resets],
        )
    if fold.days:
        upsert_rows(session, dialect, table, fold, now)


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
        ledger: Any,
        *,
        batch_size: int | None = None,
        billing_tz: str | None = None,
        before_commit: Callable[[int], None] | None = None,
        target: Target = LIVE,
    ) -> None:
        self.ledger = ledger
        self.batch_size = batch_size or ledger.settings.projector_batch_size
        self.zone = ZoneInfo(billing_tz) if billing_tz else ledger.settings.zone
        self.before_commit = before_commit
        self.target = target
        self.engine = engine_of(ledger)
        self.dialect = self.engine.dialect.name
        self._events = ledger.recorder.events_record_cls.__table__
        self._decode = state_decoder(ledger.mapper)
        # PostgreSQL sends bytea hex-encoded, twice the bytes: plain JSON travels as text.
        plain = self.dialect == "postgresql" and is_plain_json(ledger.mapper)
        self._state_column = "convert_from(state, 'UTF8')" if plain else "state"
        self._date_of = billing_date_function(self.zone)
        self._prepared = False
        self._read_ahead = False
        self._prefetch: _Prefetch | None = None

    def prepare(self) -> None:
        """Create tables and the tracking row on first use."""
        if self._prepared:
            return
        ensure_tables(self.engine)
        with self.ledger.recorder.transaction(commit=True) as session:
            ensure_tracking(session, self.dialect, self.target.name)
        self._prepared = True

    def claim_zone(self) -> None:
        """Fail now (:class:`ZoneMismatch`) if the target holds another zone's dates; else note ours."""
        self.prepare()
        with self.ledger.recorder.transaction(commit=True) as session:
            lock_position(session, self.target, self.zone.key)

    def position(self) -> int:
        """The last notification id applied (0 if none)."""
        self.prepare()
        with self.ledger.recorder.transaction(commit=False) as session:
            value = session.execute(
                sa.select(projection_tracking.c.position).where(
                    projection_tracking.c.name == self.target.name
                )
            ).scalar()
        return int(value or 0)

    def run(self, max_events: int | None = None, *, stop: int | None = None) -> int:
        """Apply the log up to its end (or ``stop``), at most ``max_events``; return notifications consumed.

        On PostgreSQL, while a full batch of the live table is folded and
        written, the next one is read ahead on a second connection (see
        ``_Prefetch``). Rebuilds into scratch do not read ahead: they are
        well within their time and keep to one batch in memory.
        """
        self.prepare()
        self.ledger.sequence()  # every charge acknowledged so far is in the log before it is read
        consumed = 0
        self._read_ahead = self.dialect == "postgresql" and max_events is None and self.target.owner is None
        with gc_paused():
            try:
                while max_events is None or consumed < max_events:
                    limit = self.batch_size if max_events is None else min(self.batch_size, max_events - consumed)
                    try:
                        with self.ledger.recorder.transaction(commit=True) as session:
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
        """One batch inside the caller's transaction: (notifications consumed, new position)."""
        position = lock_position(session, self.target, self.zone.key)
        rows = self._take_prefetch(position, limit)
        if rows is None:
            rows = self._read(session, position, limit)
        if self._read_ahead and len(rows) == limit and (stop is None or rows[-1][0] < stop):
            self._prefetch = _Prefetch(self, int(rows[-1][0]), limit)
        if stop is not None and rows and rows[-1][0] > stop:
            rows = [row for row in rows if row[0] <= stop]
        if not rows:
            return 0, position
        fold = DayFold(self.zone.key, self._date_of)
        fold.add_rows(((row[1], row[2]) for row in rows), self._decode)
        now = datetime.now(timezone.utc)
        write_fold(session, self.dialect, self.target.table, fold, now)
        new_position = int(rows[-1][0])
        move_position(session, self.target, position, new_position, now)
        if self.before_commit is not None:
            self.before_commit(new_position)
        return len(rows), new_position

    def _select_sql(self, limit: int) -> str:
        mark = "%s" if self.dialect == "postgresql" else "?"
        return (
            f"SELECT id, topic, {self._state_column} FROM {self._events.name} "
            f"WHERE id > {mark} ORDER BY id LIMIT {int(limit)}"
        )

    def _read(self, session: Session, position: int, limit: int) -> list[tuple[Any, ...]]:
        """(id, topic, state) of the next notifications, as plain driver tuples (the hot path).

        ``stop`` is applied by the caller, not in SQL: with a second bound
        PostgreSQL may misjudge the range (fresh tables have no statistics)
        and sort it whole instead of walking the primary key.
        """
        cursor = session.connection().connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(self._select_sql(limit), (position,))
            return cursor.fetchall()
        finally:
            cursor.close()

    def _take_prefetch(self, position: int, limit: int) -> list[tuple[Any, ...]] | None:
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


class _Prefetch:
    """The batch after ``after``, read on a connection of its own in a thread.

    Used only if the next batch, under the locked tracking row, starts at
    ``after``. Reading outside that transaction is safe: events are never
    changed once committed, and every insert into the log (the sequencer's
    included) locks the events table through its commit, so ids become
    visible in order and an earlier snapshot sees a prefix of a later one
    (at worst fewer rows, as if the batch had been read a moment sooner).
    psycopg2 releases the GIL while it waits for the server, so the server's
    read overlaps with folding and writing the current batch.
    """

    def __init__(self, projector: "Projector", after: int, limit: int) -> None:
        self.after = after
        self.limit = limit
        self._engine = projector.engine
        self._sql = projector._select_sql(limit)
        self._rows: list[tuple[Any, ...]] | None = None
        self._thread = threading.Thread(target=self._read, name="projector-read-ahead", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            connection = self._engine.raw_connection()
            try:
                cursor = connection.cursor()
                try:
                    cursor.execute(self._sql, (self.after,))
                    self._rows = cursor.fetchall()
                finally:
                    cursor.close()
                connection.rollback()
            finally:
                connection.close()
        except Exception:  # noqa: BLE001 - the batch is then read in its own transaction
            self._rows = None

    def result(self) -> list[tuple[Any, ...]] | None:
        self._thread.join()
        return self._rows
