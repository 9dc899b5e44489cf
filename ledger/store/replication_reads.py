"""Reads off the primary: the engine of ``LEDGER_READ_DATABASE_URL``, a standby that serves reports.

What moves there is what reads the daily billing records through
:func:`ledger.store.report_queries.reading` given a Ledger: ``ledger report``,
``GET /v1/usage``, the dashboard's figures and ``projections.reports``. The
log, the projector, budgets, reservations, balances, account totals, keys and
sessions stay on the primary (they must be exact, or they write).

The engine is made once per ledger engine. Every session on it is read-only
(a write there fails, whatever server the URL names), it never creates
tables (a standby is a copy of the primary's), and a URL naming several hosts
prefers a standby (``target_session_attrs=prefer-standby``).
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa

from ledger.store.replication import read_lag

if TYPE_CHECKING:
    from ledger.application import Ledger
    from ledger.settings import Settings

#: The read engine's pool: reports are few and long, next to many short writes.
READ_POOL_SIZE = 4
READ_POOL_MAX_OVERFLOW = 8

_engines: weakref.WeakKeyDictionary[sa.engine.Engine, sa.engine.Engine] = weakref.WeakKeyDictionary()
_making = threading.Lock()


def read_url_problem(settings: Settings) -> str | None:
    """Why ``read_database_url`` cannot be used with these settings, or None."""
    url = settings.read_database_url
    if url is None:
        return None
    if settings.is_sqlite:
        return "read_database_url (LEDGER_READ_DATABASE_URL): SQLite is embedded, a single file; " \
               "a read URL needs PostgreSQL (unset it)"
    if not url.startswith("postgresql"):
        return f"read_database_url (LEDGER_READ_DATABASE_URL): expected postgresql+psycopg2://…, got {url.split(':', 1)[0]}:"
    return None


def make_read_engine(settings: Settings) -> sa.engine.Engine:
    """A read-only engine on ``settings.read_database_url`` (a PostgreSQL standby)."""
    problem = read_url_problem(settings)
    if problem is not None:
        raise ValueError(problem)
    assert settings.read_database_url is not None
    engine = sa.create_engine(settings.read_database_url, pool_size=READ_POOL_SIZE,
                              max_overflow=READ_POOL_MAX_OVERFLOW, pool_recycle=settings.pool_recycle_seconds,
                              connect_args=_connect_args(settings))

    @sa.event.listens_for(engine, "connect")
    def _read_only(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.set_session(readonly=True)

    return engine


def _connect_args(settings: Settings) -> dict[str, Any]:
    """Bounded waits, and a standby first when the URL names several hosts (each unless the URL sets it)."""
    assert settings.read_database_url is not None
    query = sa.engine.make_url(settings.read_database_url).query
    wanted: dict[str, Any] = {"connect_timeout": settings.connect_timeout_seconds, "keepalives": 1,
                              "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3}
    hosts = query.get("host")
    if isinstance(hosts, tuple) and len(hosts) > 1:
        wanted["target_session_attrs"] = "prefer-standby"
    return {name: value for name, value in wanted.items() if name not in query}


def read_engine(ledger: Ledger) -> sa.engine.Engine | None:
    """The ledger's read engine, made on first use; None when reads stay on the primary."""
    if ledger.settings.read_database_url is None:
        return None
    primary = ledger.store.engine
    engine = _engines.get(primary)
    if engine is None:
        with _making:
            engine = _engines.get(primary)
            if engine is None:
                engine = _engines[primary] = make_read_engine(ledger.settings)
    return engine


def close_read_engine(ledger: Ledger) -> None:
    """Release the read engine's connections (when the ledger's server shuts down)."""
    engine = _engines.pop(ledger.store.engine, None)
    if engine is not None:
        engine.dispose()


@dataclass(frozen=True, slots=True)
class Reads:
    """Where reports are read from, and how far behind the primary that is."""

    source: Literal["primary", "standby", "read database"]
    lag_seconds: float | None = None
    lag_bytes: int | None = None
    #: The read database could not be reached or read (its first line).
    error: str | None = None

    @property
    def summary(self) -> str:
        """One line for people: "reads from a standby, 2.5 s behind"."""
        if self.source == "primary":
            return "reads from the primary"
        if self.error is not None:
            return f"reads from {'a standby' if self.source == 'standby' else 'the read database'}: " \
                   f"unreachable ({self.error})"
        if self.source == "standby":
            behind = "lag unknown" if self.lag_seconds is None else f"{seconds(self.lag_seconds)} s behind"
            return f"reads from a standby, {behind}"
        return "reads from the read database (not a standby: no lag)"


def seconds(value: float) -> str:
    """Seconds as people read them: one decimal below ten, whole above."""
    return f"{value:.1f}" if value < 10 else f"{value:,.0f}"


def reads_at(engine: sa.engine.Engine | None) -> Reads:
    """Where reads go given the read engine (None: the primary), its lag read now; never raises."""
    if engine is None:
        return Reads("primary")
    try:
        lag = read_lag(engine)
    except Exception as exc:  # noqa: BLE001 - health reports an unreachable standby, it does not fail
        text = str(getattr(exc, "orig", None) or exc).strip()
        return Reads("read database", error=text.splitlines()[0] if text else type(exc).__name__)
    if not lag.in_recovery:
        return Reads("read database")
    return Reads("standby", lag.lag_seconds, lag.lag_bytes)


def reads_of(ledger: Ledger) -> Reads:
    """Where this ledger's reports are read from, and its lag (a round trip to the read database)."""
    try:
        engine = read_engine(ledger)
    except ValueError as exc:  # a read URL these settings cannot use: said, not raised
        return Reads("read database", error=str(exc))
    return reads_at(engine)
