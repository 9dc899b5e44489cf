"""What both stores share: the library's application recorder, with the charge-id index beside the log.

The recorder subclasses eventsourcing-sqlalchemy's application recorder and
uses its ``_insert_events`` hook, which runs in the same SQLAlchemy session
and transaction as the events: a reversal's mark in the index exists exactly
when its event does (invariant 3), whatever crashes when. Charges are
appended by each dialect's own path (:mod:`ledger.store.postgres`,
:mod:`ledger.store.sqlite`), which writes the index row in the same
transaction as the charge.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from eventsourcing.persistence import AggregateRecorder, Notification, StoredEvent
from eventsourcing_sqlalchemy.recorders import (
    SQLAlchemyAggregateRecorder,
    SQLAlchemyApplicationRecorder,
)
from sqlalchemy.orm import Session

from ledger.errors import AlreadyReversed
from ledger.store.base import Appended, ChargeBatch, LogTopics, Tuning
from ledger.store.engine import datastore_engine
from ledger.store.schema import charge_index, ensure_schema
from ledger.store.spend import mark_reversed

#: An index earlier versions made on the retired charge-id table.
RETIRED_INDEX = "ix_ledger_charge_ids_account_id"

#: Application name: tables are ``ledger_events``, ``ledger_snapshots``.
APPLICATION_NAME = "Ledger"


class LedgerRecorder(SQLAlchemyApplicationRecorder):
    """Events plus the charge-id index, committed together; each dialect's store extends it."""

    _snapshots_table: sa.Table | None = None
    topics: LogTopics
    tuning: Tuning = Tuning()
    #: The billing time zone: the dates budget spend is folded into (see :mod:`ledger.store.spend`).
    spend_zone: ZoneInfo | None = None

    @property
    def engine(self) -> sa.engine.Engine:
        """The SQLAlchemy engine: for the store's own modules (``ledger/store/``) only."""
        return datastore_engine(self.datastore)

    @property
    def events_table(self) -> sa.Table:
        """The library's events table (the log)."""
        return self.events_record_cls.__table__  # type: ignore[attr-defined, no-any-return]

    @property
    def snapshots_table(self) -> sa.Table:
        """The library's snapshots table (known once the store is open)."""
        assert self._snapshots_table is not None, "the store is not open"
        return self._snapshots_table

    @property
    def dialect(self) -> str:
        """``postgresql`` or ``sqlite``."""
        return self.engine.dialect.name

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    # -- start -----------------------------------------------------------------

    def open(self, snapshots: AggregateRecorder, topics: LogTopics, tuning: Tuning) -> None:
        """Events, snapshots and every table of the schema, then the write path's SQL; once, at start.

        ``snapshots`` is the snapshot store's recorder (the library's, on this datastore).
        """
        assert isinstance(snapshots, SQLAlchemyAggregateRecorder)
        self._snapshots_table = snapshots.events_record_cls.__table__  # type: ignore[attr-defined]
        self.topics, self.tuning = topics, tuning
        self.create_table_with(snapshots.tables, self.install)

    def install(self, connection: sa.engine.Connection) -> None:
        """Install the dialect's write path, in the schema-locked transaction (see the subclasses).

        Stores made by earlier versions may carry an index on the retired
        charge-id table's account column; it is dropped.
        """
        connection.exec_driver_sql(f"DROP INDEX IF EXISTS {RETIRED_INDEX}")

    def create_table(self) -> None:
        self.create_table_with([])

    def create_table_with(
        self,
        more: Iterable[sa.Table],
        then: Callable[[sa.engine.Connection], None] | None = None,
    ) -> None:
        """Create the events table, ``more`` (snapshots) and every table of the schema, then ``then``."""
        ensure_schema(self.engine, library_tables=[*self.tables, *more], then=then)

    # -- writing ---------------------------------------------------------------

    def append(self, batch: ChargeBatch) -> list[Appended]:
        """Append charges and their index rows in one transaction (see the subclasses)."""
        raise NotImplementedError

    def _insert_events(
        self,
        session: Session,
        stored_events: Sequence[StoredEvent],
        *,
        reversed_charges: Sequence[tuple[str, str]] = (),
        reversed_at: datetime | None = None,
        **kwargs: Any,
    ) -> None:
        """The events, and each reversed (account, charge id) marked in the index, in one transaction."""
        for account_id, charge_id in reversed_charges:
            assert reversed_at is not None
            if not mark_reversed(session, self.dialect, self.spend_zone, account_id, charge_id, reversed_at):
                raise AlreadyReversed(charge_id)
        super()._insert_events(session, stored_events, **kwargs)

    def lock_prices(self, session: Session) -> None:
        """Hold off appends' catalogue checks while a price is set (SQLite's writers queue anyway)."""

    def lock_for_append(self, session: Session) -> None:
        """Take the append lock now: SQLite's write transaction began with BEGIN IMMEDIATE; this starts it."""
        session.connection()

    # -- reading ---------------------------------------------------------------

    def drain(self, wait: bool = True) -> int:
        """Put acknowledged charges into the log: nothing to do where appends write it directly."""
        return 0

    def select_notifications(self, *args: Any, **kwargs: Any) -> list[Notification]:
        """The log, with every charge acknowledged so far sequenced into it first."""
        self.drain()
        return super().select_notifications(*args, **kwargs)

    def max_notification_id(self) -> int | None:
        self.drain()
        return super().max_notification_id()

    def select_events(self, *args: Any, **kwargs: Any) -> Sequence[StoredEvent]:
        """An aggregate's events, its acknowledged charges sequenced first (see :meth:`drain`)."""
        self.drain()
        return super().select_events(*args, **kwargs)

    def find_charge(self, account_id: str, charge_id: str) -> sa.Row[Any] | None:
        """The index row of one account's charge, or None."""
        with self.transaction(commit=False) as session:
            return session.execute(
                sa.select(charge_index).where(
                    charge_index.c.account_id == account_id, charge_index.c.charge_id == charge_id
                )
            ).first()

    def accounts_of_charge(self, charge_id: str, limit: int = 2) -> list[str]:
        """Accounts that recorded a charge with this id (at most ``limit``): an id alone names none uniquely."""
        with self.transaction(commit=False) as session:
            rows = session.execute(
                sa.select(charge_index.c.account_id)
                .where(charge_index.c.charge_id == charge_id)
                .order_by(charge_index.c.account_id)
                .limit(limit)
            )
            return [row[0] for row in rows]

    def account_ids(self) -> list[str]:
        """Every account a charge was ever recorded for (the index is never pruned)."""
        with self.transaction(commit=False) as session:
            rows = session.execute(
                sa.select(charge_index.c.account_id).distinct().order_by(charge_index.c.account_id)
            )
            return [row[0] for row in rows]

    def close(self) -> None:
        """Release what the store holds beside the library's pool (see the subclasses)."""

    def forget_inherited_connections(self) -> None:
        """In a forked child: drop the pooled connections inherited from the parent, leaving them open for it."""
        self.engine.dispose(close=False)


def stored_payload(row: sa.Row[Any]) -> dict[str, Any]:
    """The facts an index row recorded, as the charge's JSON-ready payload."""
    return json.loads(row.payload)  # type: ignore[no-any-return]
