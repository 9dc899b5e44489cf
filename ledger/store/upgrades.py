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

from typing import Any

import sqlalchemy as sa

from ledger.store.schema import (
    UNFOLDED_INDEX,
    charge_index,
    daily_billing_records,
    daily_billing_records_rebuild,
    projection_tracking,
)


def upgrade(connection: sa.engine.Connection) -> None:
    """Add the columns earlier releases' tables lack (alembic's operations, imported only when needed)."""
    operations: Any = None
    inspector = sa.inspect(connection)

    def add(table: sa.Table, *columns: sa.Column) -> None:
        nonlocal operations
        if operations is None:  # imported only to migrate: it takes longer than a batch
            from alembic.migration import MigrationContext
            from alembic.operations import Operations

            operations = Operations(MigrationContext.configure(connection))
        for column in columns:
            operations.add_column(table.name, column)

    for table in (daily_billing_records, daily_billing_records_rebuild):
        if "cost_micros" not in {c["name"] for c in inspector.get_columns(table.name)}:
            add(
                table,
                *(
                    sa.Column(name, sa.BigInteger, nullable=False, server_default="0")
                    for name in ("cost_micros", "unpriced_charges")
                ),
            )
            connection.execute(table.update().values(unpriced_charges=table.c.charges))
    if "time_zone" not in {c["name"] for c in inspector.get_columns(projection_tracking.name)}:
        add(projection_tracking, sa.Column("time_zone", sa.String(64), nullable=True))
    if "folded" not in {c["name"] for c in inspector.get_columns(charge_index.name)}:
        add(charge_index, *(
            sa.Column(column.name, column.type, nullable=True)
            for column in charge_index.columns
            if column.name in ("user_id", "occurred_at", "cost_micros", "total_tokens")
        ))
        add(charge_index, sa.Column("folded", sa.Boolean, nullable=False, server_default=sa.false()))
        from ledger.store.spend import backfill

        backfill(connection)
    UNFOLDED_INDEX.create(connection, checkfirst=True)
