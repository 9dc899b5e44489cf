"""Signing in to the dashboard: a key, checked once, becomes a session kept on the server.

The cookie holds an opaque random session id (32 bytes); the table
``dashboard_sessions`` in the ledger's database (made on first use) holds
only its SHA-256 digest, the key's id and the session's times, so every
server process accepts it and a copy of the database yields no usable
cookie. Signing out deletes the row: the old cookie is no session from then
on. Each request looks the session and its key up again: a revoked key's
sessions end at once. The key itself is never stored in the cookie, the
table, a URL or a page.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from fastapi import Request, Response

from ledger.store.schema import dashboard_sessions, ensure_schema
from ledger_service.keys import ApiKey, api_keys, engine_of, reader_of

COOKIE = "ledger_session"
#: Hours a session lasts without signing in again.
MAX_AGE_SECONDS = 12 * 3600
#: Roles that may look at usage.
VIEWERS = ("admin", "read")
#: A session id as the cookie carries it: 32 random bytes, URL-safe base64.
_ID_LENGTH = 43



def digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def writer_of(ledger: Any) -> sa.engine.Engine:
    """The ledger's engine, with the keys and sessions tables made on first use."""
    engine = engine_of(ledger)
    ensure_schema(engine)
    return engine


def session_id_of(request: Request) -> str | None:
    """The session id the request's cookie carries, if it looks like one."""
    value = request.cookies.get(COOKIE, "")
    return value if len(value) == _ID_LENGTH and value.isascii() else None


def start(response: Response, request: Request, ledger: Any, key: ApiKey) -> str:
    """Store a new session for ``key`` and set its cookie (HttpOnly, SameSite=Strict, Secure over HTTPS)."""
    session_id = secrets.token_urlsafe(32)
    now = datetime.now(timezone.utc)
    with writer_of(ledger).begin() as connection:
        connection.execute(dashboard_sessions.delete().where(dashboard_sessions.c.expires_at < now))
        connection.execute(dashboard_sessions.insert().values(
            digest=digest(session_id), key_id=key.id, created_at=now,
            expires_at=now + timedelta(seconds=MAX_AGE_SECONDS)))
    response.set_cookie(COOKIE, session_id, max_age=MAX_AGE_SECONDS, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/dashboard")
    return session_id


def end(response: Response, request: Request, ledger: Any) -> None:
    """Delete the request's session, if any, and its cookie."""
    session_id = session_id_of(request)
    if session_id is not None:
        with writer_of(ledger).begin() as connection:
            connection.execute(dashboard_sessions.delete().where(dashboard_sessions.c.digest == digest(session_id)))
    response.delete_cookie(COOKIE, path="/dashboard", httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")


def viewer(request: Request, ledger: Any) -> ApiKey | None:
    """The live admin or read key of the request's unexpired session, or None."""
    session_id = session_id_of(request)
    if session_id is None:
        return None
    writer_of(ledger)
    query = (sa.select(api_keys, dashboard_sessions.c.expires_at)
             .join(dashboard_sessions, dashboard_sessions.c.key_id == api_keys.c.id)
             .where(dashboard_sessions.c.digest == digest(session_id)))
    with reader_of(ledger).connect() as connection:
        row = connection.execute(query).first()
    if row is None or _utc(row.expires_at) <= datetime.now(timezone.utc):
        return None
    if row.revoked_at is not None or row.role not in VIEWERS:
        return None
    return ApiKey(id=row.id, role=row.role, account_id=row.account_id, name=row.name or "",
                  created_at=_utc(row.created_at))


def _utc(value: datetime) -> datetime:
    """SQLite gives naive datetimes back; every stored time is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
