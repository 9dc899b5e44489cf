"""Projection speed (events/s) and rebuild peak memory on one store.

Records N charges with ``ledger.record_charges`` in batches of 5,000, then
times ``Projector(ledger).run()`` from position 0, then a ``rebuild`` into the
scratch table in a fresh process, reporting that process's peak RSS.

    python bench/projection_speed.py --url sqlite:////tmp/bench.db --charges 200000
    python bench/projection_speed.py --url postgresql+psycopg2://postgres@127.0.0.1:5432/bench
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa

from bench.stores import reset_postgres
from ledger import Ledger
from projections import Projector, rebuild


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset(url: str) -> None:
    """An empty store: the SQLite files removed, or every PostgreSQL table dropped."""
    if not url.startswith("sqlite"):
        reset_postgres(url)
        return
    path = Path(url.split(":///", 1)[1])
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def charges(count: int, accounts: int, start: datetime, scatter: bool):
    """Charges over accounts, 7 users, 4 types and 3 models across 30 days.

    By default they arrive in time order, as calls do; ``scatter`` spreads
    consecutive charges over the whole month (every batch touches every day).
    """
    types = ("completion", "plugin", "tool", "usage")
    models = (("openai", "gpt-4o"), ("anthropic", "claude"), (None, None))
    month = 30 * 86400
    for i in range(count):
        offset = (i * 13) % month if scatter else i * month // count
        provider, model = models[i % 3]
        yield {
            "charge_id": f"bench-{i}",
            "account_id": f"acct-{i % accounts}",
            "user_id": f"user-{i % 7}",
            "charge_type": types[i % 4],
            "provider": provider,
            "model": model,
            "prompt_tokens": 100 + i % 50,
            "completion_tokens": 20 + i % 30,
            "occurred_at": start + timedelta(seconds=offset),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="sqlite:////tmp/projection_bench.db")
    parser.add_argument("--charges", type=int, default=200_000)
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=5_000)
    parser.add_argument("--billing-tz", default="America/New_York")
    parser.add_argument("--scatter", action="store_true", help="spread consecutive charges over the month")
    parser.add_argument("--keep", action="store_true", help="reuse the recorded log if present")
    args = parser.parse_args()

    if not args.keep:
        reset(args.url)
    ledger = Ledger.from_url(args.url, billing_tz=args.billing_tz, aggregate_cache_size=args.accounts * 2)
    start = datetime(2026, 2, 1, tzinfo=timezone.utc)
    head = ledger.log_position()
    if head == 0:
        began = time.perf_counter()
        batch: list[dict] = []
        for item in charges(args.charges, args.accounts, start, args.scatter):
            batch.append(item)
            if len(batch) == 5_000:
                ledger.record_charges(batch)
                batch = []
        if batch:
            ledger.record_charges(batch)
        print(f"recorded {args.charges} charges in {time.perf_counter() - began:.1f} s")

    projector = Projector(ledger, batch_size=args.batch_size)
    projector.prepare()
    with ledger.store.transaction(commit=True) as session:  # project from 0 each run
        session.execute(sa.text("DELETE FROM daily_billing_records"))
        session.execute(sa.text("UPDATE projection_tracking SET position = 0 WHERE name = 'daily_billing_records'"))
    began, cpu = time.perf_counter(), time.process_time()
    events = projector.run()
    elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
    print(f"projected {events} events in {elapsed:.2f} s: {events / elapsed:,.0f} events/s "
          f"(this process's CPU {cpu:.2f} s: {events / cpu:,.0f} events per CPU second; "
          f"batch {args.batch_size}, {ledger.store.dialect})")

    ledger.close()
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        line = pool.apply(measure_rebuild, (args.url, args.billing_tz, args.batch_size))
    print(line)


def measure_rebuild(url: str, billing_tz: str, batch_size: int) -> str:
    """Rebuild in a fresh process, so its peak RSS is the rebuild's own."""
    ledger = Ledger.from_url(url, billing_tz=billing_tz)
    began = time.perf_counter()
    result = rebuild(ledger, batch_size=batch_size)
    elapsed = time.perf_counter() - began
    ledger.close()
    return (
        f"rebuilt {result.events} events ({result.rows} rows) in {elapsed:.2f} s: "
        f"{result.events / elapsed:,.0f} events/s, differences {result.difference_count}; "
        f"peak RSS of the rebuilding process {peak_rss_mib():.0f} MiB"
    )


if __name__ == "__main__":
    main()
