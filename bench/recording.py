"""Recording scenarios: one charge per call, batches, a hot account, concurrent load.

Each scenario runs on an empty store; its accounts are opened (one untimed
charge each) before the clock starts, as they would be in a running system.
Afterwards a fresh Ledger must show exactly the charges recorded.
"""

from __future__ import annotations

import time
from typing import Sequence

from bench import writers
from bench.checks import check_recorded
from bench.context import Context
from bench.limit import RAW_BATCH, RAW_SINGLE
from bench.rows import Row, at_least
from bench.workload import Tally, account_ids, charges, tally_of
from ledger import Ledger

SINGLE_ONE = "ledger-single-1"
SINGLE_MANY = "ledger-single-100"
BATCH = "ledger-batch"

SINGLE_TARGET = at_least(0.60, "≥ 60% of raw 1 row/commit")
BATCH_TARGET = at_least(0.50, "≥ 50% of raw batched")
CONCURRENT_TARGET = at_least(5.0, "≥ 5x single-writer durable rate")


def _open_accounts(url: str, accounts: Sequence[str], prefix: str) -> Tally:
    """One untimed charge per account, so timing starts on existing streams."""
    opening = list(charges(f"{prefix}-open", len(accounts), accounts))
    ledger = Ledger.from_url(url)
    try:
        for item in opening:
            ledger.record_charge(**item)
    finally:
        ledger.close()
    return tally_of(opening)


def _single(ctx: Context, name: str, accounts: Sequence[str]) -> tuple[float, Tally]:
    items = list(charges(name, ctx.sizes.single, accounts))
    with ctx.fresh(name) as url:
        expected = _open_accounts(url, accounts, name)
        ledger = Ledger.from_url(url)
        try:
            for account in accounts:
                ledger.account_totals(account)
            began = time.perf_counter()
            for item in items:
                ledger.record_charge(**item)
            seconds = time.perf_counter() - began
        finally:
            ledger.close()
        expected.merge(tally_of(items))
        check_recorded(url, accounts, expected)
    return seconds, expected


def single(ctx: Context) -> list[Row]:
    """``record_charge`` one call at a time: one account, then many accounts."""
    raw = ctx.baseline(RAW_SINGLE)
    n = ctx.sizes.single
    seconds_one, _ = _single(ctx, "single1", account_ids(1))
    one = Row("record_charge, 1 account", ctx.kind, n, seconds_one, target=SINGLE_TARGET, key=SINGLE_ONE)
    ctx.remember(one)
    many_accounts = account_ids(ctx.sizes.accounts)
    seconds_many, _ = _single(ctx, "single100", many_accounts)
    many = Row(
        f"record_charge, {len(many_accounts)} accounts", ctx.kind, n, seconds_many, target=SINGLE_TARGET, key=SINGLE_MANY
    )
    return [one.against(raw), many.against(raw)]


def batch(ctx: Context) -> list[Row]:
    """``record_charges`` with ``batch_size`` charges per call, over many accounts."""
    sizes = ctx.sizes
    accounts = account_ids(sizes.accounts)
    items = list(charges("batch", sizes.batch, accounts))
    with ctx.fresh("batch") as url:
        expected = _open_accounts(url, accounts, "batch")
        ledger = Ledger.from_url(url)
        try:
            began = time.perf_counter()
            for start in range(0, len(items), sizes.batch_size):
                outcomes = ledger.record_charges(items[start : start + sizes.batch_size])
                failed = [o for o in outcomes if not o.ok]
                if failed:
                    raise RuntimeError(f"record_charges rejected {len(failed)} charges: {failed[0].error}")
            seconds = time.perf_counter() - began
        finally:
            ledger.close()
        expected.merge(tally_of(items))
        check_recorded(url, accounts, expected)
    row = Row(
        f"record_charges, {sizes.batch_size:,}/call", ctx.kind, sizes.batch, seconds, target=BATCH_TARGET, key=BATCH
    )
    return [row.against(ctx.baseline(RAW_BATCH))]


def _concurrent(ctx: Context, name: str, accounts: Sequence[str], writer_count: int, per_writer: int, threads: bool) -> tuple[int, float]:
    items = list(charges(name, writer_count * per_writer, accounts))
    shares = writers.split(items, writer_count)
    with ctx.fresh(name) as url:
        expected = _open_accounts(url, accounts, name)
        run = writers.in_threads if threads else writers.in_processes
        count, seconds = run(url, shares)
        expected.merge(tally_of(items))
        check_recorded(url, accounts, expected)
    return count, seconds


def hot_account(ctx: Context) -> list[Row]:
    """Several writer processes on one account: they queue on its stream."""
    sizes = ctx.sizes
    count, seconds = _concurrent(ctx, "hot", account_ids(1), sizes.hot_writers, sizes.hot_per_writer, threads=False)
    row = Row(f"hot account, {sizes.hot_writers} writer processes", ctx.kind, count, seconds,
              note="PostgreSQL scenario; SQLite for comparison")
    return [row.against(ctx.baseline(SINGLE_ONE))]


def concurrent(ctx: Context) -> list[Row]:
    """Many writers over many accounts, each waiting for durability: processes, then threads."""
    sizes = ctx.sizes
    accounts = account_ids(sizes.accounts)
    baseline = ctx.baseline(SINGLE_MANY)
    rows = []
    for threads in (False, True):
        how = "threads in 1 process" if threads else "processes"
        count, seconds = _concurrent(
            ctx, "threads" if threads else "procs", accounts, sizes.writers, sizes.concurrent_per_writer, threads
        )
        row = Row(f"concurrent, {sizes.writers} writer {how}, {len(accounts)} accounts", ctx.kind, count, seconds,
                  target=CONCURRENT_TARGET)
        rows.append(row.against(baseline))
    return rows

