"""Engines from a URL: the driver's settings per dialect, and driver errors in the library's terms.

SQLite gets WAL, a generous busy timeout and write transactions that lock up
front; PostgreSQL a connection pool sized by the ledger's settings, timeouts
so no call waits forever (``connect_timeout``, TCP keepalives,
``tcp_user_timeout``, and the client-side bound of :mod:`ledger.store.watchdog`
on statements and commits), and a multi-host URL keeps to the writable host
(``target_session_attrs=read-write``). Errors
the driver raises outside the library's own calls (the PostgreSQL store's
appends and sequencing) are mapped to the library's error types, so the
ledger's retries treat every path alike.
"""

from __future__ import annotations

import time
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

from ledger.store.watchdog import WATCHDOG, call_deadline

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


def _dbapi_internal() -> tuple[type[BaseException], ...]:
    """psycopg2's InternalError (a read-only server raises one), when it is installed."""
    import psycopg2

    return (psycopg2.InternalError,)


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
    #: libpq's ``connect_timeout``: one connection attempt (per host) gives up after this.
    connect_timeout: int = 5


#: TCP keepalives: a peer that vanished (no RST) is noticed within idle + interval * count seconds.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3}


def postgres_connect_args(url: str, connect_timeout: int) -> dict[str, Any]:
    """libpq parameters that bound waits, each unless the URL sets it.

    ``tcp_user_timeout`` drops a connection whose sent data stays unacknowledged
    (a host that died); a frozen host still acknowledges, which the watchdog
    covers. A URL naming several hosts keeps to the writable one.
    """
    parsed = sa.engine.make_url(url)
    query = parsed.query
    wanted: dict[str, Any] = {
        "connect_timeout": connect_timeout,
        **KEEPALIVES,
        "tcp_user_timeout": max(10, 2 * connect_timeout) * 1000,
    }
    hosts = query.get("host")
    several = (isinstance(hosts, tuple) and len(hosts) > 1) or "," in str(hosts or parsed.host or "")
    if several:
        wanted["target_session_attrs"] = "read-write"
    return {name: value for name, value in wanted.items() if name not in query}


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
            url=url, pool_size=pool.size, max_overflow=pool.max_overflow, pool_recycle=pool.recycle_seconds,
            connect_args=postgres_connect_args(url, pool.connect_timeout),
        )
        assert isinstance(datastore.engine, sa.engine.Engine)
        bound_calls(datastore.engine)
    return datastore


def bound_calls(engine: sa.engine.Engine) -> None:
    """Statements and commits run under the context's call deadline (see :mod:`ledger.store.watchdog`);
    a connection left read-only, shut down by the server or by the watchdog counts as disconnected,
    so SQLAlchemy replaces it and every pooled connection as old (the next checkout reconnects,
    and with ``target_session_attrs=read-write`` finds the new primary)."""

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _arm(_conn: Any, cursor: Any, *_args: Any) -> None:
        deadline = call_deadline.get()
        if deadline is not None:
            WATCHDOG.arm(cursor.connection, deadline)

    @sa.event.listens_for(engine, "after_cursor_execute")
    def _disarm(_conn: Any, cursor: Any, *_args: Any) -> None:
        WATCHDOG.disarm(cursor.connection)

    @sa.event.listens_for(engine, "commit")
    def _arm_commit(conn: sa.engine.Connection) -> None:
        deadline = call_deadline.get()
        if deadline is not None:
            WATCHDOG.arm(conn.connection.dbapi_connection, deadline)

    @sa.event.listens_for(engine, "checkin")
    def _checkin(dbapi_connection: Any, _record: Any) -> None:
        if dbapi_connection is not None:
            WATCHDOG.disarm(dbapi_connection)

    @sa.event.listens_for(engine, "handle_error")
    def _handle_error(context: sa.engine.ExceptionContext) -> None:
        cursor = getattr(context, "cursor", None)  # none when connecting failed
        dbapi_connection = cursor.connection if cursor is not None else None
        if dbapi_connection is not None:
            WATCHDOG.disarm(dbapi_connection)
        if reconnect_needed(context.original_exception) or getattr(dbapi_connection, "closed", 0):
            context.is_disconnect = True


#: SQLSTATEs after which a new connection can succeed: read-only (a demoted primary, or a standby),
#: the server shutting down (admin, crash) or not accepting connections yet.
RECONNECT_SQLSTATES = frozenset({"25006", "57P01", "57P02", "57P03"})
#: SQLSTATEs a plain retry resolves: serialization failure and deadlock.
RETRY_SQLSTATES = frozenset({"40001", "40P01"})


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps: SQLAlchemy's ``orig``, the library's first argument, ``__cause__``."""
    found: list[BaseException] = []
    pending: list[BaseException | None] = [exc]
    while pending and len(found) < 8:
        current = pending.pop()
        if current is None or any(current is seen for seen in found):
            continue
        found.append(current)
        pending.append(current.__cause__)
        pending.append(getattr(current, "orig", None))
        if isinstance(current, PersistenceError) and current.args and isinstance(current.args[0], BaseException):
            pending.append(current.args[0])
    return found


def _codes_by_class() -> dict[type[BaseException], str]:
    """The driver's error class of each SQLSTATE the retries know (for an error whose code is not filled in)."""
    try:
        from psycopg2 import errors
    except ImportError:  # SQLite only
        return {}
    return {errors.lookup(code): code for code in (*RECONNECT_SQLSTATES, *RETRY_SQLSTATES)}


_CODES_BY_CLASS = _codes_by_class()


def sqlstate(exc: BaseException) -> str | None:
    """The PostgreSQL SQLSTATE behind ``exc``, if the driver reported one (or its class names one)."""
    for cause in _causes(exc):
        code = getattr(cause, "pgcode", None)
        if isinstance(code, str):
            return code
        code = _CODES_BY_CLASS.get(type(cause))
        if code is not None:
            return code
    return None


def reconnect_needed(exc: BaseException) -> bool:
    """Whether the connection ``exc`` came from is of no more use (read-only, shut down, broken)."""
    code = sqlstate(exc)
    return code is not None and (code in RECONNECT_SQLSTATES or code.startswith("08"))


def transient(exc: BaseException) -> bool:
    """Whether the same call may succeed when retried: the database unreachable, restarting,
    failing over (read-only until the pool reconnects), or a serialization failure or deadlock."""
    code = sqlstate(exc)
    if code is not None and (code in RECONNECT_SQLSTATES or code in RETRY_SQLSTATES or code.startswith("08")):
        return True
    return any(isinstance(cause, UNAVAILABLE_ERRORS) for cause in _causes(exc))


def forget_connections(engine: sa.engine.Engine) -> None:
    """Drop every pooled connection: the next checkout connects again (to whichever host is writable)."""
    engine.pool._invalidate_time = time.time()  # as SQLAlchemy's disconnect handling does


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

#: Every error that means the database cannot be reached now (the driver's, SQLAlchemy's, the library's).
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    *DROPPED_CONNECTION_ERRORS, sa.exc.TimeoutError, *CONNECTION_ERRORS
)


def connection_invalidated(exc: BaseException) -> bool:
    """Whether SQLAlchemy invalidated the connection this error came from (a retry gets a new one)."""
    return isinstance(exc, sa.exc.DBAPIError) and bool(exc.connection_invalidated)

#: What an HTTP service answers 503 for when :func:`transient` says so (the internal
#: errors too: a read-only server after a promotion raises one).
DATABASE_ERRORS_SEEN_BY_HTTP: tuple[type[BaseException], ...] = (
    *UNAVAILABLE_ERRORS, sa.exc.InternalError, InternalError, *(_dbapi_internal() if CONNECTION_ERRORS else ()),
)
