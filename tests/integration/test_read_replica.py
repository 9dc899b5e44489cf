"""``LEDGER_READ_DATABASE_URL`` against the real server: reports read there, nothing else goes there.

A standby is stood in for by a second database on the same server (a
streaming standby is the failover trials' formation), reached through a
read-only session (``default_transaction_read_only``, as a hot standby
refuses writes). It holds a ledger of its own with different usage, so
whichever figures come back say which database answered.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import (
    PG_URL,
    database_beside,
    ensure_database,
    read_only,
    reset_postgres,
    scalar,
)

from ledger import Ledger, Settings
from ledger.store.replication_reads import make_read_engine, read_engine, reads_of
from projections import Projector
from projections.reports import account_summaries, records

ROOT = Path(__file__).resolve().parents[2]
READ_URL = database_beside("read")

pytestmark = pytest.mark.postgres


def charge(account: str, n: int, tokens: int) -> dict[str, object]:
    return {"account_id": account, "user_id": "ada", "charge_type": "usage", "charge_id": f"{account}-{n}",
            "prompt_tokens": tokens, "occurred_at": "2026-11-20T12:00:00Z"}


def count(url: str, table: str) -> int:
    return scalar(url, f"SELECT count(*) FROM {table}")


@pytest.fixture
def stores() -> Iterator[tuple[Ledger, Ledger]]:
    """(a ledger on the primary reading from the stand-in standby, a ledger of the standby's own).

    The standby holds account "on-standby" (7 tokens), projected; the primary will hold what each test records.
    """
    reset_postgres(PG_URL)
    ensure_database(READ_URL)
    reset_postgres(READ_URL)
    with Ledger(Settings(database_url=READ_URL)) as standby:
        standby.record_charge(**charge("on-standby", 1, 7))
        Projector(standby).run()
    reading = Ledger(Settings(database_url=PG_URL, read_database_url=read_only(READ_URL)))
    own = Ledger(Settings(database_url=READ_URL))
    try:
        yield reading, own
    finally:
        reading.close()
        own.close()


def test_reports_read_the_standby_and_writes_and_the_projector_stay_on_the_primary(stores):
    ledger, standby = stores
    events_there = count(READ_URL, "ledger_events")
    ledger.record_charges([charge("on-primary", n, 100) for n in range(5)])
    Projector(ledger).run()

    shown = records(ledger, group_by=["account_id"])
    assert shown == records(standby, group_by=["account_id"])
    assert [row["account_id"] for row in shown] == ["on-standby"]
    assert [s["account_id"] for s in account_summaries(ledger)] == ["on-standby"]

    # The charges and the projection went to the primary, and nothing to the read database.
    with Ledger(Settings(database_url=PG_URL)) as primary:
        on_primary = records(primary, group_by=["account_id"])
    assert [(row["account_id"], row["prompt_tokens"]) for row in on_primary] == [("on-primary", 500)]
    assert count(READ_URL, "ledger_events") == events_there
    assert count(PG_URL, "daily_billing_records") == 1


def test_totals_budgets_and_reservations_stay_on_the_primary(stores):
    ledger, _standby = stores
    ledger.set_budget("cap", account_id="on-primary", limit_tokens=1_000)
    ledger.record_charge(**{**charge("on-primary", 1, 300), "occurred_at": None})  # now: in the budget's month
    Projector(ledger).run()
    held = ledger.reserve("on-primary", estimate_tokens=200)
    status = ledger.budget_status("cap")
    assert (status.spent, status.held, status.limit) == (300, 200, 1_000)
    assert ledger.account_totals("on-primary").prompt_tokens == 300
    ledger.release(held.reservation_id)
    assert ledger.budget_status("cap").held == 0
    assert records(ledger, account_id="on-primary") == []  # the read database has none of it


def test_every_session_on_the_read_engine_refuses_writes_even_on_a_writable_server():
    reset_postgres(PG_URL)
    with Ledger(Settings(database_url=PG_URL, read_database_url=PG_URL)) as ledger:
        engine = read_engine(ledger)
        assert engine is not None and engine is read_engine(ledger)  # one per ledger engine
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SHOW transaction_read_only").scalar_one() == "on"
            with pytest.raises(sa.exc.InternalError, match="read-only transaction"):
                connection.exec_driver_sql("CREATE TABLE written_on_the_read_side (x int)")


def test_without_a_read_url_reports_read_the_primary(stores):
    ledger, _standby = stores
    ledger.record_charge(**charge("on-primary", 1, 11))
    with Ledger(Settings(database_url=PG_URL)) as primary:
        assert read_engine(primary) is None
        Projector(primary).run()
        assert [r["account_id"] for r in records(primary, group_by=["account_id"])] == ["on-primary"]
        assert reads_of(primary).source == "primary" and reads_of(primary).summary == "reads from the primary"


def test_the_read_side_says_where_it_reads_and_how_far_behind(stores):
    ledger, _standby = stores
    reads = reads_of(ledger)
    # Not in recovery: a separate database, not a streaming standby, so nothing to be behind.
    assert (reads.source, reads.lag_seconds, reads.error) == ("read database", None, None)
    assert "not a standby" in reads.summary
    gone = Ledger(Settings(database_url=PG_URL, read_database_url="postgresql+psycopg2://postgres@127.0.0.1:1/x",
                           connect_timeout_seconds=2))
    try:
        unreachable = reads_of(gone)
    finally:
        gone.close()
    assert unreachable.error and "unreachable" in unreachable.summary


def test_a_read_url_beside_sqlite_is_refused_naming_the_setting(tmp_path):
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'ledger.db'}", read_database_url=READ_URL)
    with pytest.raises(ValueError, match=r"read_database_url \(LEDGER_READ_DATABASE_URL\)"):
        make_read_engine(settings)
    with Ledger(settings) as ledger, pytest.raises(ValueError, match="SQLite is embedded"):
        records(ledger)


def test_ledger_report_reads_the_standby_from_the_environment(stores, tmp_path):
    ledger, _standby = stores
    ledger.record_charge(**charge("on-primary", 1, 13))
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "LEDGER_READ_DATABASE_URL": read_only(READ_URL)}
    done = subprocess.run([sys.executable, "-m", "ledger_service.cli", "--database-url", PG_URL, "report",
                           "--group-by", "account_id", "--format", "csv"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert "on-standby" in done.stdout and "on-primary" not in done.stdout
    assert count(PG_URL, "daily_billing_records") == 1  # it projected on the primary first
