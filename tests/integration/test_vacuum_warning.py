"""The WARNING at start when autovacuum will not reclaim the dead rows the write path leaves (PostgreSQL)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import PG_URL, scalar
from test_replication_health import OPEN_TWICE

from ledger.store.maintenance import CHURNED, unvacuumed

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
TEXT = "autovacuum will not reclaim the dead rows the ledger leaves"


def test_a_process_warns_once_exactly_when_autovacuum_is_off(postgres_url):
    """The server's own setting decides (this machine's CI turns autovacuum off); one line, naming the tables."""
    off = scalar(PG_URL, "SELECT current_setting('autovacuum')") == "off"
    done = subprocess.run([sys.executable, "-c", OPEN_TWICE.format(url=postgres_url)], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if TEXT in line]
    if off:
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith("WARNING ledger.store.maintenance: ")
        assert all(name in lines[0] for name in CHURNED) and "VACUUM" in lines[0]
    else:
        assert lines == [], done.stderr


def test_a_table_that_turns_autovacuum_off_for_itself_is_named(postgres_url):
    from ledger import Ledger, Settings

    Ledger(Settings(database_url=postgres_url)).close()
    engine = sa.create_engine(postgres_url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("ALTER TABLE ledger_intake SET (autovacuum_enabled = false)")
        names = unvacuumed(engine)
        assert "ledger_intake" in names
        if scalar(PG_URL, "SELECT current_setting('autovacuum')") == "on":
            assert names == ["ledger_intake"]
    finally:
        engine.dispose()
