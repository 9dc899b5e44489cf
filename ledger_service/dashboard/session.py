"""Signing in to the dashboard: a key, checked once, becomes a session kept on the server.

The cookie holds an opaque random session id (32 bytes); the table
``dashboard_sessions`` in the ledger's database (:mod:`ledger.store.sessions`)
holds only its SHA-256 digest, the key's id and the session's times, so every
server process accepts it and a copy of the database yields no usable
cookie. Signing out deletes the row: the old cookie is no session from then
on. Each request looks the session and its key up again: a revoked key's
sessions end at once. The key itself is never stored in the cookie, the
table, a URL or a page.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from fastapi import Request, Response

from ledger.store import sessions as stored
from ledger_service.keys import ApiKey, key_of

if TYPE_CHECKING:
    from ledger import Ledger

COOKIE = "ledger_session"
#: Roles that may look at usage.
VIEWERS = ("admin", "read")
#: A session id as the cookie carries it: 32 random bytes, URL-safe base64.
_ID_LENGTH = 43


def digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def session_id_of(request: Request) -> str | None:
    """The session id the request's cookie carries, if it looks like one."""
    value = request.cookies.get(COOKIE, "")
    return value if len(value) == _ID_LENGTH and value.isascii() else None


def start(response: Response, request: Request, ledger: Ledger, key: ApiKey) -> str:
    """Store a new session for ``key`` (expired ones go) and set its cookie (HttpOnly, SameSite=Strict,
    Secure over HTTPS), both lasting the app's ``dashboard.session_seconds``."""
    session_id = secrets.token_urlsafe(32)
    lifetime = request.app.state.dashboard.session_seconds
    now = datetime.now(UTC)
    stored.add_session(ledger.store, digest(session_id), key.id, now, now + timedelta(seconds=lifetime))
    response.set_cookie(COOKIE, session_id, max_age=lifetime, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/dashboard")
    return session_id


def end(response: Response, request: Request, ledger: Ledger) -> None:
    """Delete the request's session, if any, and its cookie."""
    session_id = session_id_of(request)
    if session_id is not None:
        stored.delete_session(ledger.store, digest(session_id))
    response.delete_cookie(COOKIE, path="/dashboard", httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")


def viewer(request: Request, ledger: Ledger) -> ApiKey | None:
    """The live admin or read key of the request's unexpired session, or None."""
    session_id = session_id_of(request)
    if session_id is None:
        return None
    found = stored.find_session(ledger.store, digest(session_id))
    if found is None or found.expires_at <= datetime.now(UTC):
        return None
    if found.key["revoked_at"] is not None or found.key["role"] not in VIEWERS:
        return None
    return key_of(found.key)
