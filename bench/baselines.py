"""The yardsticks: the database's own insert rate, and the design the ledger replaces.

*Raw limit*: plain INSERTs into a table with the event table's columns and
index (id, originator_id uuid, originator_version, topic, ~500-byte state),
one row per commit and many rows per commit. Nothing can record a charge
durably faster than that on the same connection.

*CRUD*: the replaced design done plainly: one ``charge`` row per call,
committed; then the aggregation job: GROUP BY account, user, date and charge
type, upsert ``daily_billing_record`` rows, delete the charges it summed.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy_utils.types.uuid import UUIDType

from bench.rows import Inconsistent
from bench.workload import Tally

metadata = sa.MetaData()

#: The event table's shape (eventsourcing-sqlalchemy's stored event record).
raw_events = sa.Table(
    "bench_raw_events",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("originator_id", UUIDType(), nullable=False),
    sa.Column("originator_version", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
    sa.Column("topic", sa.Text(), nullable=False),
    sa.Column("state", sa.LargeBinary(), nullable=False),
    sa.Index("bench_raw_events_aggregate_idx", "originator_id", "originator_version", unique=True),
)

#: The replaced system's Charge model.
crud_charge = sa.Table(
    "charge",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.String(256), nullable=False),
    sa.Column("user_id", sa.String(256), nullable=False),
    sa.Column("user_profile_id", sa.Integer, nullable=True),
    sa.Column("session_key", sa.String(256), nullable=True),
    sa.Column("provider", sa.String(256), nullable=True),
    sa.Column("model", sa.String(256), nullable=True),
    sa.Column("charge_type", sa.String(64), nullable=False),
    sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
    sa.Column("completion_tokens", sa.BigInteger, nullable=False),
    sa.Column("total_tokens", sa.BigInteger, nullable=False),
    sa.Column("reference", sa.String(1024), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

#: The replaced system's DailyBillingRecord model.
crud_daily = sa.Table(
    "daily_billing_record",
    metadata,
    sa.Column("account_id", sa.String(256), primary_key=True),
    sa.Column("user_id", sa.String(256), primary_key=True),
    sa.Column("date", sa.Date, primary_key=True),
    sa.Column("charge_type", sa.String(64), primary_key=True),
    sa.Column("charges", sa.BigInteger, nullable=False),
    sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
    sa.Column("completion_tokens", sa.BigInteger, nullable=False),
    sa.Column("total_tokens", sa.BigInteger, nullable=False),
)

FIGURES = ("charges", "prompt_tokens", "completion_tokens", "total_tokens")


def create_tables(engine: sa.engine.Engine) -> None:
    metadata.create_all(engine, checkfirst=True)


# -- raw limit ---------------------------------------------------------------


def insert_raw_one_per_commit(engine: sa.engine.Engine, rows: Sequence[Mapping[str, Any]]) -> float:
    """Seconds to insert ``rows``, each in its own durable transaction."""
    statement = raw_events.insert()
    with engine.connect() as connection:
        began = time.perf_counter()
        for row in rows:
            connection.execute(statement, row)
            connection.commit()
        return time.perf_counter() - began


def insert_raw_batched(engine: sa.engine.Engine, rows: Sequence[Mapping[str, Any]], batch_size: int) -> float:
    """Seconds to insert ``rows``, ``batch_size`` per transaction (executemany)."""
    statement = raw_events.insert()
    with engine.connect() as connection:
        began = time.perf_counter()
        for start in range(0, len(rows), batch_size):
            connection.execute(statement, list(rows[start : start + batch_size]))
            connection.commit()
        return time.perf_counter() - began


def count_rows(engine: sa.engine.Engine, table: sa.Table) -> int:
    with engine.connect() as connection:
        return int(connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


# -- CRUD --------------------------------------------------------------------


def crud_row(item: Mapping[str, Any]) -> dict[str, Any]:
    """What the replaced ``create_charge`` task inserted for one charge."""
    prompt, completion = int(item["prompt_tokens"]), int(item["completion_tokens"])
    return {
        "account_id": item["account_id"],
        "user_id": item["user_id"],
        "user_profile_id": item.get("user_profile_id"),
        "session_key": item.get("session_key"),
        "provider": item.get("provider"),
        "model": item.get("model"),
        "charge_type": item["charge_type"],
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "reference": item.get("reference"),
        "created_at": item.get("occurred_at") or datetime.now(timezone.utc),
    }


def crud_insert_one_per_call(engine: sa.engine.Engine, items: Sequence[Mapping[str, Any]]) -> float:
    """Seconds for one committed INSERT per charge, as the replaced task did."""
    statement = crud_charge.insert()
    with engine.connect() as connection:
        began = time.perf_counter()
        for item in items:
            connection.execute(statement, crud_row(item))
            connection.commit()
        return time.perf_counter() - began


def crud_insert_batched(engine: sa.engine.Engine, items: Sequence[Mapping[str, Any]], batch_size: int = 5_000) -> None:
    """Set-up only: load charges quickly so the aggregation has work."""
    statement = crud_charge.insert()
    with engine.connect() as connection:
        batch: list[dict[str, Any]] = []
        for item in items:
            batch.append(crud_row(item))
            if len(batch) == batch_size:
                connection.execute(statement, batch)
                connection.commit()
                batch = []
        if batch:
            connection.execute(statement, batch)
            connection.commit()


def _billing_date(engine: sa.engine.Engine) -> Any:
    """The UTC date of ``created_at`` (the replaced design ignored time zones)."""
    if engine.dialect.name == "postgresql":
        return sa.cast(sa.func.timezone("UTC", crud_charge.c.created_at), sa.Date)
    return sa.func.date(crud_charge.c.created_at)


def crud_aggregate(engine: sa.engine.Engine) -> float:
    """Seconds for one run of the aggregation job: GROUP BY, upsert daily rows, delete charges.

    Done as well as plain SQL allows: one ``INSERT … SELECT … GROUP BY … ON
    CONFLICT DO UPDATE`` (no rows through Python), then one DELETE of the
    charges it summed, in one transaction. The replaced job did a
    read-modify-write per daily row; this baseline is the stronger one.
    """
    c = crud_charge.c
    day = _billing_date(engine).label("date")
    with engine.connect() as connection:
        began = time.perf_counter()
        last = connection.execute(sa.select(sa.func.max(c.id))).scalar()
        if last is not None:
            grouped = (
                sa.select(
                    c.account_id,
                    c.user_id,
                    day,
                    c.charge_type,
                    sa.func.count().label("charges"),
                    sa.func.sum(c.prompt_tokens),
                    sa.func.sum(c.completion_tokens),
                    sa.func.sum(c.total_tokens),
                )
                .where(c.id <= last)
                .group_by(c.account_id, c.user_id, day, c.charge_type)
            )
            insert = (postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert)(crud_daily)
            columns = ["account_id", "user_id", "date", "charge_type", *FIGURES]
            upsert = insert.from_select(columns, grouped).on_conflict_do_update(
                index_elements=["account_id", "user_id", "date", "charge_type"],
                set_={name: crud_daily.c[name] + insert.excluded[name] for name in FIGURES},
            )
            connection.execute(upsert)
            connection.execute(crud_charge.delete().where(c.id <= last))
        connection.commit()
        return time.perf_counter() - began


def crud_totals(engine: sa.engine.Engine) -> Tally:
    with engine.connect() as connection:
        row = connection.execute(
            sa.select(*(sa.func.coalesce(sa.func.sum(crud_daily.c[n]), 0) for n in FIGURES))
        ).one()
    return Tally(*(int(value) for value in row))


def check_crud(engine: sa.engine.Engine, expected: Tally) -> None:
    """Daily rows hold every charge; the charge table is empty."""
    totals = crud_totals(engine)
    if totals != expected:
        raise Inconsistent(f"CRUD daily records {totals.as_dict()} != charges inserted {expected.as_dict()}")
    left = count_rows(engine, crud_charge)
    if left:
        raise Inconsistent(f"CRUD aggregation left {left} charge rows behind")
