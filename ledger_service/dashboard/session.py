"""Signing in to the dashboard: a key, checked once, becomes a signed session cookie.

The cookie holds the key's id and the time of sign-in, signed (itsdangerous)
with a secret kept in the ledger's database (table ``dashboard_secret``,
made on first use), so every server process and restart accepts it. The key
itself is never stored in the cookie, a URL or a page. Each request looks the
key up again: a revoked key's session ends at once.
"""

from __future__ import annotations

import secrets
import weakref
from typing import Any

import sqlalchemy as sa
from fastapi import Request, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer

from ledger.persistence import create_tables
from ledger_service.keys import ApiKey, api_keys, reader_of

COOKIE = "ledger_session"
#: Hours a session lasts without signing in again.
MAX_AGE_SECONDS = 12 * 3600
#: Roles that may look at usage.
VIEWERS = ("admin", "read")

metadata = sa.MetaData()
dashboard_secret = sa.Table(
    "dashboard_secret",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("secret", sa.String(128), nullable=False),
)

_signers: "weakref.WeakKeyDictionary[sa.engine.Engine, URLSafeTimedSerializer]" = weakref.WeakKeyDictionary()


def signer(ledger: Any) -> URLSafeTimedSerializer:
    """The cookie signer, its secret made once per database and shared by every process."""
    engine = ledger.recorder.datastore.engine
    found = _signers.get(engine)
    if found is None:
        create_tables(engine, metadata.sorted_tables, _ensure_secret)
        with engine.connect() as connection:
            secret = connection.execute(sa.select(dashboard_secret.c.secret).where(dashboard_secret.c.id == 1)).scalar_one()
            connection.rollback()
        found = _signers[engine] = URLSafeTimedSerializer(secret, salt="ledger-dashboard")
    return found


def _ensure_secret(connection: sa.engine.Connection) -> None:
    """Under the schema lock: the first process to get here makes the secret."""
    exists = connection.execute(sa.select(dashboard_secret.c.id).where(dashboard_secret.c.id == 1)).first()
    if exists is None:
        connection.execute(dashboard_secret.insert().values(id=1, secret=secrets.token_urlsafe(48)))


def start(response: Response, request: Request, ledger: Any, key: ApiKey) -> None:
    """Set the session cookie for ``key``: HttpOnly, SameSite=Strict, Secure over HTTPS."""
    token = signer(ledger).dumps({"kid": key.id})
    response.set_cookie(COOKIE, token, max_age=MAX_AGE_SECONDS, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/dashboard")


def end(response: Response, request: Request) -> None:
    response.delete_cookie(COOKIE, path="/dashboard", httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")


def viewer(request: Request, ledger: Any) -> ApiKey | None:
    """The live admin or read key the request's session stands for, or None."""
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    try:
        data = signer(ledger).loads(token, max_age=MAX_AGE_SECONDS)
    except BadSignature:
        return None
    key_id = data.get("kid") if isinstance(data, dict) else None
    if not isinstance(key_id, str):
        return None
    with reader_of(ledger).connect() as connection:
        row = connection.execute(sa.select(api_keys).where(api_keys.c.id == key_id)).first()
    if row is None or row.revoked_at is not None or row.role not in VIEWERS:
        return None
    return ApiKey(id=row.id, role=row.role, account_id=row.account_id, name=row.name or "",
                  created_at=row.created_at)
