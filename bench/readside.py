"""Read-side scenarios: projection, rebuild, compaction of a month, report queries.

The log is filled with :func:`bench.seeding.seed_log` (the ledger's own
events and index rows, written many per transaction); only the operation
named by the scenario is timed. Modules that have not landed yet give a row
saying so instead of failing the run.
"""

from __future__ import annotations

import multiprocessing
import resource
import time
from datetime import date, datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa

from bench import baselines, processes
from bench.checks import account_totals, expect, projected_totals
from bench.context import Context
from bench.rows import Inconsistent, Row, Target, missing
from bench.seeding import fingerprint, seed_log
from bench.stores import engine_for
from bench.workload import Tally, account_ids, charges
from ledger import Ledger

PROJECTION = "projection"
CRUD_AGGREGATE_BIG = "crud-aggregate-big"
REPORT_CRUD = "report-crud"
REPORT_CRUD_SUMMARY = "report-crud-summary"
#: One charge in this many is reversed in seeded logs.
REVERSE_EVERY = 200

PROJECTION_TARGET = Target(
    "≥ 100,000 events/s and ≥ 1/3 of CRUD aggregation",
    lambda row: row.rate >= 100_000 and row.ratio >= 1 / 3,  # type: ignore[operator]
)
REBUILD_TARGET = Target(
    "< 60 s and peak RSS < 300 MB (1M events)",
    lambda row: row.seconds < 60 and row.extra["peak_rss_mb"] < 300,  # type: ignore[operator]
)
COMPACTION_TARGET = Target("≤ 1% of the month's raw rows left", lambda row: row.extra["left"] <= 0.01)


def _modules(*names: str) -> str | None:
    """The first module that cannot be imported, if any."""
    import importlib

    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            return name
    return None


def _days_ago(days: int) -> datetime:
    today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days)


# -- projection and rebuild ----------------------------------------------------


def projection_and_rebuild(ctx: Context) -> list[Row]:
    """Project N charges from position 0; the CRUD job over the same charges; rebuild in a child process."""
    n = ctx.sizes.charges
    names = (f"projection of {n:,} charges", f"CRUD aggregation of {n:,} charges", f"rebuild of {n:,} charges")
    absent = _modules("projections")
    if absent:
        return [missing(name, ctx.kind, absent) for name in names]
    from projections import Projector

    accounts = account_ids(ctx.sizes.accounts)
    start = _days_ago(30)
    with ctx.fresh("projection") as url:
        ledger = Ledger.from_url(url, aggregate_cache_size=len(accounts) * 2)
        try:
            ctx.log(f"seeding {n:,} charges")
            began = time.perf_counter()
            expected = seed_log(ledger, charges("proj", n, accounts, start=start, days=30), reverse_every=REVERSE_EVERY)
            seed_seconds = time.perf_counter() - began
            head = ledger.log_position()
            projector = Projector(ledger)
            projector.prepare()
            ctx.log("projecting")
            began = time.perf_counter()
            events = projector.run()
            seconds = time.perf_counter() - began
            if events != head:
                raise Inconsistent(f"projector consumed {events} notifications, the log holds {head}")
            expect("projected records", projected_totals(ledger), expected)
            expect("account totals", account_totals(ledger, accounts), expected)
        finally:
            ledger.close()
        ctx.log("CRUD aggregation of the same charges")
        crud_seconds = _crud_aggregate_of(url, charges("proj", n, accounts, start=start, days=30))
        ctx.log("rebuilding in a child process")
        rebuilt = _rebuild_in_child(url, fresh=not ctx.sizes.fork_starts)
    crud = Row(names[1], ctx.kind, n, crud_seconds, key=CRUD_AGGREGATE_BIG)
    seeded = Row(
        f"set-up: seed the log ({n:,} charges)", ctx.kind, n, seed_seconds,
        note="bench.seeding: the ledger's events + index rows, 10,000 charges/transaction (not a ledger API)",
    )
    projected = Row(
        names[0], ctx.kind, events, seconds, "events", target=PROJECTION_TARGET, key=PROJECTION,
        note=f"{events - n:,} of the events are account openings and reversals",
    ).against(crud)
    if rebuilt["differences"]:
        raise Inconsistent(f"rebuild differs from the live records in {rebuilt['differences']} keys")
    if rebuilt["events"] != head:
        raise Inconsistent(f"rebuild consumed {rebuilt['events']} notifications, the log holds {head}")
    rebuild_row = Row(
        names[2], ctx.kind, int(rebuilt["events"]), rebuilt["seconds"], "events", target=REBUILD_TARGET,
        note=f"peak RSS {rebuilt['peak_rss_mb']:.0f} MB (process at start {rebuilt['start_rss_mb']:.0f} MB)",
        extra={"peak_rss_mb": rebuilt["peak_rss_mb"]},
    )
    return [seeded, crud, projected, rebuild_row]


def _crud_aggregate_of(url: str, items: Any) -> float:
    engine = engine_for(url)
    try:
        baselines.create_tables(engine)
        gross = Tally()

        def counted() -> Any:
            for item in items:
                gross.add(item)
                yield item

        baselines.crud_insert_batched(engine, counted())
        seconds = baselines.crud_aggregate(engine)
        baselines.check_crud(engine, gross)
    finally:
        engine.dispose()
    return seconds


def _rebuild_in_child(url: str, fresh: bool = True) -> dict[str, float]:
    """Rebuild in a fresh process so its peak RSS is the rebuild's alone.

    ``fresh=False`` (``Sizes.fork_starts``: small logs, whose peak RSS says nothing): a
    child of the bench's fork server, started in milliseconds instead of a new interpreter's second.
    """
    context = multiprocessing.get_context("spawn") if fresh else processes.fork_context()
    with context.Pool(1) as pool:
        return pool.apply(rebuild_child, (url,))


def _rss_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rebuild_child(url: str) -> dict[str, float]:
    """Runs in the child: rebuild into scratch, diff with live; time and peak memory."""
    from projections import rebuild

    ledger = Ledger.from_url(url)
    try:
        start_rss = _rss_mb("VmRSS")
        began = time.perf_counter()
        result = rebuild(ledger)
        seconds = time.perf_counter() - began
    finally:
        ledger.close()
    return {
        "seconds": seconds,
        "events": result.events,
        "differences": result.difference_count,
        "peak_rss_mb": _rss_mb("VmHWM"),
        "start_rss_mb": start_rss,
    }


# -- compaction ------------------------------------------------------------------


def _closed_month() -> tuple[date, date]:
    """The calendar month before last: (first day, first day of the next month)."""
    today = datetime.now(timezone.utc).date()
    first_this = today.replace(day=1)
    first_last = (first_this - timedelta(days=1)).replace(day=1)
    first = (first_last - timedelta(days=1)).replace(day=1)
    return first, first_last


def _raw_events(ledger: Ledger) -> int:
    from ledger.compaction import RAW_TOPICS

    events = ledger.store.events_table
    with ledger.store.transaction(commit=False) as session:
        count = session.execute(
            sa.select(sa.func.count()).select_from(events).where(events.c.topic.in_(RAW_TOPICS))
        ).scalar_one()
    return int(count)


def compaction(ctx: Context) -> list[Row]:
    """Roll up, snapshot and prune a closed month; nothing billing reads may change."""
    name = "compaction of a closed month"
    absent = _modules("ledger.compaction", "projections")
    if absent:
        return [missing(name, ctx.kind, absent)]
    from ledger.compaction import compact
    from projections import Projector, rebuild
    from projections.reports import records

    first, after = _closed_month()
    days = (after - first).days
    accounts = account_ids(ctx.sizes.accounts)
    start = datetime(first.year, first.month, first.day, tzinfo=timezone.utc)
    with ctx.fresh("compaction") as url:
        ledger = Ledger.from_url(url, aggregate_cache_size=len(accounts) * 2)
        try:
            items = charges("month", ctx.sizes.month_charges, accounts, start=start, days=days)
            expected = seed_log(ledger, items, reverse_every=REVERSE_EVERY)
            projector = Projector(ledger)
            projector.run()
            before_records = fingerprint(records(ledger))
            raw_before = _raw_events(ledger)
            began = time.perf_counter()
            result = compact(ledger, before=after, projected_position=projector.position(), grace=timedelta(0))
            seconds = time.perf_counter() - began
            raw_after = _raw_events(ledger)
            projector.run()
            if fingerprint(records(ledger)) != before_records:
                raise Inconsistent("daily billing records changed when the month was compacted")
            expect("projected records after compaction", projected_totals(ledger), expected)
            expect("account totals after compaction", account_totals(ledger, accounts), expected)
            audit = rebuild(ledger)
            if not audit.clean:
                raise Inconsistent(f"rebuild after compaction differs in {audit.difference_count} keys")
        finally:
            ledger.close()
    left = raw_after / raw_before if raw_before else 0.0
    return [
        Row(
            name, ctx.kind, raw_before, seconds, "events", target=COMPACTION_TARGET,
            note=f"{raw_after:,} raw rows left ({left:.2%}); {result.days:,} account-days rolled up, "
            f"{result.bytes_pruned / 1e6:.1f} MB pruned",
            extra={"left": left},
        )
    ]


# -- report queries --------------------------------------------------------------

#: (user, charge type, provider, model): one daily record each, per account and day.
REPORT_GROUPS = (
    ("user-0", "completion", "openai", "gpt-4o"),
    ("user-0", "tool", "", ""),
    ("user-1", "completion", "anthropic", "claude-3-5-sonnet"),
    ("user-1", "usage", "", ""),
)


def _year_of_records(engine: sa.engine.Engine, accounts: list[str], first: date) -> Tally:
    """A year of daily records in both the projection's table and the CRUD one."""
    from ledger.store.schema import daily_billing_records, ensure_schema

    ensure_schema(engine)
    baselines.create_tables(engine)
    now = datetime.now(timezone.utc)
    per_account = Tally()
    with engine.connect() as connection:
        for index, account in enumerate(accounts):
            live, crud = [], []
            for offset in range(365):
                day = first + timedelta(days=offset)
                for g, (user, charge_type, provider, model) in enumerate(REPORT_GROUPS):
                    count = 1 + (offset + g) % 9
                    prompt, completion = 300 * count, 80 * count
                    figures = {"charges": count, "prompt_tokens": prompt, "completion_tokens": completion,
                               "total_tokens": prompt + completion}
                    if index == 0:
                        per_account.merge(Tally(**figures))
                    live.append({"account_id": account, "billing_date": day, "user_id": user, "charge_type": charge_type,
                                 "provider": provider, "model": model, "updated_at": now, **figures})
                    crud.append({"account_id": account, "user_id": user, "date": day, "charge_type": charge_type, **figures})
            connection.execute(daily_billing_records.insert(), live)
            connection.execute(baselines.crud_daily.insert(), crud)
            connection.commit()
    return per_account


def report(ctx: Context) -> list[Row]:
    """One account's year of daily records, and every account's summary: ours vs the CRUD tables."""
    q = ctx.sizes.report_queries
    names = ("report: one account's year", "report: all accounts' totals")
    absent = _modules("projections.reports")
    if absent:
        return [missing(name, ctx.kind, absent) for name in names]
    from projections.reports import account_summaries, records

    accounts = account_ids(ctx.sizes.report_accounts)
    first = _days_ago(365).date()
    last = first + timedelta(days=364)
    with ctx.fresh("report") as url:
        ledger = Ledger.from_url(url)
        engine = ledger.store.engine
        assert isinstance(engine, sa.engine.Engine)
        try:
            per_account = _year_of_records(engine, accounts, first)
            picks = [accounts[i % len(accounts)] for i in range(q)]
            records(ledger, account_id=picks[0], start=first, end=last)  # warm caches
            began = time.perf_counter()
            for account in picks:
                rows = records(ledger, account_id=account, start=first, end=last)
            ours = time.perf_counter() - began
            _expect_year(rows, per_account)
            crud_seconds = _crud_year_queries(engine, picks, first, last, per_account)
            began = time.perf_counter()
            summaries = account_summaries(ledger)
            ours_summary = time.perf_counter() - began
            if len(summaries) != len(accounts) or summaries[0]["charges"] != per_account.charges:
                raise Inconsistent("account summaries do not match the year of records written")
            crud_summary = _crud_summary(engine, len(accounts))
        finally:
            ledger.close()
    crud_year = Row("CRUD report: one account's year", ctx.kind, q, crud_seconds, "queries", key=REPORT_CRUD)
    crud_all = Row("CRUD report: all accounts' totals", ctx.kind, 1, crud_summary, "queries", key=REPORT_CRUD_SUMMARY)
    size = f"{len(accounts)} accounts x 365 days x {len(REPORT_GROUPS)} groups"
    return [
        crud_year,
        Row(names[0], ctx.kind, q, ours, "queries", note=f"{365 * len(REPORT_GROUPS)} records per query; {size}").against(crud_year),
        crud_all,
        Row(names[1], ctx.kind, 1, ours_summary, "queries", note=size).against(crud_all),
    ]


def _expect_year(rows: list[dict[str, Any]], per_account: Tally) -> None:
    got = Tally()
    for row in rows:
        got.merge(Tally(row["charges"], row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]))
    expect("one account's year", got, per_account)
    if len(rows) != 365 * len(REPORT_GROUPS):
        raise Inconsistent(f"one account's year has {len(rows)} records, expected {365 * len(REPORT_GROUPS)}")


def _crud_year_queries(engine: sa.engine.Engine, picks: list[str], first: date, last: date, per_account: Tally) -> float:
    table = baselines.crud_daily
    query = (
        sa.select(table)
        .where(table.c.account_id == sa.bindparam("account"), table.c.date.between(first, last))
        .order_by(table.c.date, table.c.user_id, table.c.charge_type)
    )
    with engine.connect() as connection:
        connection.execute(query, {"account": picks[0]}).all()
        began = time.perf_counter()
        for account in picks:
            rows = connection.execute(query, {"account": account}).all()
        seconds = time.perf_counter() - began
        connection.rollback()
    _expect_year([dict(row._mapping) for row in rows], per_account)
    return seconds


def _crud_summary(engine: sa.engine.Engine, accounts: int) -> float:
    table = baselines.crud_daily
    query = (
        sa.select(table.c.account_id, *(sa.func.sum(table.c[n]) for n in baselines.FIGURES))
        .group_by(table.c.account_id)
        .order_by(table.c.account_id)
    )
    with engine.connect() as connection:
        began = time.perf_counter()
        rows = connection.execute(query).all()
        seconds = time.perf_counter() - began
        connection.rollback()
    if len(rows) != accounts:
        raise Inconsistent(f"CRUD summary has {len(rows)} accounts, expected {accounts}")
    return seconds
