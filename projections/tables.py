"""The read model's tables, as the projections name them (defined in :mod:`ledger.store.schema`).

They live beside the ledger's tables, in the same database, so a
projector's writes and its position commit in one transaction with nothing
but the store itself (invariant 4).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ledger.store.schema import (  # noqa: F401 - the read model's names, kept here for its users
    KEY_COLUMNS,
    LIVE_NAME,
    SCRATCH_NAME,
    UNSPECIFIED,
    VALUE_COLUMNS,
    daily_billing_records,
    daily_billing_records_rebuild,
    ensure_schema,
    metadata,
    projection_tracking,
)


def ensure_tables(engine: sa.engine.Engine) -> None:
    """Create the projection tables (with every other table of the schema) once per engine."""
    ensure_schema(engine)


def engine_of(source: Any) -> sa.engine.Engine:
    """The engine behind a Ledger, or the engine itself."""
    if isinstance(source, sa.engine.Engine):
        return source
    engine = source.recorder.datastore.engine
    assert isinstance(engine, sa.engine.Engine)
    return engine
