"""The bare psycopg2 loop: one INSERT per row, committed alone, nothing between the driver and the server.

The same charge-sized raw event rows as the SQLAlchemy baseline
(:func:`bench.workload.raw_event_rows`), into the same table
(``bench_raw_events``), on a plain ``psycopg2.connect`` (no pool, no
engine events, no statement cache): the leanest a Python writer gets.
The connection is in autocommit mode, so each INSERT is its own durable
transaction in one round trip, as the ledger's own appends are. (In
psycopg2's default mode a row costs three: BEGIN, the INSERT, COMMIT; the
bench used that loop before 2026-12-05, which flattered every ratio to it.)
"""

from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

import psycopg2
import sqlalchemy as sa

INSERT = "INSERT INTO bench_raw_events (originator_id, originator_version, topic, state) VALUES (%s, %s, %s, %s)"


def dsn(url: str) -> str:
    """A libpq URL for a SQLAlchemy ``postgresql+psycopg2://`` one."""
    return sa.engine.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def connect(url: str) -> Any:
    """An open autocommit connection, its first round trip done before any clock starts."""
    connection = psycopg2.connect(dsn(url))
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return connection


def insert_one_per_commit(connection: Any, rows: Sequence[Mapping[str, Any]]) -> float:
    """Seconds to insert ``rows`` (:func:`bench.workload.raw_event_rows`), each its own transaction."""
    cursor = connection.cursor()
    began = time.perf_counter()
    for row in rows:
        cursor.execute(
            INSERT,
            (str(row["originator_id"]), row["originator_version"], row["topic"], psycopg2.Binary(row["state"])),
        )
    seconds = time.perf_counter() - began
    cursor.close()
    return seconds
