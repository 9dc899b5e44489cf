"""Engines from a URL: the driver's settings per dialect, and driver errors in the library's terms.

SQLite gets WAL, a generous busy timeout and write transactions that lock up
front; PostgreSQL a connection pool sized by the ledger's settings. Errors
the driver raises outside the library's own calls (the PostgreSQL store's
appends and sequencing) are mapped to the library's error types, so the
ledger's retries treat every path alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from eventsourcing.persistence import (
    DatabaseError,
    DataError,
    IntegrityError,
    InterfaceError,
    InternalError,
    NotSupportedError,
    OperationalError,
    PersistenceError,
    ProgrammingError,
)
from eventsourcing_sqlalchemy.datastore import SQLAlchemyDatastore, transactions

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


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """PostgreSQL's connection pool: connections kept, extra ones under load, and their age limit."""

    size: int = 10
    max_overflow: int = 20
    recycle_seconds: int = 1800


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


def make_datastore(url: str, pool: PoolSettings | None = None) -> SQLAlchemyDatastore:
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
        pool = pool or PoolSettings()
        datastore = SQLAlchemyDatastore(
            url=url, pool_size=pool.size, max_overflow=pool.max_overflow, pool_recycle=pool.recycle_seconds
        )
    return datastore


def datastore_engine(datastore: SQLAlchemyDatastore) -> sa.engine.Engine:
    """A datastore's engine (the library types it as optional; ours always have one)."""
    engine = datastore.engine
    assert isinstance(engine, sa.engine.Engine)
    return engine


#: What a dropped connection raises, through the library or from SQLAlchemy directly.
DROPPED_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
)

#: SQLAlchemy's own errors for a database that is unreachable, restarting or out of pool
#: connections: entry points answer them as "unavailable", jobs retry them.
SQLALCHEMY_UNAVAILABLE: tuple[type[BaseException], ...] = (
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    sa.exc.TimeoutError,  # connection pool exhausted
)
#: SQLAlchemy's unclassified database error (the driver's own, e.g. the server went away).
SQLALCHEMY_DATABASE_ERROR: type[BaseException] = sa.exc.DatabaseError


def connection_invalidated(exc: BaseException) -> bool:
    """Whether SQLAlchemy invalidated the connection this error came from (a retry gets a new one)."""
    return isinstance(exc, sa.exc.DBAPIError) and bool(exc.connection_invalidated)
