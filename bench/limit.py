"""Baseline scenarios: the raw insert limit and the CRUD design, measured first."""

from __future__ import annotations

import sqlalchemy as sa

from bench import baselines
from bench.context import Context
from bench.rows import Inconsistent, Row
from bench.stores import engine_for
from bench.workload import account_ids, charges, raw_event_rows, tally_of

RAW_SINGLE = "raw-single"
RAW_BATCH = "raw-batch"
CRUD_INSERT = "crud-insert"
CRUD_AGGREGATE = "crud-aggregate"
CRUD_END_TO_END = "crud-e2e"

#: Rows committed before timing starts (connections, caches, first pages).
WARM_UP = 20


def raw_limit(ctx: Context) -> list[Row]:
    """Plain INSERTs of charge-sized rows: one per commit, then batched."""
    sizes = ctx.sizes
    accounts = account_ids(sizes.accounts)
    rows: list[Row] = []
    with ctx.fresh("raw-single") as url:
        engine = engine_for(url)
        try:
            baselines.create_tables(engine)
            data = raw_event_rows(list(charges("raw", WARM_UP + sizes.single, accounts)))
            baselines.insert_raw_one_per_commit(engine, data[:WARM_UP])
            seconds = baselines.insert_raw_one_per_commit(engine, data[WARM_UP:])
            expect_rows(engine, len(data))
        finally:
            engine.dispose()
    rows.append(Row("raw INSERT, 1 row/commit", ctx.kind, sizes.single, seconds, "rows", key=RAW_SINGLE))
    with ctx.fresh("raw-batch") as url:
        engine = engine_for(url)
        try:
            baselines.create_tables(engine)
            data = raw_event_rows(list(charges("raw", sizes.batch + sizes.batch_size, accounts)))
            baselines.insert_raw_batched(engine, data[: sizes.batch_size], sizes.batch_size)
            seconds = baselines.insert_raw_batched(engine, data[sizes.batch_size :], sizes.batch_size)
            expect_rows(engine, len(data))
        finally:
            engine.dispose()
    rows.append(
        Row(f"raw INSERT, {sizes.batch_size:,} rows/commit", ctx.kind, sizes.batch, seconds, "rows", key=RAW_BATCH)
    )
    return rows


def crud(ctx: Context) -> list[Row]:
    """The replaced design: a committed INSERT per charge, then the aggregation job."""
    sizes = ctx.sizes
    items = list(charges("crud", sizes.single, account_ids(sizes.accounts)))
    with ctx.fresh("crud") as url:
        engine = engine_for(url)
        try:
            baselines.create_tables(engine)
            insert_seconds = baselines.crud_insert_one_per_call(engine, items)
            aggregate_seconds = baselines.crud_aggregate(engine)
            baselines.check_crud(engine, tally_of(items))
        finally:
            engine.dispose()
    n, kind = sizes.single, ctx.kind
    return [
        Row("CRUD insert, 1 charge/commit", kind, n, insert_seconds, key=CRUD_INSERT),
        Row("CRUD aggregation job", kind, n, aggregate_seconds, key=CRUD_AGGREGATE),
        Row("CRUD end to end (insert + aggregate)", kind, n, insert_seconds + aggregate_seconds, key=CRUD_END_TO_END),
    ]


def expect_rows(engine: sa.engine.Engine, wanted: int, table: sa.Table = baselines.raw_events) -> None:
    """The table (the raw one by default) holds exactly the rows inserted."""
    found = baselines.count_rows(engine, table)
    if found != wanted:
        raise Inconsistent(f"{table.name} holds {found} rows, {wanted} were inserted")
