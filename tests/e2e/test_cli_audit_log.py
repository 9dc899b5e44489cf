"""``ledger audit`` keeps its verdict, so the dashboard can say when the last audit ran and what it found."""

from __future__ import annotations

from typer.testing import CliRunner

from ledger import Ledger, Settings
from ledger_service.audits import last_audit
from ledger_service.cli import app

runner = CliRunner()


def test_each_audit_is_kept_and_the_last_one_is_read_back(store_url):
    ledger = Ledger(Settings(database_url=store_url))
    try:
        assert last_audit(ledger) is None
        recorded = runner.invoke(app, ["--database-url", store_url, "record", "--account-id", "acme",
                                       "--charge-type", "usage", "--prompt-tokens", "5"])
        assert recorded.exit_code == 0, recorded.stderr
        for _ in range(2):
            assert runner.invoke(app, ["--database-url", store_url, "audit"]).exit_code == 0
        kept = last_audit(ledger)
        assert kept is not None and kept.clean and kept.differences == 0 and kept.position >= 1
        assert kept.finished_at.tzinfo is not None
    finally:
        ledger.close()
