"""The read model's tables: daily billing records, their scratch twin, and tracking.

They live on their own ``MetaData`` beside the ledger's tables, in the same
database, so a projector's writes and its position commit in one transaction
with nothing but the store itself (invariant 4).

Unspecified provider or model is stored as ``''`` in the key columns: a
primary key cannot hold NULL, and the ledger never stores an empty string
(validation turns one into "unspecified"). Reports turn ``''`` back into None.
"""

from __future__ import annotations

import weakref
from typing import Any

import sqlalchemy as sa

from ledger.measures import MEASURES

#: The key of a daily billing record, in primary-key order (account and date
#: first: reports and rollups select by account and day).
KEY_COLUMNS = ("account_id", "billing_date", "user_id", "charge_type", "provider", "model")
#: The figures summed per key (see :mod:`ledger.measures`).
VALUE_COLUMNS = MEASURES
#: Stored in place of None for an unspecified provider or model.
UNSPECIFIED = ""

LIVE_NAME = "daily_billing_records"
SCRATCH_NAME = "daily_billing_records_rebuild"

metadata = sa.MetaData()


def _billing_table(name: str) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("account_id", sa.String, primary_key=True),
        sa.Column("billing_date", sa.Date, primary_key=True),
        sa.Column("user_id", sa.String, primary_key=True),
        sa.Column("charge_type", sa.String, primary_key=True),
        sa.Column("provider", sa.String, primary_key=True, default=UNSPECIFIED),
        sa.Column("model", sa.String, primary_key=True, default=UNSPECIFIED),
        sa.Column("charges", sa.BigInteger, nullable=False, default=0),
        sa.Column("prompt_tokens", sa.BigInteger, nullable=False, default=0),
        sa.Column("completion_tokens", sa.BigInteger, nullable=False, default=0),
        sa.Column("total_tokens", sa.BigInteger, nullable=False, default=0),
        # Sum of the charges' costs in micro-units of the catalogue's currency,
        # and how many charges no price covered (they add no cost).
        sa.Column("cost_micros", sa.BigInteger, nullable=False, default=0, server_default="0"),
        sa.Column("unpriced_charges", sa.BigInteger, nullable=False, default=0, server_default="0"),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Index(f"{name}_date_idx", "billing_date", "account_id"),
    )


#: What billing reads.
daily_billing_records = _billing_table(LIVE_NAME)
#: Where rebuilds and audits project the log from position 0.
daily_billing_records_rebuild = _billing_table(SCRATCH_NAME)

#: One row per projection: the last notification id it applied. ``owner``
#: marks which rebuild currently fills a scratch table.
projection_tracking = sa.Table(
    "projection_tracking",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("position", sa.BigInteger, nullable=False, default=0),
    sa.Column("owner", sa.String(64), nullable=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
    # The IANA zone whose dates the table holds: set by its first batch (or
    # by the rebuild that filled it), so a run in another zone is refused
    # instead of mixing dates of two zones in one table.
    sa.Column("time_zone", sa.String(64), nullable=True),
)

_ready: "weakref.WeakSet[sa.engine.Engine]" = weakref.WeakSet()


def ensure_tables(engine: sa.engine.Engine) -> None:
    """Create the projection tables once per engine (idempotent, race-safe on PostgreSQL)."""
    if engine in _ready:
        return
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            # Two processes creating the same tables at once collide in the catalog.
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('projections.tables'))"))
        metadata.create_all(connection, checkfirst=True)
        _migrate(connection)
    _ready.add(engine)


def _migrate(connection: sa.engine.Connection) -> None:
    """Bring tables made by earlier versions up to date: add the columns they lack.

    Billing tables made before costs existed get ``cost_micros`` and
    ``unpriced_charges``; their rows predate prices, so every charge they
    count was unpriced (a rebuild from the log gives the same figures).
    Tracking made before zones were kept gets ``time_zone``, left empty: the
    next batch records its zone.
    """
    operations = None
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


def engine_of(source: Any) -> sa.engine.Engine:
    """The engine behind a Ledger, or the engine itself."""
    if isinstance(source, sa.engine.Engine):
        return source
    engine = source.recorder.datastore.engine
    assert isinstance(engine, sa.engine.Engine)
    return engine
