"""The benchmark as a smoke test: every scenario completes and its numbers agree.

Nothing here looks at speed. Sizes are smaller than ``--quick`` to keep the
suite fast: one turn of each paired kind, two writers, five accounts, wrk
turns of a fraction of a second, the PostgreSQL schema made once and
emptied between scenarios, and ``ledger serve``, the worker and the rebuild
forked from the bench's fork server instead of started as new interpreters;
``python -m bench --quick`` runs the same code a little longer.
"""

from __future__ import annotations

import os

import pytest
from rich.console import Console

import bench
from bench.checks import check_recorded
from bench.rows import Inconsistent
from bench.workload import Tally, account_ids, charges, tally_of
from ledger import Ledger

TINY = bench.Sizes(
    turns=1,
    wrk_seconds=0.2,
    recreate_schema=False,
    fork_starts=True,
    single=30,
    batch=1_000,
    batch_size=500,
    hot_per_writer=8,
    concurrent_per_writer=8,
    scaling_per_writer=8,
    charges=1_000,
    month_charges=800,
    report_accounts=3,
    report_queries=3,
    accounts=5,
    writers=2,
    hot_writers=2,
)


def test_every_scenario_completes_consistently(store_url, tmp_path, monkeypatch):
    # The task path's Redis queue: the jobs tests' own database.
    monkeypatch.setenv("LEDGER_BENCH_REDIS_URL", os.environ.get("LEDGER_TEST_JOBS_REDIS_URL", "redis://127.0.0.1:6379/14"))
    docs = tmp_path / "BENCHMARKS.md"
    with open(tmp_path / "out.txt", "w") as out:
        rows = bench.run(store_url, sizes=TINY, write_docs=docs, console=Console(file=out))

    assert [row.error for row in rows if row.error] == []
    assert [row.scenario for row in rows if "n/a" in row.note] == []
    timed = [row for row in rows if row.rate is not None]
    assert len(timed) == len(rows)
    by_key = {row.key: row for row in rows if row.key}
    assert {"raw-single", "raw-batch", "crud-insert", "crud-aggregate", "crud-e2e", "projection"} <= set(by_key)
    # every ledger row with a baseline got its ratio from this very run
    assert all(row.ratio is not None for row in rows if row.baseline)
    compaction = next(row for row in rows if row.scenario.startswith("compaction"))
    assert compaction.n and compaction.extra["left"] <= 1.0
    text = docs.read_text()
    assert "## Results" in text and "## Machine" in text
    assert all(row.scenario in text for row in rows)
    if store_url.startswith("postgresql"):
        # the database's own limit ran in the same run, and every one-per-commit write row is compared with it
        assert {"pgbench-1", "pgbench-n", "psycopg-1", "psycopg-n", "intake-sql", "wal-raw"} <= set(by_key)
        assert by_key["intake-sql"].baseline and by_key["intake-sql"].extra["vs_pgbench"] > 0
        # where the CPU goes: pgbench's own share beside the database's, for the limit and the intake alike
        assert all("CPU per row: pgbench" in by_key[key].note for key in ("pgbench-1", "pgbench-n"))
        assert "CPU per charge: pgbench" in by_key["intake-sql"].note
        scaled = next(row for row in rows if row.scenario.startswith(f"record_charge, {TINY.writers} processes"))
        assert scaled.extra["vs_pgbench"] > 0 and scaled.extra["vs_psycopg"] > 0
        assert scaled.extra["limit_clients"] == TINY.writers
        single = by_key["ledger-single-100"]
        assert single.extra["limit_clients"] == 1 and single.extra["vs_psycopg"] > 0
        walled = [row for row in rows if "wal_per_item" in row.extra]
        assert len(walled) == 3 and all(row.extra["wal_per_item"] > 0 for row in walled)
        assert "vs pgbench" in text and "WAL bytes/charge" in text
    else:
        assert not any(row.scenario.startswith(("pgbench", "psycopg2", "WAL")) for row in rows)


def test_a_wrong_count_is_reported_as_inconsistent(store_url):
    """The consistency check bites: a store holding fewer charges than claimed fails."""
    accounts = account_ids(3)
    items = list(charges("check", 12, accounts))
    ledger = Ledger.from_url(store_url)
    try:
        ledger.record_charges(items)
    finally:
        ledger.close()
    check_recorded(store_url, accounts, tally_of(items))
    claimed = tally_of(items)
    claimed.merge(Tally(1, 1, 1, 2))
    with pytest.raises(Inconsistent):
        check_recorded(store_url, accounts, claimed)


@pytest.mark.postgres
def test_a_missing_database_is_one_clear_line_not_a_traceback():
    from typer.testing import CliRunner

    from bench.__main__ import app

    url = "postgresql+psycopg2://postgres@127.0.0.1:5432/ledger_bench_no_such_database"
    result = CliRunner().invoke(app, ["--database-url", url, "--quick", "--only", "raw"])
    assert result.exit_code == 2
    assert 'database "ledger_bench_no_such_database" does not exist' in result.output
    assert "Traceback" not in result.output


@pytest.mark.postgres
def test_a_missing_pgbench_is_one_clear_line_and_the_set_up_exit_code(monkeypatch):
    from typer.testing import CliRunner

    from bench.__main__ import app

    monkeypatch.setenv("LEDGER_BENCH_PGBENCH", "/nonexistent/pgbench")
    url = "postgresql+psycopg2://postgres@127.0.0.1:5432/ledger_bench_not_reached"
    result = CliRunner().invoke(app, ["--database-url", url, "--quick", "--only", "pgbench"])
    assert result.exit_code == 2
    assert result.output.startswith("error: pgbench not found") and result.output.count("\n") == 1
    assert "Traceback" not in result.output
