"""Stored rows and bytes for a synthetic month before and after compaction, and its speed.

Records a month of charges (default 30 days x 20 accounts x 5 users, 100,000
charges, 1% reversed), projects them, then compacts every closed day up to the
projector's position and reports: raw charge rows of closed days, all event
rows, bytes of each ledger table (SQLite: ``dbstat`` pages after VACUUM;
PostgreSQL: ``pg_total_relation_size`` after VACUUM FULL), and compaction
speed (events pruned per second: the month at once, a rerun with nothing to
do, and one more day compacted the next day).

    python bench/compaction_size.py --url sqlite:////tmp/compaction.db
    python bench/compaction_size.py --url postgresql+psycopg2://postgres@127.0.0.1:5432/bench
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import time
from datetime import datetime, time as clock, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import sqlalchemy as sa

from ledger import Ledger
from ledger.compaction import compact
from ledger.domain import CHARGE_RECORDED_TOPIC, CHARGE_REVERSED_TOPIC, DAY_ROLLED_UP_TOPIC
from projections import Projector, audit

TABLES = ("ledger_events", "ledger_snapshots", "ledger_charge_index", "daily_billing_records")


def reset(url: str) -> None:
    if url.startswith("sqlite"):
        path = Path(url.split(":///", 1)[1])
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.exec_driver_sql("DROP SCHEMA IF EXISTS public CASCADE")
        connection.exec_driver_sql("CREATE SCHEMA public")
    engine.dispose()


def month(days: int, accounts: int, users: int, charges: int, start: datetime) -> Iterator[dict[str, Any]]:
    """Charges spread evenly over days, accounts and users, two types, two models."""
    span = days * 86400
    for i in range(charges):
        yield {
            "charge_id": f"bench-{i}",
            "account_id": f"acct-{i % accounts}",
            "user_id": f"user-{i // accounts % users}",
            "charge_type": ("completion", "tool")[i % 2],
            "provider": "openai",
            "model": ("gpt-4o", "gpt-4o-mini")[i // 2 % 2],
            "prompt_tokens": 100 + i % 50,
            "completion_tokens": 20 + i % 30,
            "occurred_at": start + timedelta(seconds=(i * 7919) % span),
        }


def measure(ledger: Ledger) -> dict[str, Any]:
    """Rows per topic and bytes per table, after reclaiming free space."""
    engine = ledger.store.engine
    events = ledger.store.events_table
    with engine.connect() as connection:
        rows = dict(connection.execute(
            sa.select(events.c.topic, sa.func.count()).group_by(events.c.topic)).all())
    if engine.dialect.name == "sqlite":
        path = ledger.settings.sqlite_path()
        connection = sqlite3.connect(str(path), isolation_level=None)
        try:
            connection.execute("VACUUM")
            table_bytes = {t: int(connection.execute(
                "SELECT COALESCE(SUM(pgsize), 0) FROM dbstat WHERE name IN "
                "(SELECT name FROM sqlite_master WHERE tbl_name = ?)", (t,)).fetchone()[0])
                for t in TABLES}
            table_bytes["file"] = path.stat().st_size
        finally:
            connection.close()
    else:
        auto = engine.execution_options(isolation_level="AUTOCOMMIT")
        with auto.connect() as connection:
            for table in TABLES:
                connection.exec_driver_sql(f"VACUUM FULL {table}")
            table_bytes = {t: int(connection.exec_driver_sql(
                f"SELECT pg_total_relation_size('{t}')").scalar_one()) for t in TABLES}
    return {
        "raw_rows": rows.get(CHARGE_RECORDED_TOPIC, 0) + rows.get(CHARGE_REVERSED_TOPIC, 0),
        "rollup_rows": rows.get(DAY_ROLLED_UP_TOPIC, 0),
        "event_rows": sum(rows.values()),
        "bytes": table_bytes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="sqlite:////tmp/compaction-bench.db")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--accounts", type=int, default=20)
    parser.add_argument("--users", type=int, default=5)
    parser.add_argument("--charges", type=int, default=100_000)
    args = parser.parse_args()

    reset(args.url)
    ledger = Ledger.from_url(args.url)
    today = datetime.now(timezone.utc).date()
    start = datetime.combine(today - timedelta(days=args.days + 1), clock(), timezone.utc)
    items = list(month(args.days, args.accounts, args.users, args.charges, start))
    t0 = time.perf_counter()
    for offset in range(0, len(items), 5_000):
        outcomes = ledger.record_charges(items[offset:offset + 5_000])
        assert all(o.ok for o in outcomes)
    record_seconds = time.perf_counter() - t0
    for item in items[:: 100]:
        ledger.reverse_charge(item["charge_id"], "bench", account_id=item["account_id"])
    projector = Projector(ledger)
    projector.run()
    totals_before = {f"acct-{a}": ledger.account_totals(f"acct-{a}") for a in range(args.accounts)}
    before = measure(ledger)

    t0 = time.perf_counter()
    dry = compact(ledger, before=today, projected_position=projector.position(), grace=timedelta(0), dry_run=True)
    dry_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = compact(ledger, before=today, projected_position=projector.position(), grace=timedelta(0))
    compact_seconds = time.perf_counter() - t0
    projector.run()
    fresh = Ledger.from_url(args.url)
    assert all(fresh.account_totals(a) == t for a, t in totals_before.items()), "totals moved"
    report = audit(ledger)
    assert report.clean, report.to_dict()
    after = measure(ledger)

    # Steady state: nothing new (the scan alone), then one more closed day,
    # compacted from the snapshots the month's compaction left.
    t0 = time.perf_counter()
    idle = compact(ledger, before=today, projected_position=projector.position(), grace=timedelta(0))
    idle_seconds = time.perf_counter() - t0
    assert idle.events_pruned == 0
    day_start = datetime.combine(today - timedelta(days=1), clock(), timezone.utc)
    day_items = [{**item, "charge_id": f"next-{item['charge_id']}"}
                 for item in month(1, args.accounts, args.users, args.charges // args.days, day_start)]
    for offset in range(0, len(day_items), 5_000):
        assert all(o.ok for o in ledger.record_charges(day_items[offset:offset + 5_000]))
    projector.run()
    t0 = time.perf_counter()
    daily = compact(ledger, before=today, projected_position=projector.position(), grace=timedelta(0))
    daily_seconds = time.perf_counter() - t0
    projector.run()
    assert audit(ledger).clean
    fresh.close()
    ledger.close()

    print(json.dumps({
        "store": args.url.split(":", 1)[0],
        "charges": args.charges, "reversals": len(items[::100]), "days": args.days,
        "accounts": args.accounts, "users": args.users,
        "record_seconds": round(record_seconds, 2),
        "before": before, "after": after,
        "raw_rows_removed_pct": round(100 * (1 - after["raw_rows"] / before["raw_rows"]), 3),
        "event_rows_removed_pct": round(100 * (1 - after["event_rows"] / before["event_rows"]), 3),
        "events_table_bytes_removed_pct": round(
            100 * (1 - after["bytes"]["ledger_events"] / before["bytes"]["ledger_events"]), 2),
        "dry_run": {"seconds": round(dry_seconds, 2), "events": dry.events_pruned, "bytes": dry.bytes_pruned},
        "compaction": {"seconds": round(compact_seconds, 2), "accounts": result.accounts, "days": result.days,
                       "events_pruned": result.events_pruned, "retries": result.retries,
                       "events_per_second": round(result.events_pruned / compact_seconds)},
        "rerun_with_nothing_to_do_seconds": round(idle_seconds, 2),
        "next_day": {"seconds": round(daily_seconds, 2), "events_pruned": daily.events_pruned,
                     "events_per_second": round(daily.events_pruned / daily_seconds)},
        "audit_clean": report.clean,
    }, indent=2))


if __name__ == "__main__":
    main()
