"""The charge-id index's installation: (account, charge id) -> the facts a charge was recorded with.

The table itself is defined in :mod:`ledger.store.schema`.

A charge id is an idempotency key scoped to its account, as a payment
provider scopes idempotency keys to an account: two accounts may use the
same id, and each gets its own charge. The index is written in the same
transaction as the charge (or its pending intake row) and is never pruned
by compaction, so duplicate detection and reversal outlive the raw events.

Releases before this one kept a global table, ``ledger_charge_ids``, keyed by
charge id alone. :func:`install` runs at every start under the schema lock:
it moves that table's rows here (on PostgreSQL by renaming the table, so a
large index is not copied) and leaves a guard of the old shape in its place,
whose writes fail with a message naming the upgrade. A process of an earlier
release, still running or started later, therefore records nothing (its
write fails, nothing is stored) instead of checking ids against a table no
current process writes. See docs/UPGRADING.md.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import sqlalchemy as sa

from ledger.store.schema import charge_index

#: The earlier releases' global table, kept only as a guard (see the module doc).
RETIRED_TABLE = "ledger_charge_ids"

_SQL = Path(__file__).parent


def install(connection: sa.engine.Connection) -> None:
    """Create the index, fold in a global table of an earlier release, guard its name.

    Idempotent; runs in the caller's schema-locked transaction, so the move
    and the guard commit together (a crash leaves the store as it was).
    """
    postgres = connection.dialect.name == "postgresql"
    inspector = sa.inspect(connection)
    if inspector.has_table(RETIRED_TABLE):
        if _is_guard(connection, postgres):  # upgraded before: nothing to move
            charge_index.create(connection, checkfirst=True)
            return
        if postgres and not inspector.has_table(charge_index.name):
            connection.exec_driver_sql((_SQL / "charge_index_rename.pg.sql").read_text())
        else:
            charge_index.create(connection, checkfirst=True)
            _fold_into_index(connection, postgres)
            connection.exec_driver_sql(f"DROP TABLE {RETIRED_TABLE}")
    charge_index.create(connection, checkfirst=True)
    _create_guard(connection, postgres)


def _is_guard(connection: sa.engine.Connection, postgres: bool) -> bool:
    """Whether the retired name holds the guard (not an earlier release's live table)."""
    if postgres:
        query = ("SELECT 1 FROM pg_trigger WHERE tgname = 'ledger_charge_ids_retired' "
                 "AND tgrelid = 'ledger_charge_ids'::regclass")
    else:
        query = "SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = 'ledger_charge_ids_retired_insert'"
    return connection.exec_driver_sql(query).first() is not None


def _fold_into_index(connection: sa.engine.Connection, postgres: bool) -> None:
    """Copy the global table's rows into the index, writers held off (keys already there win)."""
    columns = "account_id, charge_id, payload_hash, payload, recorded_at, reversed_at"
    if postgres:
        connection.exec_driver_sql(f"LOCK TABLE {RETIRED_TABLE} IN ACCESS EXCLUSIVE MODE")
        connection.exec_driver_sql(
            f"INSERT INTO ledger_charge_index ({columns}) SELECT {columns} FROM {RETIRED_TABLE} "
            "ON CONFLICT (account_id, charge_id) DO NOTHING"
        )
    else:
        connection.exec_driver_sql(
            f"INSERT OR IGNORE INTO ledger_charge_index ({columns}) SELECT {columns} FROM {RETIRED_TABLE}"
        )
    from ledger.store.spend import backfill

    backfill(connection)  # the moved rows' typed columns, from their payloads


def _create_guard(connection: sa.engine.Connection, postgres: bool) -> None:
    """The retired table's name, holding the guard: the old shape, every write refused."""
    name = "charge_index_guard.pg.sql" if postgres else "charge_index_guard.sqlite.sql"
    script = (_SQL / name).read_text()
    if postgres:
        connection.exec_driver_sql(script)
    else:
        for statement in _sqlite_statements(script):
            connection.exec_driver_sql(statement)


def _sqlite_statements(script: str) -> list[str]:
    """A script's statements, split where SQLite says one is complete (triggers hold ``;`` inside)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        if line.startswith("--"):
            continue
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    return statements
