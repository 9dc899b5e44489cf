"""Run the scenarios on each store, baselines first; print the table; optionally write the docs."""

from __future__ import annotations

import re
import shlex
import sys
import time
import traceback
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable, Sequence

import sqlalchemy as sa
from rich.console import Console

from bench import (
    budgets,
    endtoend,
    failover,
    http,
    http_wrk,
    intake_sql,
    limit,
    otlp,
    pgbench,
    processes,
    readside,
    recording,
    scaling,
    taskpath,
    wal,
)
from bench.context import Context
from bench.report import print_table, write_markdown
from bench.rows import POSTGRESQL, BenchmarkFailed, Inconsistent, Row
from bench.sizes import Sizes
from bench.stores import Store

Scenario = Callable[[Context], list[Row]]

#: In run order: every baseline before the rows that are compared with it.
SCENARIOS: dict[str, Scenario] = {
    "raw": limit.raw_limit,
    "pgbench": pgbench.pgbench_limit,
    "intake-sql": intake_sql.intake_sql,
    "wal": wal.wal,
    "crud": limit.crud,
    "single": recording.single,
    "batch": recording.batch,
    "taskpath": taskpath.task_path,
    "hot": recording.hot_account,
    "concurrent": recording.concurrent,
    "scaling": scaling.scaling,
    "budgets": budgets.budgets,
    "e2e": endtoend.end_to_end,
    "projection": readside.projection_and_rebuild,
    "compaction": readside.compaction,
    "report": readside.report,
    "http": http.http_api,
    "http-wrk": http_wrk.http_api_wrk,
    "otlp": otlp.otlp_ingestion,
    "failover": failover.failover,
}
#: Scenarios that start servers of their own (a failover formation): run only when --only names them.
ON_REQUEST = frozenset({"failover"})


def run(
    database_url: str | Sequence[str],
    *,
    quick: bool = False,
    sizes: Sizes | None = None,
    charges: int | None = None,
    only: Sequence[str] | None = None,
    write_docs: Path | str | None = None,
    console: Console | None = None,
    command: str | None = None,
) -> list[Row]:
    """Run the benchmark on one or more stores and return its rows.

    ``quick`` picks small sizes (a smoke test: completion and consistency);
    ``sizes`` overrides them wholesale, ``charges`` just the projection/rebuild
    log. ``only`` names scenarios (see ``SCENARIOS``). Raises
    :class:`BenchmarkFailed` after printing the table if any scenario was
    inconsistent or crashed; never because of speed.
    """
    urls = [database_url] if isinstance(database_url, str) else list(database_url)
    chosen = sizes or (Sizes.quick() if quick else Sizes.full())
    if charges is not None:
        chosen = chosen.with_overrides(charges=charges)
    names = list(only) if only else [name for name in SCENARIOS if name not in ON_REQUEST]
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        raise ValueError(f"unknown scenarios {unknown}; choose from {list(SCENARIOS)}")
    names = [name for name in SCENARIOS if name in names]  # run order: baselines first, whatever --only's order
    if any(Store(url).kind == POSTGRESQL for url in urls) and set(names) & set(pgbench.NEEDS_PGBENCH):
        pgbench.require_pgbench()  # a set-up error, before anything runs
    if chosen.fork_starts:
        processes.preload(processes.SERVICE_MODULES)
    console = console or Console(width=None if sys.stdout.isatty() else 220)
    began = time.perf_counter()
    rows: list[Row] = []
    problems: list[str] = []
    described: dict[str, dict[str, str]] = {}
    for url in urls:
        store = Store(url, recreate_schema=chosen.recreate_schema)
        described[store.kind] = store.describe()
        ctx = Context(store, chosen, quick=quick, log=lambda message: console.log(f"  {message}"))
        measured: list[tuple[str, Row]] = []
        for name in names:
            console.log(f"[bold]{store.kind}[/bold]: {name}")
            started = time.perf_counter()
            measured += [(name, row) for row in _run_one(name, SCENARIOS[name], ctx, problems)]
            console.log(f"  {name} took {time.perf_counter() - started:.1f} s")
        rows.extend(compare_with_limits(measured, ctx))
    elapsed = time.perf_counter() - began
    print_table(rows, console)
    if write_docs is not None:
        write_markdown(
            Path(write_docs),
            rows,
            command=command or default_command(urls, quick, charges, only, write_docs),
            stores=described,
            sizes=_sizes_text(chosen, quick),
            elapsed=elapsed,
        )
        console.log(f"wrote {write_docs}")
    if problems:
        raise BenchmarkFailed(problems)
    return rows


def _run_one(name: str, scenario: Scenario, ctx: Context, problems: list[str]) -> list[Row]:
    try:
        produced = scenario(ctx)
    except Inconsistent as exc:
        problems.append(f"{ctx.kind} {name}: INCONSISTENT: {exc}")
        return [Row(name, ctx.kind, error=f"INCONSISTENT: {exc}")]
    except Exception as exc:  # noqa: BLE001 - reported, and the run fails at the end
        problems.append(f"{ctx.kind} {name}: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        return [Row(name, ctx.kind, error=f"error: {type(exc).__name__}: {exc}"[:200])]
    for row in produced:
        ctx.remember(row)
    return produced


#: Scenarios whose rows write one charge (or row) per commit per writer: each is
#: compared with pgbench and psycopg2 at 1 client, or at ``writers`` if it has several.
WRITE_SCENARIOS = frozenset({"raw", "pgbench", "intake-sql", "crud", "single", "hot", "concurrent", "scaling", "http", "http-wrk"})
#: Rows of those scenarios that are not one commit per charge per writer.
_NOT_ONE_PER_COMMIT = re.compile(r"aggregation|end to end|/call|rows/commit")
_WRITERS = re.compile(r"(\d+) (?:writer )?(?:processes|threads|clients|HTTP clients)\b")


def writers_of(row: Row) -> int:
    """How many writers a row's scenario ran (1 unless its name says so)."""
    match = _WRITERS.search(row.scenario)
    return int(match.group(1)) if match else 1


def compare_with_limits(measured: Sequence[tuple[str, Row]], ctx: Context) -> list[Row]:
    """Every write row with its ratio to pgbench and to psycopg2 (``extra``: vs_pgbench, vs_psycopg).

    A row of one writer is compared with the 1-client limits, a row of
    several with the ``writers``-client ones (its ``limit_clients`` says which).
    """
    limits = {
        1: (ctx.baseline(pgbench.PGBENCH_ONE), ctx.baseline(pgbench.PSYCOPG_ONE)),
        ctx.sizes.writers: (ctx.baseline(pgbench.PGBENCH_MANY), ctx.baseline(pgbench.PSYCOPG_MANY)),
    }
    out = []
    for name, row in measured:
        if name in WRITE_SCENARIOS and row.rate is not None and not row.error and not _NOT_ONE_PER_COMMIT.search(row.scenario):
            clients = 1 if writers_of(row) == 1 else ctx.sizes.writers
            extra = dict(row.extra)
            for field, limit in zip(("vs_pgbench", "vs_psycopg"), limits[clients]):
                if limit is not None and limit.rate and limit.key != row.key:
                    extra[field] = row.rate / limit.rate
                    extra["limit_clients"] = clients
            row = replace(row, extra=extra)
        out.append(row)
    return out


def _sizes_text(sizes: Sizes, quick: bool) -> str:
    text = ", ".join(f"{k}={v}" if isinstance(v, bool) else f"{k}={v:,}" for k, v in asdict(sizes).items())
    return ("quick: " if quick else "") + text


def _safe(url: str) -> str:
    return sa.engine.make_url(url).render_as_string(hide_password=True)


def default_command(
    urls: Sequence[str],
    quick: bool,
    charges: int | None,
    only: Sequence[str] | None,
    write_docs: Path | str | None,
    options: Sequence[str] = (),
) -> str:
    """The ``python -m bench`` line that repeats this run (``options``: extra size flags)."""
    parts = ["python", "-m", "bench"]
    for url in urls:
        parts += ["--database-url", _safe(url)]
    if quick:
        parts.append("--quick")
    if charges is not None:
        parts += ["--charges", str(charges)]
    parts += list(options)
    for name in only or ():
        parts += ["--only", name]
    if write_docs is not None:
        parts += ["--write-docs", str(write_docs)]
    return shlex.join(parts)
