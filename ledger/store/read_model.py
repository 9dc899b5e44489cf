"""The read model's SQL: daily billing records, their rebuild twin, and the projections' tracking rows.

Callers name a records table by its name (:data:`LIVE_NAME` or
:data:`SCRATCH_NAME`) and pass days and groups keyed as the domain keys them
(:mod:`ledger.billing_keys`): an unspecified provider or model is None there
and :data:`UNSPECIFIED` (``''``) in the key columns; the conversion happens
here and, for reports' reads, in :mod:`ledger.store.report_queries`.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ledger.store.schema import (
    KEY_COLUMNS,
    LIVE_NAME,
    SCRATCH_NAME,
    UNSPECIFIED,
    VALUE_COLUMNS,
    daily_billing_records,
    daily_billing_records_rebuild,
    ensure_schema,
    projection_tracking,
)

if TYPE_CHECKING:
    from ledger.billing_keys import DayKey, GroupKey
    from ledger.store.base import Store

#: A batch's figures per group per account-day (groups keyed as the domain keys them).
Days = Mapping["DayKey", Mapping["GroupKey", Sequence[int]]]

TABLES = {LIVE_NAME: daily_billing_records, SCRATCH_NAME: daily_billing_records_rebuild}


def _table(name: str) -> sa.Table:
    return TABLES[name]


def _stored(part: str | None) -> str:
    return UNSPECIFIED if part is None else part


def _domain(part: str) -> str | None:
    return None if part == UNSPECIFIED else part


# -- tracking rows ----------------------------------------------------------------------


class Tracking(NamedTuple):
    """A projection's tracking row."""

    position: int
    owner: str | None
    time_zone: str | None


def _insert(dialect: str, table: sa.Table) -> Any:
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def ensure_tracking(store: Store, name: str) -> None:
    """The schema exists and so does ``name``'s tracking row (position 0), an existing one untouched."""
    ensure_schema(store.engine)
    with store.transaction(commit=True) as session:
        statement = _insert(store.dialect, projection_tracking).values(name=name, position=0)
        session.execute(statement.on_conflict_do_nothing(index_elements=["name"]))


def lock_tracking(session: Session, name: str) -> Tracking | None:
    """The tracking row, locked until commit (``FOR UPDATE`` on PostgreSQL), or None."""
    t = projection_tracking
    row = session.execute(
        sa.select(t.c.position, t.c.owner, t.c.time_zone).where(t.c.name == name).with_for_update()
    ).first()
    return None if row is None else Tracking(int(row.position), row.owner, row.time_zone)


def tracked_position(store: Store, name: str) -> int:
    """The tracked position (0 if none)."""
    t = projection_tracking
    with store.transaction(commit=False) as session:
        value = session.execute(sa.select(t.c.position).where(t.c.name == name)).scalar()
    return int(value or 0)


def record_zone(session: Session, name: str, zone: str) -> None:
    """Note the zone whose billing dates the tracked table holds."""
    t = projection_tracking
    session.execute(t.update().where(t.c.name == name).values(time_zone=zone))


def move_tracking(
    session: Session, name: str, old: int, new: int, now: datetime, owner: str | None = None
) -> bool:
    """Compare-and-set the position (and the owner, if given); whether the row was still at ``old``."""
    t = projection_tracking
    condition = sa.and_(t.c.name == name, t.c.position == old)
    if owner is not None:
        condition = sa.and_(condition, t.c.owner == owner)
    result = session.execute(t.update().where(condition).values(position=new, updated_at=now))
    return result.rowcount == 1  # type: ignore[attr-defined, no-any-return]


def claim(session: Session, dialect: str, name: str, owner: str, now: datetime) -> None:
    """Empty the records table ``name`` and give its tracking row to ``owner`` at position 0."""
    table = _table(name)
    if dialect == "postgresql":  # no dead rows left for the rebuild's upserts to wade through
        session.execute(sa.text(f"TRUNCATE TABLE {table.name}"))
    else:
        session.execute(table.delete())
    t = projection_tracking
    session.execute(t.update().where(t.c.name == name).values(position=0, owner=owner, updated_at=now))


def clear(session: Session, name: str) -> None:
    """Delete every row of the records table ``name``."""
    session.execute(_table(name).delete())


# -- writing a batch ------------------------------------------------------------------

#: Columns of an upsert row, in order.
ROW_COLUMNS = KEY_COLUMNS + VALUE_COLUMNS + ("updated_at",)
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


def _on_conflict(table: sa.Table) -> str:
    added = ", ".join(f"{name} = {table.name}.{name} + excluded.{name}" for name in VALUE_COLUMNS)
    return f"ON CONFLICT ({', '.join(KEY_COLUMNS)}) DO UPDATE SET {added}, updated_at = excluded.updated_at"


def sqlite_upsert_sql(table: sa.Table) -> str:
    """INSERT ... VALUES (?, ...) ON CONFLICT (key) DO UPDATE SET value = value + excluded.value."""
    placeholders = ", ".join("?" for _ in ROW_COLUMNS)
    return f"INSERT INTO {table.name} ({', '.join(ROW_COLUMNS)}) VALUES ({placeholders}) {_on_conflict(table)}"


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


def _copy_text(days: Days) -> io.StringIO:
    """The rows in COPY text format (tab-separated, escaped, one per line).

    Group keys repeat across a batch's days: each distinct one is escaped and
    joined once, as is each account-day prefix.
    """
    escaped: dict[GroupKey, str] = {}
    lines = []
    append = lines.append
    for (account_id, day), groups in days.items():
        prefix = f"{_copy_field(account_id)}\t{day.isoformat()}\t"
        for key, figures in groups.items():
            text = escaped.get(key)
            if text is None:
                text = escaped[key] = "\t".join([_copy_field(_stored(part)) for part in key]) + "\t"
            append(prefix + text + "\t".join(map(str, figures)) + "\n")
    return io.StringIO("".join(lines))


def stored_rows(days: Days, updated_at: str) -> list[tuple[Any, ...]]:
    """One row per group, in :data:`ROW_COLUMNS` order, keyed as stored (unspecified is ``''``; dates as text)."""
    stored: dict[GroupKey, tuple[str, ...]] = {}
    rows = []
    append = rows.append
    for (account_id, day), groups in days.items():
        when = day.isoformat()
        for key, figures in groups.items():
            parts = stored.get(key)
            if parts is None:
                parts = stored[key] = tuple(_stored(part) for part in key)  # type: ignore[misc]
            append((account_id, when, *parts, *figures, updated_at))
    return rows


def upsert_days(session: Session, dialect: str, name: str, days: Days, now: datetime) -> None:
    """Add the days' figures to the records table ``name``, straight through the driver.

    The projector writes thousands of rows per batch: SQLAlchemy's per-row
    parameter processing would cost more than the database does. SQLite takes
    one ``executemany``; PostgreSQL takes a ``COPY`` into a temporary table
    and one ``INSERT ... SELECT ... ON CONFLICT`` (no per-row parameters to
    format or parse).
    """
    table = _table(name)
    connection = session.connection()
    if dialect == "postgresql":
        cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(_STAGING_DDL)
            cursor.copy_expert(f"COPY {STAGING_TABLE} FROM STDIN", _copy_text(days))
            cursor.execute(postgres_upsert_sql(table), (now,))
            cursor.execute(f"TRUNCATE {STAGING_TABLE}")
        finally:
            cursor.close()
    else:  # SQLite stores dates and times as text, exactly as SQLAlchemy reads them back
        stamp = now.strftime("%Y-%m-%d %H:%M:%S.%f")
        connection.exec_driver_sql(sqlite_upsert_sql(table), stored_rows(days, stamp))


def write_days(
    session: Session, dialect: str, name: str, resets: Iterable[DayKey], days: Days, now: datetime
) -> None:
    """Delete the rows of the ``resets`` account-days, then add ``days``' figures."""
    table = _table(name)
    resets = list(resets)
    if resets:
        session.execute(
            table.delete().where(
                table.c.account_id == sa.bindparam("day_account"),
                table.c.billing_date == sa.bindparam("day_date"),
            ),
            [{"day_account": account, "day_date": day} for account, day in resets],
        )
    if days:
        upsert_days(session, dialect, name, days, now)


# -- comparing and summing tables -------------------------------------------------------


def swap_in(session: Session) -> None:
    """Replace the live rows with the scratch ones (the caller holds the live tracking row)."""
    live, scratch = daily_billing_records, daily_billing_records_rebuild
    names = [column.name for column in live.columns]
    session.execute(live.delete())
    session.execute(live.insert().from_select(names, sa.select(*(scratch.c[n] for n in names))))


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


#: (key as reports show it, live figures or None, rebuilt figures or None)
TableDifference = tuple[dict[str, Any], "dict[str, int] | None", "dict[str, int] | None"]


def diff_tables(session: Session, limit: int) -> tuple[list[TableDifference], int]:
    """Keys whose non-zero figures differ between live and scratch: (first ``limit``, how many).

    Keys come back as reports show them: unspecified provider or model as None.
    """
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
    differences = [(_public_key(key), found[key]["live"], found[key]["rebuilt"]) for key in keys]
    count = _count_keys(session, live_only, rebuilt_only) if truncated else len(found)
    return differences, count


def _public_key(key: tuple[Any, ...]) -> dict[str, Any]:
    public = dict(zip(KEY_COLUMNS, key, strict=True))
    for name in ("provider", "model"):
        public[name] = _domain(public[name])
    return public


def table_totals(session: Session, table: sa.Table | str = LIVE_NAME) -> dict[str, int]:
    """Sums of every figure over a records table (by name, or the table itself)."""
    table = _table(table) if isinstance(table, str) else table
    row = session.execute(
        sa.select(*(sa.func.coalesce(sa.func.sum(table.c[n]), 0) for n in VALUE_COLUMNS))
    ).one()
    return {name: int(value) for name, value in zip(VALUE_COLUMNS, row, strict=True)}


def count_rows(session: Session, name: str) -> int:
    """How many rows the records table ``name`` holds."""
    return int(session.execute(sa.select(sa.func.count()).select_from(_table(name))).scalar() or 0)
