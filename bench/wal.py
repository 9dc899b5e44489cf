"""WAL bytes per charge: the ledger's write path against a raw INSERT of the same row.

Each path runs on the same empty store, one after the other, between two
reads of the WAL position; the WAL in between is read back with
``pg_walinspect`` and only this database's records are counted (records
touching its relations, and every record of a transaction that did, its
commit included), so other databases' traffic on a shared server does not
count. The cluster-wide ``pg_current_wal_lsn()`` delta is given beside it.
Full-page images depend on when the last checkpoint happened, not on the
path: the figure compared is the WAL without them; the note gives both.

The paths, at ``writers`` clients, ``single`` charges each:

- the raw-INSERT pgbench script of :mod:`bench.pgbench` (one row per transaction);
- the ledger's intake function through pgbench (:mod:`bench.intake_sql`),
  the intake drained by a ledger in this process, the final drain included;
- ``record_charge`` from ``writers`` processes (each its own ledger and
  sequencer), the whole path as an application runs it.

Where ``pg_walinspect`` cannot be created, the cluster-wide delta is all there is (the note says so).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, TypeVar

import sqlalchemy as sa

from bench import baselines, pgbench, writers
from bench.checks import check_recorded
from bench.context import Context
from bench.intake_sql import Prepared, Sequencing, pending
from bench.limit import expect_rows
from bench.rows import POSTGRESQL, Inconsistent, Row, Target
from bench.stores import engine_for
from bench.workload import account_ids, charges, tally_of

WAL_RAW = "wal-raw"
WAL_TARGET = Target(
    "≤ 2x the raw INSERT's WAL per row (issue 25)",
    lambda row: row.ratio <= 2.0,  # type: ignore[operator]
    (POSTGRESQL,),
)

T = TypeVar("T")

#: This database's WAL between two positions, per table (``wal_by_table.sql``): records, bytes, full-page images.
BY_TABLE = Path(__file__).with_name("wal_by_table.sql").read_text()


@dataclass(frozen=True)
class Wal:
    """WAL written by one measured path."""

    records: int | None
    bytes: int | None  # this database's records, full-page images included
    fpi: int | None  # of which full-page images
    cluster: int  # the pg_current_wal_lsn() delta (every database on the server)
    #: Bytes without full-page images per table (its indexes with it), largest first; empty if not read.
    tables: dict[str, int] = field(default_factory=dict)

    def per(self, items: int) -> float:
        """Bytes per item without full-page images (cluster-wide delta if records could not be read)."""
        if self.bytes is None or self.fpi is None:
            return self.cluster / items
        return (self.bytes - self.fpi) / items


class Meter:
    """Reads this database's WAL between two points (pg_walinspect, else the LSN delta)."""

    def __init__(self, engine: sa.engine.Engine) -> None:
        self.engine = engine
        with engine.connect() as connection:
            self.database_oid = int(
                connection.exec_driver_sql("SELECT oid FROM pg_database WHERE datname = current_database()").scalar_one()
            )
            connection.commit()
        self.inspect = True
        try:
            with engine.connect() as connection:
                connection.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
                connection.commit()
        except sa.exc.DBAPIError:
            self.inspect = False

    def position(self) -> str:
        with self.engine.connect() as connection:
            lsn = str(connection.exec_driver_sql("SELECT pg_current_wal_flush_lsn()").scalar_one())
            connection.commit()
        return lsn

    def between(self, start: str, end: str) -> Wal:
        with self.engine.connect() as connection:
            cluster = int(
                connection.exec_driver_sql("SELECT pg_wal_lsn_diff(%(end)s::pg_lsn, %(start)s::pg_lsn)",
                                           {"start": start, "end": end}).scalar_one()
            )
            records = size = fpi = None
            tables: dict[str, int] = {}
            if self.inspect:
                where = {"start": start, "end": end, "pattern": f"%/{self.database_oid}/%",
                         "node": f"/{self.database_oid}/(\\d+)"}
                rows = [(name, int(n), int(b), int(f)) for name, n, b, f in connection.exec_driver_sql(BY_TABLE, where)]
                records, size, fpi = (sum(row[k] for row in rows) for k in (1, 2, 3))
                tables = {name: b - f for name, _, b, f in rows}
            connection.commit()
        return Wal(records, size, fpi, cluster, tables)

    def measure(self, work: Callable[[], T]) -> tuple[T, Wal, float]:
        """``work()``'s result, the WAL it wrote and its wall seconds."""
        start = self.position()
        began = time.perf_counter()
        result = work()
        seconds = time.perf_counter() - began
        return result, self.between(start, self.position()), seconds


def wal(ctx: Context) -> list[Row]:
    """WAL per charge: raw INSERT, the intake function with its sequencing, and record_charge."""
    if ctx.kind != POSTGRESQL:
        return []
    pgbench.require_pgbench()
    sizes = ctx.sizes
    clients = sizes.writers
    per = max(1, sizes.single // clients)
    accounts = account_ids(sizes.accounts)
    with ctx.fresh("wal") as url:
        engine = engine_for(url)
        try:
            baselines.create_tables(engine)
            meter = Meter(engine)
            prepared = Prepared(url, accounts, "wal")
            raw_script = pgbench.raw_insert_script(accounts)

            ctx.log(f"WAL: raw INSERT, {clients} clients x {per:,}")
            raw, raw_wal, raw_seconds = meter.measure(
                lambda: pgbench.run_script(url, raw_script, clients=clients, per_client=per, name="wal-raw")
            )
            expect_rows(engine, raw.transactions)

            def intake() -> pgbench.Result:
                with Sequencing(url):
                    return pgbench.run_script(url, prepared.script, clients=clients, per_client=per, name="wal-intake")

            ctx.log(f"WAL: intake function + sequencing, {clients} clients x {per:,}")
            taken, intake_wal, intake_seconds = meter.measure(intake)
            if pending(url):
                raise Inconsistent("charges left in the intake after the final drain")
            expected = prepared.expect(taken.transactions)

            ctx.log(f"WAL: record_charge, {clients} processes x {per:,}")
            items = list(charges("wal-rc", clients * per, accounts))
            (recorded, ledger_seconds), ledger_wal, _ = meter.measure(  # the writers' span, not their start-up
                lambda: writers.in_processes(url, writers.split(items, clients))
            )
            if pending(url):
                raise Inconsistent("charges left in the intake after the writers closed")
            expected.merge(tally_of(items))
            check_recorded(url, accounts, expected)
            if recorded != len(items):
                raise Inconsistent(f"record_charge: {recorded} recorded, {len(items)} sent")
        finally:
            engine.dispose()
    base = raw_wal.per(raw.transactions)
    raw_row = _row(f"WAL per row: raw INSERT (pgbench, {clients} clients)", ctx.kind, raw.transactions,
                   raw_seconds, raw_wal, "rows", meter.inspect, key=WAL_RAW)
    rows = [raw_row]
    for name, count, seconds, used in (
        (f"WAL per charge: ledger_intake_account_charges + sequencing (pgbench, {clients} clients)",
         taken.transactions, intake_seconds, intake_wal),
        (f"WAL per charge: record_charge ({clients} processes)", recorded, ledger_seconds, ledger_wal),
    ):
        row = _row(name, ctx.kind, count, seconds, used, "charges", meter.inspect, target=WAL_TARGET)
        rows.append(_ratio(row, raw_row, used.per(count) / base))
    return rows


def _row(name: str, store: str, count: int, seconds: float, used: Wal, unit: str, inspected: bool, **more) -> Row:
    per = used.per(count)
    if inspected and used.bytes is not None and used.fpi is not None:
        note = (f"{per:,.0f} B/{unit[:-1]} without full-page images ({used.bytes / count:,.0f} B with them, "
                f"{used.records / count:.1f} records); cluster-wide LSN delta {used.cluster / count:,.0f} B/{unit[:-1]} "
                "(other databases included)")
        if used.tables:
            note += "; by table, its indexes with it: " + ", ".join(
                f"{name} {size / count:,.0f} B" for name, size in used.tables.items() if size >= count
            )
    else:
        note = f"cluster-wide LSN delta only (pg_walinspect unavailable): {per:,.0f} B/{unit[:-1]}, other databases included"
    return Row(name, store, count, seconds, unit, note=note, extra={"wal_per_item": per}, **more)


def _ratio(row: Row, baseline: Row, ratio: float) -> Row:
    """``row`` with its WAL per item over the baseline's (lower is better, unlike the speed ratios)."""
    return replace(row, baseline=baseline.scenario, ratio=ratio)
