"""Who is calling: the bearer key checked on every request, and what its role allows.

A missing, malformed, unknown or revoked key is 401; a key whose role or
account does not cover the request is 403, decided before anything changes.
"""

from __future__ import annotations

from typing import Callable

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ledger_service.http.problems import Problem
from ledger_service.keys import ApiKey, authenticate

bearer = HTTPBearer(auto_error=False, description="An API key from `ledger keys create`.")

#: What each role may do.
PERMISSIONS = {
    "admin": frozenset({"write", "read"}),
    "ingest": frozenset({"write"}),
    "read": frozenset({"read"}),
}


def unauthorized(detail: str) -> Problem:
    return Problem(401, detail, headers={"WWW-Authenticate": 'Bearer realm="ledger"'})


def requires(action: str) -> Callable[..., object]:
    """A dependency giving the caller's key, refused unless its role allows ``action``."""

    async def caller(request: Request,
                     credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> ApiKey:
        if credentials is None:
            raise unauthorized("send an API key as 'Authorization: Bearer KEY'")
        ledger = request.app.state.ledger
        key = await run_in_threadpool(authenticate, ledger, credentials.credentials)
        if key is None:
            raise unauthorized("the API key is unknown or revoked")
        if action not in PERMISSIONS.get(key.role, frozenset()):
            raise Problem(403, f"a {key.role} key may not {action}")
        return key

    return caller


def check_account(key: ApiKey, account_id: str, what: str = "account") -> None:
    """403 unless ``key`` acts for ``account_id``."""
    if not key.may_act_for(account_id):
        raise Problem(403, f"this key acts for account {key.account_id!r} only",
                      errors=[{"field": what, "detail": "outside this key's account"}])


def plain_text(value: str, limit: int = 256) -> bool:
    """Text a store can compare with: bounded, printable (a NUL would break the query, not match)."""
    return len(value) <= limit and value.isprintable()
