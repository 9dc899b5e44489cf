"""Recording scenarios: one charge per call, batches, a hot account, concurrent load.

Each scenario runs on an empty store; its accounts are opened (one untimed
charge each) before the clock starts, as they would be in a running system.
Single and batch recording take turns with their raw-insert baseline on the
same store (see :mod:`bench.pairing`). Afterwards a fresh Ledger must show
exactly the charges recorded.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Any, Callable, Mapping, Sequence

import sqlalchemy as sa

from bench import baselines, writers
from bench.checks import check_recorded
from bench.context import Context
from bench.limit import WARM_UP, expect_rows
from bench.pairing import alternate, blocks_of
from bench.rows import Row, at_least
from bench.stores import engine_for
from bench.workload import Tally, account_ids, charges, raw_event_rows, tally_of
from ledger import Ledger
from ledger.store.schema import charge_index

SINGLE_ONE = "ledger-single-1"
SINGLE_MANY = "ledger-single-100"
BATCH = "ledger-batch"

#: record_charge calls per turn before the raw baseline takes its turn.
SINGLE_BLOCK = 100
#: Turns each for the concurrent threads and the lone writer beside them.
PAIRED_TURNS = 10

SINGLE_TARGET = at_least(0.60, "≥ 60% of raw 1 row/commit")
BATCH_TARGET = at_least(0.50, "≥ 50% of raw batched")
CONCURRENT_TARGET = at_least(5.0, "≥ 5x single-writer durable rate")


def open_accounts(url: str, accounts: Sequence[str], prefix: str) -> Tally:
    """One untimed charge per account, so timing starts on existing streams."""
    opening = list(charges(f"{prefix}-open", len(accounts), accounts))
    ledger = Ledger.from_url(url)
    try:
        for item in opening:
            ledger.record_charge(**item)
    finally:
        ledger.close()
    return tally_of(opening)


def paired_single_calls(
    ledger: Ledger,
    items: Sequence[Mapping[str, Any]],
    baseline: Callable[[Sequence[Any]], Any],
    baseline_items: Sequence[Any],
) -> tuple[float, float]:
    """(ledger seconds, baseline seconds): one ``record_charge`` per item, taking
    turns in blocks with ``baseline`` over the same slices of ``baseline_items``."""

    def record(block: range) -> None:
        for i in block:
            ledger.record_charge(**items[i])

    return alternate(
        [
            (partial(record, block), partial(baseline, baseline_items[block.start : block.stop]))
            for block in blocks_of(len(items), SINGLE_BLOCK)
        ]
    )


def _single(ctx: Context, name: str, accounts: Sequence[str]) -> tuple[float, float]:
    """(ledger seconds, raw seconds) for ``single`` charges each, interleaved on one store."""
    n = ctx.sizes.single
    items = list(charges(name, n, accounts))
    raw_rows = raw_event_rows(list(charges(f"{name}-raw", n, account_ids(len(accounts), "raw"))))
    with ctx.fresh(name) as url:
        expected = open_accounts(url, accounts, name)
        engine = engine_for(url)
        ledger = Ledger.from_url(url)
        try:
            baselines.create_tables(engine)
            warm_up = raw_event_rows(list(charges(f"{name}-warm", WARM_UP, account_ids(1, "warm"))))
            baselines.insert_raw_one_per_commit(engine, warm_up)
            for account in accounts:
                ledger.account_totals(account)

            ledger_seconds, raw_seconds = paired_single_calls(
                ledger, items, partial(baselines.insert_raw_one_per_commit, engine), raw_rows
            )
            expect_rows(engine, WARM_UP + n)
        finally:
            ledger.close()
            engine.dispose()
        expected.merge(tally_of(items))
        check_recorded(url, accounts, expected)
    return ledger_seconds, raw_seconds


def single(ctx: Context) -> list[Row]:
    """``record_charge`` one call at a time (one account, then many), each paired with raw one-row commits."""
    n = ctx.sizes.single
    rows = []
    for accounts, key in ((account_ids(1), SINGLE_ONE), (account_ids(ctx.sizes.accounts), SINGLE_MANY)):
        label = "1 account" if len(accounts) == 1 else f"{len(accounts)} accounts"
        ledger_seconds, raw_seconds = _single(ctx, f"single{len(accounts)}", accounts)
        raw = Row(f"raw INSERT, 1 row/commit, interleaved ({label})", ctx.kind, n, raw_seconds, "rows",
                  key=f"{key}-raw")
        row = Row(f"record_charge, {label}", ctx.kind, n, ledger_seconds, target=SINGLE_TARGET, key=key)
        rows += [raw, row.against(raw)]
    return rows


def batch(ctx: Context) -> list[Row]:
    """``record_charges`` with ``batch_size`` charges per call, paired with raw batched commits."""
    sizes = ctx.sizes
    accounts = account_ids(sizes.accounts)
    items = list(charges("batch", sizes.batch, accounts))
    raw_rows = raw_event_rows(list(charges("batch-raw", sizes.batch, account_ids(sizes.accounts, "raw"))))
    with ctx.fresh("batch") as url:
        expected = open_accounts(url, accounts, "batch")
        engine = engine_for(url)
        ledger = Ledger.from_url(url)
        try:
            baselines.create_tables(engine)

            def record(block: range) -> None:
                outcomes = ledger.record_charges(items[block.start : block.stop])
                failed = [o for o in outcomes if not o.ok]
                if failed:
                    raise RuntimeError(f"record_charges rejected {len(failed)} charges: {failed[0].error}")

            def insert(block: range) -> float:
                return baselines.insert_raw_batched(engine, raw_rows[block.start : block.stop], sizes.batch_size)

            pairs = [(partial(record, block), partial(insert, block)) for block in blocks_of(sizes.batch, sizes.batch_size)]
            ledger_seconds, raw_seconds = alternate(pairs)
            expect_rows(engine, sizes.batch)
        finally:
            ledger.close()
            engine.dispose()
        expected.merge(tally_of(items))
        check_recorded(url, accounts, expected)
    raw = Row(f"raw INSERT, {sizes.batch_size:,} rows/commit, interleaved", ctx.kind, sizes.batch, raw_seconds, "rows",
              key=f"{BATCH}-raw")
    row = Row(f"record_charges, {sizes.batch_size:,}/call", ctx.kind, sizes.batch, ledger_seconds,
              target=BATCH_TARGET, key=BATCH)
    return [raw, row.against(raw)]


def _concurrent(
    ctx: Context, name: str, accounts: Sequence[str], writer_count: int, per_writer: int, threads: bool
) -> tuple[int, float, int]:
    """(charges recorded, seconds, transactions that stored them)."""
    items = list(charges(name, writer_count * per_writer, accounts))
    shares = writers.split(items, writer_count)
    with ctx.fresh(name) as url:
        expected = open_accounts(url, accounts, name)
        run = writers.in_threads if threads else writers.in_processes
        count, seconds = run(url, shares)
        expected.merge(tally_of(items))
        check_recorded(url, accounts, expected)
        commits = _transactions(url, f"{name}-open-")
    return count, seconds, commits


def _transactions(url: str, opening_prefix: str, only: str = "") -> int:
    """Transactions that stored the timed charges: one ``recorded_at`` per transaction."""
    engine = engine_for(url)
    try:
        with engine.connect() as connection:
            count = connection.execute(
                sa.select(sa.func.count(sa.distinct(charge_index.c.recorded_at))).where(
                    sa.not_(charge_index.c.charge_id.startswith(opening_prefix)),
                    charge_index.c.charge_id.startswith(only),
                )
            ).scalar_one()
            connection.rollback()
    finally:
        engine.dispose()
    return int(count)


def _per_commit(count: int, commits: int) -> str:
    return f"{commits:,} transactions, {count / max(commits, 1):.1f} charges per commit"


def hot_account(ctx: Context) -> list[Row]:
    """Several writer processes on one account: they queue on its stream."""
    sizes = ctx.sizes
    count, seconds, commits = _concurrent(
        ctx, "hot", account_ids(1), sizes.hot_writers, sizes.hot_per_writer, threads=False
    )
    row = Row(f"hot account, {sizes.hot_writers} writer processes", ctx.kind, count, seconds,
              note=_per_commit(count, commits))
    return [row.against(ctx.baseline(SINGLE_ONE))]


def concurrent(ctx: Context) -> list[Row]:
    """Many writers over many accounts, each waiting for durability: processes, then threads.

    Processes are compared with the single-writer rate measured just before
    (``record_charge, N accounts``). Threads share one Ledger and take turns
    with one writer on that same Ledger (see :mod:`bench.pairing`), so their
    ratio is paired.
    """
    sizes = ctx.sizes
    accounts = account_ids(sizes.accounts)
    count, seconds, commits = _concurrent(ctx, "procs", accounts, sizes.writers, sizes.concurrent_per_writer, False)
    processes = Row(f"concurrent, {sizes.writers} writer processes, {len(accounts)} accounts", ctx.kind, count,
                    seconds, target=CONCURRENT_TARGET, note=_per_commit(count, commits))
    return [processes.against(ctx.baseline(SINGLE_MANY)), *_threads_paired(ctx, accounts)]


def _threads_paired(ctx: Context, accounts: Sequence[str]) -> list[Row]:
    """Threads, one writer, and the threads' ceiling, taking turns on one Ledger.

    The ceiling is one caller recording as many charges per call as there are
    threads: the same work with every commit carrying all of them and no
    hand-over between threads. Its ratio to the lone writer is about the most
    the threads could show on this machine, measured in the same run.
    """
    sizes = ctx.sizes
    together = list(charges("conc", sizes.writers * sizes.concurrent_per_writer, accounts))
    alone = list(charges("solo", sizes.single, accounts))
    grouped = list(charges("ceil", sizes.single, accounts))
    turns = PAIRED_TURNS
    with ctx.fresh("threads") as url:
        expected = open_accounts(url, accounts, "conc")
        ledger = Ledger.from_url(url)
        try:
            for account in accounts:
                ledger.account_totals(account)

            def one_writer(block: range) -> None:
                for i in block:
                    ledger.record_charge(**alone[i])

            def many_writers(block: range) -> float:
                return writers.threaded(ledger, writers.split(together[block.start : block.stop], sizes.writers))[1]

            def one_writer_grouped(block: range) -> None:
                for start in range(block.start, block.stop, sizes.writers):
                    ledger.record_charges(grouped[start : min(start + sizes.writers, block.stop)])

            turns_of = list(
                zip(_turns(len(together), turns), _turns(len(alone), turns), _turns(len(grouped), turns))
            )
            many_seconds, one_seconds, grouped_seconds = alternate(
                [
                    (partial(many_writers, many), partial(one_writer, one), partial(one_writer_grouped, group))
                    for many, one, group in turns_of
                ]
            )
            done_many, done_one, done_grouped = (sum(len(t[side]) for t in turns_of) for side in range(3))
        finally:
            ledger.close()
        for items, done in ((together, done_many), (alone, done_one), (grouped, done_grouped)):
            expected.merge(tally_of(items[:done]))
        check_recorded(url, accounts, expected)
        commits = _transactions(url, "conc-open-", only="conc-")
    single = Row(f"record_charge, 1 writer, interleaved ({len(accounts)} accounts)", ctx.kind, done_one, one_seconds,
                 key=f"{SINGLE_MANY}-paired")
    ceiling = Row(
        f"ceiling: 1 writer, record_charges of {sizes.writers}/call, interleaved", ctx.kind, done_grouped,
        grouped_seconds, note=f"the same work as {sizes.writers} threads sharing every commit, from one caller",
    ).against(single)
    row = Row(f"concurrent, {sizes.writers} writer threads in 1 process, {len(accounts)} accounts", ctx.kind,
              done_many, many_seconds, target=CONCURRENT_TARGET, note=_per_commit(done_many, commits))
    if ceiling.rate and row.rate:
        row = replace(row, note=f"{row.note}; {row.rate / ceiling.rate:.2f}x of the ceiling")
    return [single, ceiling, row.against(single)]


def _turns(count: int, turns: int) -> list[range]:
    """``count`` items in (at most) ``turns`` blocks."""
    return blocks_of(count, max(1, -(-count // turns)))
