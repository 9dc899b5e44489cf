"""The PostgreSQL store: charges in through a durable intake, one round trip per batch.

A batch goes in with one server-side function call (then COMMIT) that
writes the index rows and the events-to-be into the intake, taking no lock
another writer waits for; the sequencer numbers them into the log later
(``intake.sql``, :mod:`ledger.store.sequencer`). Batches of at least
``Tuning.direct_batch_min`` charges append straight into the log under the
events table's lock (``append.sql``): one lock wait and one commit for all
of them, and no second write. Both number an account's versions by
``versions.sql``.

The SQL files sit beside this module; the advisory-lock keys they use come
from :class:`~ledger.store.locks.LockKey` when they are installed.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from eventsourcing.persistence import AggregateRecorder
from eventsourcing_sqlalchemy.datastore import transactions
from sqlalchemy.orm import Session

from ledger.store.base import Appended, ChargeBatch, LogTopics, StaleCatalogue, Tuning
from ledger.store.engine import (
    CONNECTION_ERRORS,
    DBAPI_ERRORS,
    forget_connections,
    persistence_error,
    reconnect_needed,
)
from ledger.store.locks import LockKey
from ledger.store.pg_calls import INTAKE, LOCKED, Statements, arrays_of
from ledger.store.recorder import LedgerRecorder
from ledger.store.sequencer import Sequencer
from ledger.store.watchdog import WATCHDOG, call_deadline

if TYPE_CHECKING:
    from psycopg2.extensions import connection as PgConnection


def _sql(name: str) -> str:
    """A SQL file beside this module, its ``@LockKey.NAME@`` marks replaced by the keys' numbers."""
    text = Path(__file__).with_name(name).read_text()
    return re.sub(r"@LockKey\.(\w+)@", lambda mark: str(int(LockKey[mark.group(1)])), text)


#: The write path's SQL, in the order it is installed.
WRITE_PATH_SQL = tuple(_sql(name) for name in ("versions.sql", "charge_facts.sql", "append.sql", "intake.sql", "reservations.sql"))

#: An append function's overload that earlier versions created and this one
#: no longer uses. The earlier releases' own functions, ``ledger_intake_charges``
#: and ``ledger_append_charges`` with the catalogue check, stay: they write the
#: retired global charge-id table, whose guard refuses them with a message
#: naming the upgrade (see :mod:`ledger.store.charge_index`), which is what
#: their still-running callers should see.
RETIRED_FUNCTION = (
    "DROP FUNCTION IF EXISTS ledger_append_charges("
    "text[], text[], uuid[], text[], text[], bytea[], bytea[], timestamptz, text, text)"
)


class PostgresStore(LedgerRecorder):
    """The store on PostgreSQL: the intake, the sequencer, and the appends' own connection."""

    #: The function small batches go through (``LOCKED`` appends every batch under the log's lock).
    statements: Statements = INTAKE
    _pg: PgConnection | None = None
    _pg_pid = 0
    _sequencer: Sequencer | None = None

    def open(self, snapshots: AggregateRecorder, topics: LogTopics, tuning: Tuning) -> None:
        """Install the write path; sequence this process's intake rows in the background."""
        super().open(snapshots, topics, tuning)
        self._sequencer = Sequencer(self.drain, tuning.sequence_interval)

    def install(self, connection: sa.engine.Connection) -> None:
        """Create or replace the write path's functions; drop what earlier versions made and no longer use."""
        super().install(connection)
        connection.exec_driver_sql(RETIRED_FUNCTION)
        for script in WRITE_PATH_SQL:
            connection.exec_driver_sql(script)

    # -- locks -----------------------------------------------------------------

    def lock_prices(self, session: Session) -> None:
        """Hold off writers' catalogue checks while a price is set (see ``intake.sql``)."""
        session.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": int(LockKey.PRICES)})

    def lock_for_append(self, session: Session) -> None:
        """The events table's EXCLUSIVE lock the insert takes anyway (so notification ids commit in order)."""
        self._lock_table(session)

    # -- appending -------------------------------------------------------------

    def append(self, batch: ChargeBatch) -> list[Appended]:
        """One function call: the intake's, or (big batches) the locked append's.

        On the store's own connection the call is its own transaction; inside
        a caller's open recorder transaction it joins that one.
        """
        direct = transactions.get(None) is None
        statements = LOCKED if len(batch) >= self.tuning.direct_batch_min else self.statements
        sql, arrays, facts = arrays_of(batch, statements, own_connection=direct)
        topics = self.topics
        params = (*arrays, batch.recorded_at, topics.charge_recorded, topics.account_opened,
                  str(topics.catalogue_id), batch.catalogue_version, *facts)
        rows = self._call(sql, params) if direct else self._call_in_transaction(sql, params)
        if rows and rows[0][0] == 0:
            raise StaleCatalogue(rows[0][3])
        if statements is INTAKE and self._sequencer is not None:
            self._sequencer.poke()
        # The intake answers only for positions it did not take (and a lone charge).
        results = [Appended()] * len(batch)
        for idx, known_payload, known_recorded_at, position in rows:
            results[idx - 1] = (
                Appended(position=position)
                if known_payload is None
                else Appended(None, json.loads(known_payload), known_recorded_at)
            )
        return results

    def call(self, sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """One statement on the appends' own autocommit connection: its own transaction, one round trip."""
        return self._call(sql, params)  # type: ignore[arg-type]

    def took_in(self) -> None:
        """Charges were taken into the intake by another call (a capture): sequence them soon."""
        if self._sequencer is not None:
            self._sequencer.poke()

    def _call(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """One round trip: the function call is its own (implicit) transaction.

        The store keeps one connection in autocommit mode for appends (only
        the group commit's leader appends, one batch at a time), so the call
        commits when it returns: no BEGIN and no COMMIT round trips. A failed
        call rolls back whole; a connection error drops the connection (the
        next call opens a new one) and surfaces as the library's error types,
        which the ledger's retry handles (the index makes a repeat exact).
        The call is bounded by the context's call deadline (see
        :mod:`ledger.store.watchdog`); a connection to a server now read-only
        (demoted) is closed with the pool's, so the retry finds the new primary.
        """
        connection = self._connection()
        try:
            cursor = connection.cursor()
            try:
                deadline = call_deadline.get()
                if deadline is None:
                    cursor.execute(sql, params)
                else:
                    WATCHDOG.arm(connection, deadline)
                    try:
                        cursor.execute(sql, params)
                    finally:
                        WATCHDOG.disarm(connection)
                return cursor.fetchall()
            finally:
                cursor.close()
        except BaseException as exc:
            if (not isinstance(exc, DBAPI_ERRORS) or isinstance(exc, CONNECTION_ERRORS) or connection.closed
                    or reconnect_needed(exc)):
                self._close_connection()
            if reconnect_needed(exc):  # read-only or shutting down: the pool's connections are as stale
                forget_connections(self.engine)
            if isinstance(exc, DBAPI_ERRORS):
                raise persistence_error(exc) from exc
            raise

    def _call_in_transaction(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Inside a caller's open recorder transaction: join it (it commits or rolls back all)."""
        with self.transaction(commit=True) as session:
            return list(session.connection().exec_driver_sql(sql, tuple(params)).fetchall())

    def _connection(self) -> PgConnection:
        """The appends' own driver connection (autocommit), opened on first use or after a fork."""
        if self._pg is not None and (self._pg_pid != os.getpid() or self._pg.closed):
            if self._pg_pid == os.getpid():
                self._close_connection()
            else:
                self._pg = None  # the parent's: never touch it here
        if self._pg is None:
            try:
                proxied = self.engine.raw_connection()
            except sa.exc.DBAPIError as exc:
                raise persistence_error(exc.orig) from exc
            connection: PgConnection = proxied.driver_connection  # type: ignore[assignment]
            proxied.detach()  # ours alone: not returned to (or reset by) the pool
            connection.autocommit = True
            try:
                with connection.cursor() as cursor, WATCHDOG.bounded(connection, call_deadline.get()):
                    for statement in (*INTAKE.prepare, *LOCKED.prepare):
                        cursor.execute(statement)
            except BaseException as exc:
                connection.close()
                if isinstance(exc, DBAPI_ERRORS):
                    raise persistence_error(exc) from exc
                raise
            self._pg, self._pg_pid = connection, os.getpid()
        return self._pg

    def _close_connection(self) -> None:
        """Close the appends' connection, if open (the next append opens another)."""
        connection, self._pg = self._pg, None
        if connection is not None and self._pg_pid == os.getpid():
            try:
                connection.close()
            except Exception:  # noqa: BLE001, S110 - already broken: nothing to release
                pass

    def close(self) -> None:
        """Sequence what this process took in, then close the appends' connection."""
        if self._sequencer is not None:
            self._sequencer.close()
        self._close_connection()

    # -- sequencing ------------------------------------------------------------

    def drain(self, wait: bool = True) -> int:
        """Sequence acknowledged charges from the intake into the log.

        Returns how many were moved; with ``wait`` false, -1 if another
        process was sequencing (this call then did nothing). Inside an open
        transaction it does nothing: that transaction may hold the events
        table's lock, which sequencing on another connection would wait for;
        callers sequence before they open one.
        """
        if transactions.get(None) is not None:
            return 0
        limit = self.tuning.sequence_batch_size
        moved = 0
        while True:
            try:
                with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                    step = connection.execute(
                        sa.text("SELECT ledger_sequence(:limit, :topic, :opened, :wait)"),
                        {"limit": limit, "topic": self.topics.charge_recorded,
                         "opened": self.topics.account_opened, "wait": wait},
                    ).scalar_one()
            except sa.exc.DBAPIError as exc:  # the library's error kinds, as for any read
                raise persistence_error(exc.orig) from exc
            if step < 0:
                return step if not moved else moved
            moved += step
            if step < limit:
                return moved
