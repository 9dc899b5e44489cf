"""The table (rich, for the terminal) and docs/BENCHMARKS.md (markdown) from the rows."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Iterable, Sequence

from rich.console import Console
from rich.table import Table

from bench.rows import Row, Target

COLUMNS = ("scenario", "store", "n", "seconds", "rate/s", "vs pgbench", "vs psycopg2", "baseline", "ratio", "target", "met?")
#: Everything below this line in an existing BENCHMARKS.md survives a re-run.
KEEP_MARKER = "<!-- notes below this line are kept when the benchmark rewrites this file -->"


def cells(row: Row) -> list[str]:
    """The row as the table's text cells."""
    if row.error:
        return [row.scenario, row.store, "", "", "", "", "", "", "", row.target.text if row.target else "", row.error]
    return [
        row.scenario,
        row.store,
        f"{row.n:,}" if row.n is not None else "",
        f"{row.seconds:.3f}" if row.seconds is not None else "",
        _rate(row),
        _versus(row, "vs_pgbench"),
        _versus(row, "vs_psycopg"),
        _baseline_name(row),
        f"{row.ratio:.2f}x" if row.ratio is not None else "",
        _target_text(row.target, row.store),
        _met(row.met) if row.target else "",
    ]


def _rate(row: Row) -> str:
    if "wal_per_item" in row.extra:  # a WAL row: its bytes per item are the figure (bench/wal.py)
        return f"{row.extra['wal_per_item']:,.0f} WAL bytes/{row.unit.rstrip('s')}"
    return f"{row.rate:,.0f} {row.unit}" if row.rate is not None else row.note


def _versus(row: Row, name: str) -> str:
    """The row's rate over a limit's (bench.runner.compare_with_limits), with the limit's clients."""
    if name not in row.extra:
        return ""
    return f"{row.extra[name]:.2f}x ({int(row.extra['limit_clients'])})"


def _baseline_name(row: Row) -> str:
    return row.baseline or ""


def _target_text(target: Target | None, store: str) -> str:
    if target is None:
        return ""
    return target.text if store in target.stores else f"({target.text}: PostgreSQL only)"


def _met(met: bool | None) -> str:
    return {True: "yes", False: "NO", None: "—"}[met]


def print_table(rows: Sequence[Row], console: Console | None = None, title: str = "Ledger benchmark") -> None:
    console = console or Console()
    table = Table(title=title, show_lines=False)
    for name in COLUMNS:
        table.add_column(name, justify="right" if name in ("n", "seconds", "rate/s", "ratio", "vs pgbench", "vs psycopg2") else "left")
    for row in rows:
        met = row.met
        style = "red" if row.error or met is False else ("green" if met else None)
        table.add_row(*cells(row), style=style)
    console.print(table)
    notes = [(row.scenario, row.store, row.note) for row in rows if row.note and row.rate is not None]
    for scenario, store, note in notes:
        console.print(f"[dim]{scenario} ({store}): {note}[/dim]")


# -- markdown ------------------------------------------------------------------


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    import sqlite3

    info = {
        "date (UTC)": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "CPU": f"{os.cpu_count()} cores (nproc), {_cpu_model()}",
        "memory": _memory(),
        "OS": platform.platform(),
        "Python": sys.version.split()[0],
        "SQLite (library)": sqlite3.sqlite_version,
    }
    for package in ("SQLAlchemy", "psycopg2-binary", "eventsourcing", "eventsourcing-sqlalchemy"):
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    info["commit"] = _commit()
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _commit() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "ledger", "projections", "bench"],
            cwd=root, capture_output=True, text=True, timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if head.returncode != 0:
        return "unknown"
    return head.stdout.strip() + (" + uncommitted changes" if dirty.stdout.strip() else "")


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table(rows: Iterable[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " | notes |", "|" + "---|" * (len(COLUMNS) + 1)]
    for row in rows:
        note = row.note if row.rate is not None or row.error else ""
        lines.append("| " + " | ".join(_md(c) for c in cells(row)) + f" | {_md(note)} |")
    return "\n".join(lines)


def targets_section(rows: Sequence[Row]) -> str:
    lines = []
    for row in rows:
        if row.target is None or row.store not in row.target.stores:
            continue
        figure = f"{row.ratio:.2f}x {row.baseline}" if row.ratio is not None else ""
        if row.rate is not None:
            figure = f"{row.rate:,.0f} {row.unit}/s" + (f", {figure}" if figure else "")
        lines.append(f"- **{_met(row.met)}** — {row.scenario} ({row.store}): {row.target.text}; measured {figure}"
                     + (f"; {row.note}" if row.note else ""))
    return "\n".join(lines) or "- (no targeted scenario ran)"


def write_markdown(
    path: Path,
    rows: Sequence[Row],
    *,
    command: str,
    stores: dict[str, dict[str, str]],
    sizes: str,
    elapsed: float,
) -> None:
    """Write BENCHMARKS.md, keeping hand-written notes under the marker."""
    kept = ""
    if path.exists():
        text = path.read_text()
        if KEEP_MARKER in text:
            kept = text.split(KEEP_MARKER, 1)[1].lstrip("\n")
    info = machine()
    machine_lines = "\n".join(f"| {k} | {_md(v)} |" for k, v in info.items())
    store_lines = "\n".join(
        f"| {name} | {_md(d.get('version', ''))} | {_md(d.get('durability', ''))} |" for name, d in stores.items()
    )
    body = f"""# Benchmarks

Generated by `bench` (see `bench/__init__.py`); rerun it to refresh this file.
Every figure is a ratio against a baseline measured **in the same run, on the
same store and connection type**, so the ratios carry over between machines
better than the rates do.

## Command

```
{command}
```

Sizes: {sizes}. Wall time of the whole run: {elapsed:.0f} s.

## Machine

| | |
|---|---|
{machine_lines}

| store | server / library version | durability settings |
|---|---|---|
{store_lines}

## Results

{markdown_table(rows)}

## Targets (from issue 9)

{targets_section(rows)}

## How it is measured

- Each scenario starts from an empty store: the PostgreSQL database's `public`
  schema is dropped and recreated, a SQLite scenario gets a new file (WAL,
  the ledger's own connection hooks) in a temporary directory.
- **Raw limit**: plain `INSERT`s through SQLAlchemy Core into a table with the
  event table's columns and unique index (`id`, `originator_id` uuid,
  `originator_version`, `topic`, ~500-byte JSON `state` shaped like a
  `ChargeRecorded` event), on an engine built by the ledger's own
  `make_datastore` (same driver, pool and pragmas). One row per commit, and
  `executemany` batches.
- **The database's limit** (PostgreSQL): `pgbench` itself runs a custom
  script (`bench/pgbench_raw_insert.sql`, prepared) inserting the same
  charge-sized row, one per transaction, at 1 client and at `writers`
  clients; beside it a bare psycopg2 loop (autocommit: one INSERT, one round trip, per row; 1 and
  `writers` processes). Every write row of one commit per charge gets its
  ratio to both (`vs pgbench`, `vs psycopg2`; the limit's clients in
  brackets); the SQLAlchemy raw baseline stays in `baseline`/`ratio`.
- **The database side of a charge**: `pgbench` calls the ledger's intake
  function exactly as the appender does (its prepared statement and the
  parameters of a captured `record_charge`, the id and account varying)
  while a ledger sequences the intake, against the raw-INSERT script at the
  same clients. **WAL per charge** is read back with `pg_walinspect` (this
  database's records only, full-page images aside) for the raw INSERT, the
  intake path and `record_charge`; its ratio is lower-is-better.
- **CRUD**: the replaced design: a `charge` row per call, committed; the
  aggregation job groups by account, user, UTC date and charge type, upserts
  `daily_billing_record` rows and deletes the charges it summed.
- **Ledger recording**: `record_charge` per call (it returns once the charge
  is durable), `record_charges` per batch; accounts are opened (one untimed
  charge each) and cached before the clock starts. Single and batch
  recording alternate in blocks with their raw baseline on the same store
  (`bench/pairing.py`), and end to end with the CRUD design. Concurrent
  writers are processes (each its own `Ledger`, compared with the
  single-writer rate) or threads sharing one `Ledger` (alternating with one
  writer on that `Ledger`), released together; the rate is all charges over
  first start to last finish; charges per commit count distinct `recorded_at`
  stamps in the charge-id index (one per transaction).
- **Projection / rebuild / compaction** read a log filled by
  `bench.seeding.seed_log`: the ledger's own aggregate events and charge-id
  index rows saved 5,000 charges per transaction (one in 200 reversed).
  Projection runs `Projector(ledger).run()` from position 0; the CRUD job
  aggregates the same charges. Rebuild runs `projections.rebuild` (scratch
  table, then a diff with the live records) in a freshly spawned process whose
  peak RSS (`VmHWM`) is reported. Compaction runs `ledger.compaction.compact`
  over the calendar month before last with no grace period.
- **Report**: a year of daily records written straight into the read-model
  table and the CRUD table; one account's year via `projections.reports.records`
  against the same query on the CRUD table.
- **Consistency** (checked on every run, never speed): charges recorded equal
  the accounts' totals and the charge-id index; projected records equal the
  charges net of reversals; a rebuild equals the live records; compaction
  changes no record and no total. Any mismatch fails the run.

{KEEP_MARKER}

{kept}"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body.rstrip() + "\n")
