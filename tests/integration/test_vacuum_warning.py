"""The WARNING at start when autovacuum will not reclaim the dead rows the write path leaves (PostgreSQL)."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import PG_URL, scalar

from ledger.store.maintenance import CHURNED, unvacuumed, warn_if_unvacuumed

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
TEXT = "autovacuum will not reclaim the dead rows the ledger leaves"

OPEN_TWICE = """
import logging, sys
logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
from ledger import Ledger
first = Ledger.from_url({url!r})
first.record_charge(account_id="acme", charge_type="usage", prompt_tokens=1)
second = Ledger.from_url({url!r})
first.close(); second.close()
"""


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


def test_settings_that_cannot_be_read_are_logged_and_never_fatal(caplog):
    unreachable = sa.create_engine("postgresql+psycopg2://postgres@127.0.0.1:1/nowhere",
                                   connect_args={"connect_timeout": 2}, poolclass=sa.pool.NullPool)
    with caplog.at_level(logging.WARNING, logger="ledger.store.maintenance"):
        assert warn_if_unvacuumed(unreachable) is None
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "could not read the autovacuum settings" in caplog.records[0].getMessage()
