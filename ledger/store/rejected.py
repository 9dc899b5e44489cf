"""The ``rejected_charges`` table: keeping, listing and resolving the charges a task could not record.

The table is defined in :mod:`ledger.store.schema` and created with every
other at the ledger's start. Rows come back as :class:`RejectedRow` with
UTC-aware times (SQLite returns naive ones); :mod:`jobs.rejected` holds the
logic around them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypedDict

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from ledger.store.schema import rejected_charges, stored_utc

if TYPE_CHECKING:
    from ledger.store.base import Store


class RejectedRow(TypedDict):
    """One kept charge as stored."""

    id: int
    received_at: datetime
    task_id: str | None
    payload: dict[str, Any]
    errors: dict[str, str]
    resubmitted_at: datetime | None
    resolution: str | None


def insert(store: Store, *, received_at: datetime, task_id: str | None,
           payload: Mapping[str, Any], errors: Mapping[str, str]) -> int | None:
    """Keep a charge; its id, or None when a row for this task exists already."""
    engine = store.engine
    dialect_insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    statement = (
        dialect_insert(rejected_charges)
        .values(received_at=received_at, task_id=task_id, payload=dict(payload), errors=dict(errors))
        .on_conflict_do_nothing(index_elements=["task_id"])
        .returning(rejected_charges.c.id)
    )
    with engine.begin() as connection:
        row = connection.execute(statement).first()
    return None if row is None else int(row[0])


def select(store: Store, include_resolved: bool = False) -> list[RejectedRow]:
    """Kept charges, oldest first; unresolved only unless asked."""
    query = sa.select(rejected_charges).order_by(rejected_charges.c.id)
    if not include_resolved:
        query = query.where(rejected_charges.c.resolution.is_(None))
    with store.engine.connect() as connection:
        return [_row(row) for row in connection.execute(query)]


def select_one(store: Store, rejected_id: int) -> RejectedRow | None:
    """One kept charge, or None."""
    with store.engine.connect() as connection:
        row = connection.execute(
            sa.select(rejected_charges).where(rejected_charges.c.id == rejected_id)
        ).first()
    return None if row is None else _row(row)


def resolve(store: Store, rejected_id: int, resolution: str, at: datetime) -> None:
    """Mark a kept charge resolved (if it is not already), saying how."""
    with store.engine.begin() as connection:
        connection.execute(
            rejected_charges.update()
            .where(rejected_charges.c.id == rejected_id, rejected_charges.c.resolution.is_(None))
            .values(resubmitted_at=at, resolution=resolution)
        )


def _row(row: sa.Row[Any]) -> RejectedRow:
    return RejectedRow(
        id=int(row.id),
        received_at=stored_utc(row.received_at),
        task_id=row.task_id,
        payload=dict(row.payload),
        errors=dict(row.errors),
        resubmitted_at=stored_utc(row.resubmitted_at) if row.resubmitted_at else None,
        resolution=row.resolution,
    )
