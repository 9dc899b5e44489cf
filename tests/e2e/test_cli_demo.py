"""``ledger demo`` end to end, and the installed ``ledger`` script in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ledger_service.cli import app

runner = CliRunner()
SMALL = ["--charges", "600", "--accounts", "3", "--days", "4", "--seed", "7"]


def test_demo_runs_end_to_end_on_sqlite_and_audits_clean(tmp_path):
    result = runner.invoke(app, ["demo", "--dir", str(tmp_path / "demo"), *SMALL])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    out = result.stdout
    assert f"Demo ledger: sqlite:///{tmp_path / 'demo' / 'ledger.db'}" in out
    assert "recorded 600 charges over 4 days for 6 accounts (3 named, the rest profile accounts" in out
    assert "client retries recognised by charge id, none counted twice" in out
    assert "refused, nothing stored: charge 'ch_7_" in out
    assert "refused, nothing stored: invalid charge: charge_type: unknown charge type 'refund'" in out
    assert "recorded 25 late charges for " in out
    assert "budget acme-monthly: " in out and " refused before the call once it could not hold 400 more micros" in out
    assert "budgets and credits: 1 budget and 0 balances proved from the log, 0 mismatches" in out
    assert "Top accounts by tokens" in out and "Totals by provider and model" in out
    assert "audit CLEAN at position " in out
    again = runner.invoke(app, ["demo", "--dir", str(tmp_path / "demo"), *SMALL])
    assert again.exit_code == 2
    assert again.stderr == f"error: {tmp_path / 'demo' / 'ledger.db'} exists; the demo needs a fresh directory\n"


@pytest.mark.postgres
def test_demo_json_on_postgresql_then_refuses_a_store_with_events(postgres_url):
    result = runner.invoke(app, ["--database-url", postgres_url, "demo", "--json", *SMALL])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    figures = json.loads(result.stdout)
    assert figures["audit_clean"] is True
    assert figures["recorded"] == 600 and figures["late"] == 25
    assert figures["duplicates"] == 12 and len(figures["refused"]) == 2
    assert figures["totals"] == figures["account_totals"]
    gateway = figures["budget"]
    assert gateway["captured"] + gateway["refused"] == 20 and gateway["captured"] > 0 and gateway["refused"] > 0
    assert gateway["spent_micros"] <= gateway["limit_micros"] and gateway["held_micros"] == 0
    assert figures["totals"]["charges"] == 600 + 25 - 1 + gateway["captured"]  # one reversed
    assert figures["events_after"] < figures["events_before_compaction"]
    again = runner.invoke(app, ["--database-url", postgres_url, "demo", *SMALL])
    assert again.exit_code == 2
    assert again.stderr == f"error: the demo needs an empty store; {postgres_url} already holds events\n"


def test_demo_rejects_bad_sizes():
    result = runner.invoke(app, ["demo", "--days", "1"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: Invalid value for '--days': ")


# -- the installed script ------------------------------------------------------------


def ledger_script() -> str:
    script = shutil.which("ledger") or str(Path(sys.executable).with_name("ledger"))
    assert Path(script).exists(), "install the project: pip install -e '.[test]'"
    return script


def test_installed_script_records_imports_and_reports(tmp_path):
    env = {**os.environ, "LEDGER_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}"}
    run = lambda *args: subprocess.run([ledger_script(), *args], capture_output=True, text=True,  # noqa: E731
                                       env=env, cwd=tmp_path, timeout=120)
    recorded = run("record", "--account-id", "acme", "--user-id", "ada", "--charge-type", "completion",
                   "--prompt-tokens", "120", "--completion-tokens", "30", "--charge-id", "c1",
                   "--occurred-at", "2026-01-15T09:30:00+01:00")
    assert recorded.returncode == 0, recorded.stderr
    assert recorded.stdout == ("recorded charge c1 for account acme (user ada), occurred at "
                               "2026-01-15T08:30:00+00:00, unpriced\n")
    source = tmp_path / "more.jsonl"
    source.write_text(json.dumps({"account_id": "acme", "charge_type": "usage", "prompt_tokens": 5,
                                  "occurred_at": "2026-01-15T10:00:00Z"}) + "\n{oops\n")
    imported = run("import", str(source))
    assert imported.returncode == 3
    assert imported.stdout == "2 lines: 1 recorded, 0 already recorded, 1 rejected\n"
    assert "Traceback" not in imported.stderr
    report = run("report", "--format", "json", "--group-by", "account_id,billing_date")
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout) == [{
        "account_id": "acme", "user_id": None, "billing_date": "2026-01-15", "charge_type": None,
        "provider": None, "model": None, "charges": 2, "prompt_tokens": 125, "completion_tokens": 30,
        "total_tokens": 155, "cost_micros": 0, "unpriced_charges": 2}]


def catches(pid: int, signum: int) -> bool:
    """Whether the process has a handler for ``signum`` (Linux: SigCgt in /proc/PID/status)."""
    status = Path(f"/proc/{pid}/status").read_text()
    mask = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(mask & (1 << (signum - 1)))


def test_worker_prints_where_its_queue_lives_and_stops_on_sigterm(tmp_path):
    env = {**os.environ, "LEDGER_HUEY_URL": f"sqlite:///{tmp_path / 'queue.db'}",
           "LEDGER_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}"}
    worker = subprocess.Popen([ledger_script(), "worker", "--workers", "1", "--no-periodic"],
                              stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env, cwd=tmp_path)
    try:
        first = worker.stderr.readline()
        assert first == f"queue: SQLite file {tmp_path / 'queue.db'} (queue 'ledger')\n"
        for line in worker.stderr:
            if "Huey consumer started" in line:
                break
        while not catches(worker.pid, signal.SIGTERM):  # the consumer installs its handlers last
            assert worker.poll() is None
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
