"""A ledger's life: a script that records and ends without ``close()`` exits quietly, charges in the log."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import sqlalchemy as sa

from ledger import Ledger, Settings

SCRIPT = """
from ledger import Ledger
L = Ledger.from_url({url!r})
L.record_charge(account_id="acme", charge_id="no-close", charge_type="usage", prompt_tokens=5)
"""


def test_a_script_that_never_closes_exits_quietly_with_its_charge_in_the_log(store_url):
    result = subprocess.run([sys.executable, "-c", SCRIPT.format(url=store_url)],
                            capture_output=True, text=True, timeout=120)
    # Quiet but for the warnings a writer logs at open on a PostgreSQL without a synchronous standby,
    # or without autovacuum (docs/OPERATIONS.md).
    at_open = ("an acknowledged charge could be lost", "autovacuum will not reclaim")
    said = [line for line in result.stderr.splitlines() if not any(text in line for text in at_open)]
    assert result.returncode == 0 and said == [], result.stderr
    engine = sa.create_engine(store_url)
    try:
        with engine.connect() as connection:
            if engine.dialect.name == "postgresql":  # sequenced at exit: nothing left pending
                assert connection.exec_driver_sql("SELECT count(*) FROM ledger_intake").scalar_one() == 0
            assert connection.exec_driver_sql("SELECT count(*) FROM ledger_events").scalar_one() == 2
    finally:
        engine.dispose()
    with Ledger(Settings(database_url=store_url)) as ledger:
        assert ledger.account_totals("acme").prompt_tokens == 5


def test_a_ledger_is_a_context_manager_and_closes_once(store_url):
    with Ledger(Settings(database_url=store_url)) as ledger:
        ledger.record_charge(account_id="acme", charge_id="c-1", charge_type="usage", prompt_tokens=1)
    ledger.close()  # a second close is harmless
    with Ledger(Settings(database_url=store_url)) as again:
        assert again.account_totals("acme").charges == 1
