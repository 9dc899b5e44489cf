"""The queries reports run over the live daily billing records.

Each takes a Ledger (read in its store's read transaction) or a bare
SQLAlchemy engine of its database, and returns rows whose unspecified
provider and model are None (stored as ``''``, see :mod:`ledger.store.read_model`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ledger.store.replication_reads import read_engine
from ledger.store.schema import (
    KEY_COLUMNS,
    UNSPECIFIED,
    VALUE_COLUMNS,
    daily_billing_records,
    ensure_schema,
)

if TYPE_CHECKING:
    from ledger.application import Ledger

#: What reports read from: a Ledger, or the SQLAlchemy engine of its database.
Source: TypeAlias = "Ledger | sa.engine.Engine"


def _nonzero(table: sa.Table) -> sa.ColumnElement[bool]:
    return sa.or_(*(table.c[name] != 0 for name in VALUE_COLUMNS))


@contextmanager
def reading(source: Source) -> Iterator[Session | sa.engine.Connection]:
    """A read-only connection: a Ledger's read standby's (``LEDGER_READ_DATABASE_URL``, see
    :mod:`ledger.store.replication_reads`), else its own read transaction, or one from a bare engine."""
    if isinstance(source, sa.engine.Engine):
        ensure_schema(source)
        with source.connect() as connection:
            yield connection
    elif (standby := read_engine(source)) is not None:
        with standby.connect() as connection:  # a copy of the primary's tables: nothing to create
            yield connection
    else:
        store = source.store
        ensure_schema(store.engine)
        with store.transaction(commit=False) as session:
            yield session


class Filters(NamedTuple):
    """Equality filters on key columns (None: any) and an inclusive billing-date range."""

    account_id: str | None = None
    user_id: str | None = None
    charge_type: str | None = None
    provider: str | None = None
    model: str | None = None
    start: date | None = None
    end: date | None = None


def _conditions(filters: Filters) -> list[sa.ColumnElement[bool]]:
    table = daily_billing_records
    conditions = []
    for name in ("account_id", "user_id", "charge_type", "provider", "model"):
        value = getattr(filters, name)
        if value is not None:
            conditions.append(table.c[name] == value)
    if filters.start is not None:
        conditions.append(table.c.billing_date >= filters.start)
    if filters.end is not None:
        conditions.append(table.c.billing_date <= filters.end)
    return conditions


def grouped_records(
    source: Source, groups: Sequence[str], order: Sequence[str], filters: Filters
) -> list[tuple[Any, ...]]:
    """Live records summed per ``groups`` (``groups`` then the figures), non-zero groups only.

    Unspecified provider and model come back as None.
    """
    table = daily_billing_records
    conditions = _conditions(filters)
    ordering = [table.c[name] for name in order]
    if set(groups) == set(KEY_COLUMNS):  # the primary key: each row is its own group, nothing to sum
        query = (
            sa.select(*(table.c[name] for name in groups), *(table.c[name] for name in VALUE_COLUMNS))
            .where(*conditions, _nonzero(table))
            .order_by(*ordering)
        )
    else:
        sums = [sa.func.sum(table.c[name]).label(name) for name in VALUE_COLUMNS]
        query = (
            sa.select(*(table.c[name] for name in groups), *sums)
            .where(*conditions)
            .group_by(*(table.c[name] for name in groups))
            .having(sa.or_(*(sum_ != 0 for sum_ in sums)))
            .order_by(*ordering)
        )
    with reading(source) as connection:
        rows = connection.execute(query).all()
    optional = [i for i, name in enumerate(groups) if name in ("provider", "model")]
    if not optional:
        return [tuple(row) for row in rows]
    converted = []
    for row in rows:
        values = list(row)
        for i in optional:
            if values[i] == UNSPECIFIED:
                values[i] = None
        converted.append(tuple(values))
    return converted


def account_rows(source: Source, start: date | None, end: date | None) -> list[sa.Row[Any]]:
    """Per account: its figures, distinct users, first and last billing date (non-zero rows only)."""
    table = daily_billing_records
    sums = [sa.func.sum(table.c[name]).label(name) for name in VALUE_COLUMNS]
    query = (
        sa.select(
            table.c.account_id,
            *sums,
            sa.func.count(sa.distinct(table.c.user_id)).label("users"),
            sa.func.min(table.c.billing_date).label("first_date"),
            sa.func.max(table.c.billing_date).label("last_date"),
        )
        .where(_nonzero(table), *_conditions(Filters(start=start, end=end)))
        .group_by(table.c.account_id)
        .order_by(table.c.account_id)
    )
    with reading(source) as connection:
        return list(connection.execute(query).all())
