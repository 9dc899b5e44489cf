"""Bring tables made by earlier releases up to date: add the columns they lack.

Runs inside :func:`ledger.store.schema.ensure_schema`'s schema-locked
transaction. Billing tables made before costs existed get ``cost_micros``
and ``unpriced_charges``; their rows predate prices, so every charge they
count was unpriced (a rebuild from the log gives the same figures).
Tracking made before zones were kept gets ``time_zone``, left empty: the
next batch records its zone. A charge index made before budgets gets the
typed columns budgets sum, filled from each row's payload
(:func:`ledger.store.spend.backfill`), and the index of rows not yet folded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from ledger.store.schema import (
    UNFOLDED_INDEX,
    charge_index,
    daily_billing_records,
    daily_billing_records_rebuild,
    projection_tracking,
)


#: The tables whose earlier shapes :func:`upgrade` brings up to date.
UPGRADED = (daily_billing_records, daily_billing_records_rebuild, projection_tracking, charge_index)


def columns_of(connection: sa.engine.Connection, tables: Sequence[sa.Table]) -> dict[str, set[str]]:
    """Each table's column names as the store has them (one catalogue query on PostgreSQL)."""
    names = [table.name for table in tables]
    if connection.dialect.name != "postgresql":
        inspector = sa.inspect(connection)
        return {name: {c["name"] for c in inspector.get_columns(name)} for name in names}
    found: dict[str, set[str]] = {name: set() for name in names}
    for table, column in connection.exec_driver_sql(
        "SELECT c.relname, a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r' AND c.relname = ANY(%(names)s) "
        "AND a.attnum > 0 AND NOT a.attisdropped", {"names": names}
    ):
        found[table].add(column)
    return found


def upgrade(connection: sa.engine.Connection) -> None:
    """Add the columns earlier releases' tables lack (alembic's operations, imported only when needed)."""
    operations: Any = None
    columns = columns_of(connection, UPGRADED)

    def add(table: sa.Table, *columns: sa.Column) -> None:
        nonlocal operations
        if operations is None:  # imported only to migrate: it takes longer than a batch
            from alembic.migration import MigrationContext
            from alembic.operations import Operations

            operations = Operations(MigrationContext.configure(connection))
        for column in columns:
            operations.add_column(table.name, column)

    for table in (daily_billing_records, daily_billing_records_rebuild):
        if "cost_micros" not in columns[table.name]:
            add(
                table,
                *(
                    sa.Column(name, sa.BigInteger, nullable=False, server_default="0")
                    for name in ("cost_micros", "unpriced_charges")
                ),
            )
            connection.execute(table.update().values(unpriced_charges=table.c.charges))
    if "time_zone" not in columns[projection_tracking.name]:
        add(projection_tracking, sa.Column("time_zone", sa.String(64), nullable=True))
    if "folded" not in columns[charge_index.name]:
        add(charge_index, *(
            sa.Column(column.name, column.type, nullable=True)
            for column in charge_index.columns
            if column.name in ("user_id", "occurred_at", "cost_micros", "total_tokens")
        ))
        add(charge_index, sa.Column("folded", sa.Boolean, nullable=False, server_default=sa.false()))
        from ledger.store.spend import backfill

        backfill(connection)
    UNFOLDED_INDEX.create(connection, checkfirst=True)
