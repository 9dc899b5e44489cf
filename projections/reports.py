"""The queries billing reads: records over a date range, grouped as asked, and account totals.

Every query reads ``daily_billing_records`` only (never the log), takes a
Ledger or a SQLAlchemy engine, and returns plain dicts: unspecified provider
or model as None, ``billing_date`` as a ``date``, figures as ints. Groups
whose figures are all zero (charges fully reversed) are left out.
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import date
from typing import Any, Iterable, Iterator, Sequence

import sqlalchemy as sa

from projections.tables import (
    KEY_COLUMNS,
    UNSPECIFIED,
    VALUE_COLUMNS,
    daily_billing_records,
    engine_of,
    ensure_tables,
)

#: What a record's key is made of, in the order reports return them.
GROUP_COLUMNS = ("account_id", "user_id", "billing_date", "charge_type", "provider", "model")
#: Short names accepted in ``group_by``.
ALIASES = {"account": "account_id", "user": "user_id", "date": "billing_date", "day": "billing_date"}
#: The seed's DailyBillingRecord: per account, user, date and charge type.
SEED_VIEW_GROUPS = ("account_id", "user_id", "billing_date", "charge_type")


def records(
    source: Any,
    account_id: str | None = None,
    start: date | str | None = None,
    end: date | str | None = None,
    group_by: Iterable[str] | None = None,
    charge_type: str | None = None,
    provider: str | None = None,
    model: str | None = None,
    user_id: str | None = None,
) -> list[dict[str, Any]]:
    """Daily billing records summed per ``group_by`` (default: every key column).

    ``start`` and ``end`` are inclusive billing dates. Key columns not grouped
    by come back as None.
    """
    groups = _group_columns(group_by)
    table = daily_billing_records
    filters = _filters(account_id, start, end, charge_type, provider, model, user_id)
    order = [table.c[name] for name in _sort_order(groups)]
    if set(groups) == set(KEY_COLUMNS):  # the primary key: each row is its own group, nothing to sum
        query = (
            sa.select(*(table.c[name] for name in groups), *(table.c[name] for name in VALUE_COLUMNS))
            .where(*filters, sa.or_(*(table.c[name] != 0 for name in VALUE_COLUMNS)))
            .order_by(*order)
        )
    else:
        sums = [sa.func.sum(table.c[name]).label(name) for name in VALUE_COLUMNS]
        query = (
            sa.select(*(table.c[name] for name in groups), *sums)
            .where(*filters)
            .group_by(*(table.c[name] for name in groups))
            .having(sa.or_(*(sum_ != 0 for sum_ in sums)))
            .order_by(*order)
        )
    with _reading(source) as connection:
        rows = connection.execute(query).all()
    return _records(rows, groups)


def daily_billing_view(
    source: Any,
    account_id: str | None = None,
    start: date | str | None = None,
    end: date | str | None = None,
    user_id: str | None = None,
    charge_type: str | None = None,
) -> list[dict[str, Any]]:
    """The seed's DailyBillingRecord rows: one per account, user, billing date and charge type."""
    return records(
        source,
        account_id=account_id,
        start=start,
        end=end,
        group_by=SEED_VIEW_GROUPS,
        user_id=user_id,
        charge_type=charge_type,
    )


def account_summaries(
    source: Any, start: date | str | None = None, end: date | str | None = None
) -> list[dict[str, Any]]:
    """Totals per account: figures, number of users, first and last billing date."""
    table = daily_billing_records
    sums = [sa.func.sum(table.c[name]).label(name) for name in VALUE_COLUMNS]
    nonzero = sa.or_(*(table.c[name] != 0 for name in VALUE_COLUMNS))
    query = (
        sa.select(
            table.c.account_id,
            *sums,
            sa.func.count(sa.distinct(table.c.user_id)).label("users"),
            sa.func.min(table.c.billing_date).label("first_date"),
            sa.func.max(table.c.billing_date).label("last_date"),
        )
        .where(nonzero, *_filters(None, start, end, None, None, None, None))
        .group_by(table.c.account_id)
        .order_by(table.c.account_id)
    )
    with _reading(source) as connection:
        rows = connection.execute(query).all()
    return [
        {
            "account_id": row.account_id,
            **{name: int(row._mapping[name]) for name in VALUE_COLUMNS},
            "users": int(row.users),
            "first_date": _as_date(row.first_date),
            "last_date": _as_date(row.last_date),
        }
        for row in rows
    ]


def _group_columns(group_by: Iterable[str] | None) -> tuple[str, ...]:
    if group_by is None:
        return GROUP_COLUMNS
    if isinstance(group_by, str):
        group_by = [part.strip() for part in group_by.split(",") if part.strip()]
    wanted = {ALIASES.get(name, name) for name in group_by}
    unknown = sorted(wanted - set(GROUP_COLUMNS))
    if unknown:
        raise ValueError(f"cannot group by {', '.join(unknown)}; choose from {', '.join(GROUP_COLUMNS)}")
    return tuple(name for name in GROUP_COLUMNS if name in wanted)


def _sort_order(groups: Sequence[str]) -> list[str]:
    """Dates first within an account: how a bill reads."""
    preferred = ("account_id", "billing_date", "user_id", "charge_type", "provider", "model")
    return [name for name in preferred if name in groups]


def _filters(
    account_id: str | None,
    start: date | str | None,
    end: date | str | None,
    charge_type: str | None,
    provider: str | None,
    model: str | None,
    user_id: str | None,
) -> list[sa.ColumnElement[bool]]:
    table = daily_billing_records
    conditions = []
    for name, value in (
        ("account_id", account_id),
        ("user_id", user_id),
        ("charge_type", charge_type),
        ("provider", provider),
        ("model", model),
    ):
        if value is not None:
            conditions.append(table.c[name] == value)
    if start is not None:
        conditions.append(table.c.billing_date >= _as_date(start))
    if end is not None:
        conditions.append(table.c.billing_date <= _as_date(end))
    return conditions


def _records(rows: Iterable[Sequence[Any]], groups: Sequence[str]) -> list[dict[str, Any]]:
    """Result rows (``groups`` then ``VALUE_COLUMNS``) as report dicts, every key column present."""
    names = (*groups, *VALUE_COLUMNS)
    template: dict[str, Any] = dict.fromkeys(GROUP_COLUMNS + VALUE_COLUMNS)
    optional = [name for name in ("provider", "model") if name in groups]
    dated = "billing_date" in groups
    records = []
    for row in rows:
        record = template.copy()
        record.update(zip(names, row))
        for name in optional:
            if record[name] == UNSPECIFIED:
                record[name] = None
        if dated and record["billing_date"].__class__ is not date:
            record["billing_date"] = _as_date(record["billing_date"])
        for name in VALUE_COLUMNS:
            if record[name].__class__ is not int:  # sums come back as Decimal on PostgreSQL
                record[name] = int(record[name])
        records.append(record)
    return records


def _as_date(value: date | str) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


@contextmanager
def _reading(source: Any) -> Iterator[Any]:
    """A read-only connection: the ledger's own read transaction, or one from the engine."""
    engine = engine_of(source)
    ensure_tables(engine)
    if isinstance(source, sa.engine.Engine):
        with engine.connect() as connection:
            yield connection
    else:
        with source.recorder.transaction(commit=False) as session:
            yield session
