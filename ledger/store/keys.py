"""The ``api_keys`` table: storing, listing, revoking and looking up API keys.

The table is defined in :mod:`ledger.store.schema`. Writes go through the
ledger's engine. The per-request lookups (a key, a dashboard session, the
health check) go through a small engine of their own per ledger engine
(:func:`reader_of`): the ledger's engine begins every transaction outside its
own as a write (``BEGIN IMMEDIATE`` on SQLite), which would queue each
request behind the writers, while a plain engine reads without taking the
write lock. A server opens it with its settings' pool (:func:`open_reader`);
elsewhere the first lookup opens it with :data:`READER_POOL`.

Rows come back as :class:`KeyRow` with UTC-aware times (SQLite returns
naive ones).
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypedDict

import sqlalchemy as sa

from ledger.store.engine import PoolSettings
from ledger.store.schema import api_keys, stored_utc

if TYPE_CHECKING:
    from ledger.store.base import Store

#: The reader's pool on PostgreSQL when no settings gave one (``LEDGER_HTTP_KEY_POOL_*``'s defaults).
READER_POOL = PoolSettings(size=4, max_overflow=8)
#: Seconds a reader waits for SQLite's lock before giving up.
READER_SQLITE_TIMEOUT_SECONDS = 60

_readers: weakref.WeakKeyDictionary[sa.engine.Engine, sa.engine.Engine] = weakref.WeakKeyDictionary()


class KeyRow(TypedDict):
    """A stored key: its secret's digest, never the secret."""

    id: str
    digest: str
    role: str
    account_id: str | None
    name: str
    created_at: datetime
    revoked_at: datetime | None


def open_reader(store: Store, pool: PoolSettings = READER_POOL) -> sa.engine.Engine:
    """The engine the per-request lookups use, made once per ledger engine (``pool`` on PostgreSQL)."""
    engine = store.engine
    reader = _readers.get(engine)
    if reader is None:
        if engine.dialect.name == "sqlite":
            reader = sa.create_engine(engine.url, connect_args={"timeout": READER_SQLITE_TIMEOUT_SECONDS})
        else:
            reader = sa.create_engine(engine.url, pool_size=pool.size, max_overflow=pool.max_overflow,
                                      pool_recycle=pool.recycle_seconds)
        _readers[engine] = reader
    return reader


def reader_of(store: Store) -> sa.engine.Engine:
    """The lookups' engine, opened with :data:`READER_POOL` unless a server opened it already."""
    return open_reader(store)


def close_reader(store: Store) -> None:
    """Close the lookups' connections (when the ledger closes)."""
    reader = _readers.pop(store.engine, None)
    if reader is not None:
        reader.dispose()


def reachable(store: Store) -> bool:
    """Whether the database answers a trivial query through the lookups' engine."""
    try:
        with reader_of(store).connect() as connection:
            connection.execute(sa.text("SELECT 1"))
        return True
    except sa.exc.SQLAlchemyError:
        return False


def insert_key(store: Store, row: KeyRow) -> None:
    """Store a new key."""
    with store.engine.begin() as connection:
        connection.execute(api_keys.insert().values(**row))


def all_keys(store: Store) -> list[KeyRow]:
    """Every key, oldest first, revoked ones included."""
    query = sa.select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id)
    with store.engine.connect() as connection:
        return [key_row(row._mapping) for row in connection.execute(query)]


def revoke(store: Store, key_id: str, at: datetime) -> KeyRow | None:
    """Mark the key revoked at ``at`` unless it already is; the key as it now stands, or None if unknown."""
    with store.engine.begin() as connection:
        connection.execute(
            api_keys.update().where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=at)
        )
        row = connection.execute(sa.select(api_keys).where(api_keys.c.id == key_id)).first()
    return None if row is None else key_row(row._mapping)


def find_key(store: Store, key_id: str) -> KeyRow | None:
    """The key with this id (revoked or not), read through the lookups' engine."""
    with reader_of(store).connect() as connection:
        row = connection.execute(sa.select(api_keys).where(api_keys.c.id == key_id)).first()
    return None if row is None else key_row(row._mapping)


def key_row(row: Mapping[str, Any]) -> KeyRow:
    """A selected ``api_keys`` row as a :class:`KeyRow`."""
    revoked = row["revoked_at"]
    return KeyRow(id=row["id"], digest=row["digest"], role=row["role"], account_id=row["account_id"],
                  name=row["name"] or "", created_at=stored_utc(row["created_at"]),
                  revoked_at=stored_utc(revoked) if revoked else None)

