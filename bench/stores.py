"""Fresh stores per scenario, and engines set up exactly as the ledger sets up its own.

PostgreSQL: the benchmark database's ``public`` schema is dropped and
recreated before each scenario (with ``recreate_schema`` off, for small
sizes where making the schema costs more than the scenario: dropped before
the first, then its tables emptied before each next one). SQLite: each scenario gets a new file in a
temporary directory beside the given database file (same disk, same fsync).
Baselines connect through :func:`ledger.store.engine.make_datastore`, so they
share the ledger's driver, pool and durability settings (SQLite WAL with its
default ``synchronous``, BEGIN IMMEDIATE; PostgreSQL's default fsync).
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import sqlalchemy as sa

from bench.rows import POSTGRESQL, SQLITE
from ledger.store.engine import make_datastore


class Store:
    """One database the benchmark runs on, handing out empty stores."""

    def __init__(self, url: str, *, recreate_schema: bool = True) -> None:
        self.url = url
        self.recreate_schema = recreate_schema
        self.dropped = False
        if url.startswith("sqlite"):
            self.kind = SQLITE
            path = url.split(":///", 1)[-1].split("?", 1)[0]
            folder = Path(path).parent if path and path != ":memory:" else Path(tempfile.gettempdir())
            self.folder = folder.resolve()
        elif url.startswith("postgresql"):
            self.kind = POSTGRESQL
            self.folder = None
        else:
            raise ValueError(f"unsupported database URL {url!r}: use sqlite:///… or postgresql+psycopg2://…")

    @contextmanager
    def fresh(self, name: str) -> Iterator[str]:
        """The URL of an empty store for one scenario."""
        if self.kind == POSTGRESQL:
            if self.recreate_schema or not self.dropped:
                reset_postgres(self.url)
                self.dropped = True
            else:
                empty_postgres(self.url)
            yield self.url
            return
        assert self.folder is not None
        self.folder.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=f"ledger-bench-{name}-", dir=self.folder))
        try:
            yield f"sqlite:///{folder / 'store.db'}"
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def describe(self) -> dict[str, str]:
        """Server version and durability settings, for the published table."""
        if self.kind == POSTGRESQL:
            engine = sa.create_engine(self.url)
            try:
                with engine.connect() as connection:
                    show = lambda name: str(connection.exec_driver_sql(f"SHOW {name}").scalar())  # noqa: E731
                    return {
                        "version": show("server_version"),
                        "durability": f"fsync={show('fsync')}, synchronous_commit={show('synchronous_commit')}, "
                        f"wal_sync_method={show('wal_sync_method')}",
                    }
            finally:
                engine.dispose()
        with self.fresh("describe") as url:
            engine = engine_for(url)
            try:
                with engine.connect() as connection:
                    version = connection.exec_driver_sql("SELECT sqlite_version()").scalar()
                    journal = connection.exec_driver_sql("PRAGMA journal_mode").scalar()
                    synchronous = connection.exec_driver_sql("PRAGMA synchronous").scalar()
                    connection.rollback()
            finally:
                engine.dispose()
        levels = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
        return {
            "version": str(version),
            "durability": f"journal_mode={journal}, synchronous={levels.get(synchronous, synchronous)}, "
            f"files in {self.folder}",
        }


def engine_for(url: str) -> sa.engine.Engine:
    """An engine configured like the ledger's (same hooks, pool and pragmas)."""
    engine = make_datastore(url).engine
    assert isinstance(engine, sa.engine.Engine)
    return engine


def reset_postgres(url: str) -> None:
    """Drop and recreate the ``public`` schema: every table gone."""
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("DROP SCHEMA IF EXISTS public CASCADE")
            connection.exec_driver_sql("CREATE SCHEMA public")
    finally:
        engine.dispose()


def empty_postgres(url: str) -> None:
    """Delete every row of the ``public`` schema's tables and restart its sequences: the schema stays.

    DELETE rather than TRUNCATE: for the few rows of small sizes it is ten
    times quicker (TRUNCATE makes every table's files anew and syncs them).
    """
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            tables = connection.exec_driver_sql(
                "SELECT 'public.' || quote_ident(tablename) FROM pg_tables WHERE schemaname = 'public'"
            ).scalars().all()
            sequences = connection.exec_driver_sql(
                "SELECT 'public.' || quote_ident(sequencename) FROM pg_sequences WHERE schemaname = 'public'"
            ).scalars().all()
            statements = [f"DELETE FROM {table}" for table in tables]
            statements += [f"ALTER SEQUENCE {sequence} RESTART" for sequence in sequences]
            if statements:
                connection.exec_driver_sql("; ".join(statements))
    finally:
        engine.dispose()
