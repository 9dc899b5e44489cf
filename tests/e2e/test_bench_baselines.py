"""The bench's psycopg2 baseline is the leanest Python loop, so it never flatters a ratio to it."""

from __future__ import annotations

import psycopg2.extensions
import pytest
import sqlalchemy as sa

from bench import baselines, psycopg_baseline
from bench.workload import account_ids, charges, raw_event_rows

pytestmark = pytest.mark.postgres


def test_each_row_is_one_insert_durable_on_its_own_with_no_begin_or_commit_round_trip(postgres_url):
    engine = sa.create_engine(postgres_url)
    baselines.create_tables(engine)
    rows = raw_event_rows(list(charges("lean", 5, account_ids(2))))
    connection = psycopg_baseline.connect(postgres_url)
    try:
        psycopg_baseline.insert_one_per_commit(connection, rows)
        # psycopg2's default mode would have sent BEGIN before the INSERT and left its transaction open here
        assert connection.autocommit
        assert connection.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_IDLE
        with engine.connect() as other:  # committed: another connection sees every row
            assert other.exec_driver_sql("SELECT count(*) FROM bench_raw_events").scalar_one() == len(rows)
    finally:
        connection.close()
        engine.dispose()
