"""The event-sourcing library's infrastructure factory for the ledger: its datastore and its store.

``Ledger`` names this factory as its persistence module. It makes the
datastore from the URL (:func:`ledger.store.engine.make_datastore`, its pool
from the ``SQLALCHEMY_POOL_*`` environment keys the ledger sets from its
settings) and the dialect's store as the application recorder.
"""

from __future__ import annotations

from eventsourcing.utils import Environment
from eventsourcing_sqlalchemy.factory import SQLAlchemyFactory

from ledger.store.engine import PoolSettings, make_datastore
from ledger.store.maintenance import warn_if_unvacuumed
from ledger.store.postgres import PostgresStore
from ledger.store.recorder import LedgerRecorder
from ledger.store.replication import warn_if_unsafe
from ledger.store.sqlite import SQLiteStore

#: Environment keys of the PostgreSQL pool (set by the ledger from its settings).
POOL_SIZE = "SQLALCHEMY_POOL_SIZE"
POOL_MAX_OVERFLOW = "SQLALCHEMY_POOL_MAX_OVERFLOW"
POOL_RECYCLE_SECONDS = "SQLALCHEMY_POOL_RECYCLE_SECONDS"
CONNECT_TIMEOUT_SECONDS = "SQLALCHEMY_CONNECT_TIMEOUT_SECONDS"


class LedgerFactory(SQLAlchemyFactory):
    """eventsourcing-sqlalchemy's factory, with the ledger's datastore and store."""

    def __init__(self, env: Environment) -> None:
        url = env.get(self.SQLALCHEMY_URL)
        super(SQLAlchemyFactory, self).__init__(env)
        self._schema_name = self.env.get(self.SQLALCHEMY_SCHEMA)
        self.datastore = make_datastore(url, _pool(self.env))
        postgres = self.datastore.engine is not None and self.datastore.engine.dialect.name == "postgresql"
        self.application_recorder_class: type[LedgerRecorder] = PostgresStore if postgres else SQLiteStore
        if postgres:  # once per process and database: a WARNING when a charge could be lost, or rows not reclaimed
            warn_if_unsafe(self.datastore.engine)  # type: ignore[arg-type]
            warn_if_unvacuumed(self.datastore.engine)  # type: ignore[arg-type]

    def close(self) -> None:
        if self.datastore.engine is not None:
            self.datastore.engine.dispose()  # type: ignore[union-attr]


def _pool(env: Environment) -> PoolSettings:
    """The pool from the environment, each value defaulting to :class:`PoolSettings`'."""
    default = PoolSettings()
    return PoolSettings(
        size=int(env.get(POOL_SIZE) or default.size),
        max_overflow=int(env.get(POOL_MAX_OVERFLOW) or default.max_overflow),
        recycle_seconds=int(env.get(POOL_RECYCLE_SECONDS) or default.recycle_seconds),
        connect_timeout=int(env.get(CONNECT_TIMEOUT_SECONDS) or default.connect_timeout),
    )
