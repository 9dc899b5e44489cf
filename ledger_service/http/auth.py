"""Who is calling: the bearer key checked on every request, and what its role allows.

A missing, malformed, unknown or revoked key is 401; a key whose role or
account does not cover the request is 403, decided before anything changes
and before any refusal of the request's body (see :func:`check_caller`).
A request without a well-formed key is refused at once; a well-formed one
is looked up in the same worker thread as the request's work (one
thread hand-over per request, not two), unless the app's key cache verified
it within the last ``LEDGER_HTTP_KEY_CACHE_SECONDS`` (then a revocation takes
effect within that time).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ledger_service.http.problems import Problem
from ledger_service.keys import ApiKey, KeyCache, authenticate_cached, well_formed

if TYPE_CHECKING:
    from ledger import Ledger

bearer = HTTPBearer(auto_error=False, description="An API key from `ledger keys create`.")

#: What each role may do.
PERMISSIONS = {
    "admin": frozenset({"write", "read"}),
    "ingest": frozenset({"write"}),
    "read": frozenset({"read"}),
}


def unauthorized(detail: str) -> Problem:
    return Problem(401, detail, headers={"WWW-Authenticate": 'Bearer realm="ledger"'})


@dataclass(frozen=True)
class Caller:
    """A request's presented key and the action it asks for; :meth:`key` checks both (blocking)."""

    presented: str
    action: str
    cache: KeyCache

    def key(self, ledger: Ledger) -> ApiKey:
        key = authenticate_cached(ledger, self.presented, self.cache)
        if key is None:
            raise unauthorized("the API key is unknown or revoked")
        if self.action not in PERMISSIONS.get(key.role, frozenset()):
            raise Problem(403, f"a {key.role} key may not {self.action}")
        return key


def requires(action: str) -> Callable[..., object]:
    """A dependency giving the request's :class:`Caller`; no key, or not a key at all, is 401 at once."""

    async def caller(request: Request,
                     credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Caller:
        # ``credentials`` declares the bearer scheme in the OpenAPI spec; the key is read by caller_of.
        return caller_of(request, action)

    return caller


#: An endpoint's caller that may read (``caller: ReadCaller``) or record and reverse (``WriteCaller``).
ReadCaller = Annotated[Caller, Depends(requires("read"))]
WriteCaller = Annotated[Caller, Depends(requires("write"))]


def caller_of(request: Request, action: str) -> Caller:
    """The request's :class:`Caller`, read from its ``Authorization`` header; 401 when there is no key."""
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        raise unauthorized("send an API key as 'Authorization: Bearer KEY'")
    if not well_formed(presented):
        raise unauthorized("the API key is unknown or revoked")
    caller = Caller(presented, action, request.app.state.keys)
    request.state.caller = caller
    return caller


async def check_caller(request: Request) -> None:
    """401 or 403 for the request's :class:`Caller`, if it has one (made by :func:`caller_of`).

    Called before the request is refused for anything else (its body), so
    that authentication comes first while an accepted request still looks
    its key up once, in the thread that does its work.
    """
    caller = getattr(request.state, "caller", None)
    if isinstance(caller, Caller):
        await run_in_threadpool(caller.key, request.app.state.ledger)


def check_account(key: ApiKey, account_id: str, what: str = "account") -> None:
    """403 unless ``key`` acts for ``account_id``."""
    if not key.may_act_for(account_id):
        raise Problem(403, f"this key acts for account {key.account_id!r} only",
                      errors=[{"field": what, "detail": "outside this key's account"}])


def plain_text(value: str, limit: int = 256) -> bool:
    """Text a store can compare with: bounded, printable (a NUL would break the query, not match)."""
    return len(value) <= limit and value.isprintable()
