"""The ``dashboard_sessions`` table: a session's digest, its key and its times.

The table is defined in :mod:`ledger.store.schema`. Starting and ending a
session write through the ledger's engine; the per-request lookup reads,
joined with its key, through the lookups' engine of :mod:`ledger.store.keys`.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, NamedTuple

import sqlalchemy as sa

from ledger.store.keys import KeyRow, key_row, reader_of
from ledger.store.schema import api_keys, dashboard_sessions, stored_utc

if TYPE_CHECKING:
    from ledger.store.base import Store


class SessionRow(NamedTuple):
    """A stored session's key and when the session expires."""

    key: KeyRow
    expires_at: datetime


def add_session(store: Store, digest: str, key_id: str, created_at: datetime, expires_at: datetime) -> None:
    """Store a session, deleting the sessions that expired before ``created_at`` in the same transaction."""
    with store.engine.begin() as connection:
        connection.execute(dashboard_sessions.delete().where(dashboard_sessions.c.expires_at < created_at))
        connection.execute(dashboard_sessions.insert().values(
            digest=digest, key_id=key_id, created_at=created_at, expires_at=expires_at))


def delete_session(store: Store, digest: str) -> None:
    """Delete the session with this digest, if there is one."""
    with store.engine.begin() as connection:
        connection.execute(dashboard_sessions.delete().where(dashboard_sessions.c.digest == digest))


def find_session(store: Store, digest: str) -> SessionRow | None:
    """The session with this digest and its key (expired, revoked or not), or None."""
    query = (sa.select(api_keys, dashboard_sessions.c.expires_at)
             .join(dashboard_sessions, dashboard_sessions.c.key_id == api_keys.c.id)
             .where(dashboard_sessions.c.digest == digest))
    with reader_of(store).connect() as connection:
        row = connection.execute(query).first()
    if row is None:
        return None
    return SessionRow(key_row(row._mapping), stored_utc(row.expires_at))
