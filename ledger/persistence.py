"""Store set-up from a URL, and the charge-id index in the event transaction.

The recorder subclasses eventsourcing-sqlalchemy's application recorder and
uses its ``_insert_events`` hook, which runs in the same SQLAlchemy session
and transaction as the events: an index row exists exactly when its event
does (invariant 3), whatever crashes when.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Callable, Iterable, Sequence

import sqlalchemy as sa
from eventsourcing.persistence import (
    DatabaseError,
    DataError,
    IntegrityError,
    InterfaceError,
    InternalError,
    Notification,
    NotSupportedError,
    OperationalError,
    PersistenceError,
    ProgrammingError,
    StoredEvent,
)
from eventsourcing_sqlalchemy.datastore import SQLAlchemyDatastore, transactions
from eventsourcing_sqlalchemy.factory import SQLAlchemyFactory
from eventsourcing_sqlalchemy.recorders import SQLAlchemyApplicationRecorder
from sqlalchemy.orm import Session

from ledger.store.schema import charge_index, ensure_schema, schema_lock  # noqa: F401 - schema_lock: its old home
from ledger.domain import ACCOUNT_OPENED_TOPIC, CHARGE_RECORDED_TOPIC
from ledger.errors import AlreadyReversed

#: Application name: tables are ``ledger_events``, ``ledger_snapshots``.
APPLICATION_NAME = "Ledger"

#: DB-API exception class names -> the library's, as its SQLAlchemy recorder maps them.
_ERRORS_BY_NAME: dict[str, type[PersistenceError]] = {
    cls.__name__: cls
    for cls in (
        IntegrityError,
        DataError,
        OperationalError,
        InterfaceError,
        InternalError,
        ProgrammingError,
        NotSupportedError,
        DatabaseError,
    )
}


def _dbapi_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(any psycopg2 error, those that mean the connection is gone or unusable)."""
    try:
        import psycopg2
    except ImportError:  # SQLite only
        return (), ()
    return (psycopg2.Error,), (psycopg2.OperationalError, psycopg2.InterfaceError)


DBAPI_ERRORS, CONNECTION_ERRORS = _dbapi_errors()


def persistence_error(exc: BaseException) -> PersistenceError:
    """The library's error for a driver error (by DB-API class, most specific first)."""
    for cls in type(exc).__mro__:
        mapped = _ERRORS_BY_NAME.get(cls.__name__)
        if mapped is not None:
            return mapped(exc)
    return PersistenceError(exc)


def _sqlite_engine_hooks(engine: sa.engine.Engine) -> None:
    """WAL, a generous busy timeout, and write transactions that lock up front.

    ``BEGIN IMMEDIATE`` for writing transactions means two processes never both
    read and then fail to upgrade to a write lock (SQLITE_BUSY without waiting);
    read-only transactions stay deferred so readers do not queue behind writers.
    """

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 60000")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(connection: sa.engine.Connection) -> None:
        transaction = transactions.get(None)
        writing = transaction is None or transaction.commit
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writing else "BEGIN")


def make_datastore(url: str) -> SQLAlchemyDatastore:
    """A datastore for ``sqlite:///file`` or ``postgresql+psycopg2://…``."""
    if url.startswith("sqlite"):
        datastore = SQLAlchemyDatastore(url=url, connect_args={"timeout": 60})
        assert isinstance(datastore.engine, sa.engine.Engine)
        _sqlite_engine_hooks(datastore.engine)
        datastore._tried_init_sqlite_wal_mode = True  # done per connection above
        datastore.is_sqlite_wal_mode = True
    else:
        # No pool_pre_ping: it costs a round trip per transaction. A connection
        # dropped by a server restart fails one call, invalidates the pool, and
        # the service retries (idempotently, by charge id).
        datastore = SQLAlchemyDatastore(
            url=url, pool_size=10, max_overflow=20, pool_recycle=1800
        )
    return datastore


def create_tables(
    engine: sa.engine.Engine,
    tables: Iterable[sa.Table],
    then: Callable[[sa.engine.Connection], None] | None = None,
) -> None:
    """Every table of the schema, ``tables`` (the library's) too, then ``then`` (see ensure_schema)."""
    ensure_schema(engine, library_tables=tables, then=then)


class LedgerRecorder(SQLAlchemyApplicationRecorder):
    """Events plus the charge-id index, committed together."""

    #: The snapshots table (the snapshot store's), set by the ledger once it has one.
    snapshots_table: sa.Table | None = None

    @property
    def engine(self) -> sa.engine.Engine:
        """The SQLAlchemy engine: for the store's own modules (``ledger/store/``) only."""
        engine = self.datastore.engine
        assert isinstance(engine, sa.engine.Engine)
        return engine

    @property
    def events_table(self) -> sa.Table:
        """The library's events table (the log)."""
        return self.events_record_cls.__table__  # type: ignore[attr-defined, no-any-return]

    @property
    def dialect(self) -> str:
        """``postgresql`` or ``sqlite``."""
        return self.engine.dialect.name

    def create_table(self) -> None:
        self.create_table_with([])

    def create_table_with(
        self,
        more: Iterable[sa.Table],
        then: Callable[[sa.engine.Connection], None] | None = None,
    ) -> None:
        """Create the events table, ``more`` (snapshots) and every table of the schema, then ``then``."""
        assert isinstance(self.datastore.engine, sa.engine.Engine)

        ensure_schema(self.datastore.engine, library_tables=[*self.tables, *more], then=then)

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
            result = session.execute(
                charge_index.update()
                .where(
                    charge_index.c.account_id == account_id,
                    charge_index.c.charge_id == charge_id,
                    charge_index.c.reversed_at.is_(None),
                )
                .values(reversed_at=reversed_at)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                raise AlreadyReversed(charge_id)
        super()._insert_events(session, stored_events, **kwargs)

    #: Most pending charges one sequencing transaction moves (the ledger sets it).
    sequence_batch_size = 20_000

    @property
    def is_postgres(self) -> bool:
        return self.datastore.engine is not None and self.datastore.engine.dialect.name == "postgresql"

    def drain(self, wait: bool = True) -> int:
        """Sequence acknowledged charges from the intake into the log (PostgreSQL).

        Returns how many were moved; with ``wait`` false, -1 if another
        process was sequencing (this call then did nothing). Inside an open
        transaction it does nothing: that transaction may hold the events
        table's lock, which sequencing on another connection would wait for;
        callers sequence before they open one.
        """
        if not self.is_postgres or transactions.get(None) is not None:
            return 0
        engine = self.datastore.engine
        assert isinstance(engine, sa.engine.Engine)
        moved = 0
        while True:
            try:
                with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                    step = connection.execute(
                        sa.text("SELECT ledger_sequence(:limit, :topic, :opened, :wait)"),
                        {"limit": self.sequence_batch_size, "topic": CHARGE_RECORDED_TOPIC,
                         "opened": ACCOUNT_OPENED_TOPIC, "wait": wait},
                    ).scalar_one()
            except sa.exc.DBAPIError as exc:  # the library's error kinds, as for any read
                raise persistence_error(exc.orig) from exc
            if step < 0:
                return step if not moved else moved
            moved += step
            if step < self.sequence_batch_size:
                return moved

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

    def lock_prices(self, session: Session) -> None:
        """Hold off writers' catalogue checks while a price is set (see ``intake.sql``)."""
        if self.is_postgres:
            session.execute(sa.text("SELECT pg_advisory_xact_lock(ledger_prices_lock_key())"))

    def lock_for_append(self, session: Session) -> None:
        """Take the append lock now, before reading what the append depends on.

        PostgreSQL: the events table's EXCLUSIVE lock the insert takes anyway
        (so notification ids commit in order). SQLite: the write transaction
        already began with BEGIN IMMEDIATE; this makes it start.
        """
        if self.is_postgres:
            self._lock_table(session)
        else:
            session.connection()

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


def stored_payload(row: sa.Row[Any]) -> dict[str, Any]:
    """The facts an index row recorded, as the charge's JSON-ready payload."""
    return json.loads(row.payload)


class LedgerFactory(SQLAlchemyFactory):
    """eventsourcing-sqlalchemy's factory, with our datastore and recorder."""

    application_recorder_class = LedgerRecorder

    def __init__(self, env: Any) -> None:  # noqa: D107 - set-up only
        url = env.get(self.SQLALCHEMY_URL)
        super(SQLAlchemyFactory, self).__init__(env)
        self._schema_name = self.env.get(self.SQLALCHEMY_SCHEMA)
        self.datastore = make_datastore(url)

    def close(self) -> None:
        if self.datastore.engine is not None:
            self.datastore.engine.dispose()  # type: ignore[union-attr]


def __getattr__(name: str) -> Any:
    """``charge_ids``, the earlier name of the charge-id index table (deprecated)."""
    if name == "charge_ids":
        import warnings

        warnings.warn(
            "ledger.persistence.charge_ids is deprecated: the index is keyed by account and charge id; "
            "use ledger.charge_index.charge_index",
            DeprecationWarning,
            stacklevel=2,
        )
        return charge_index
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
