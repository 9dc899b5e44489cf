"""API keys: who may call the HTTP API, with which role, for which account.

A key is ``lk_<id>_<secret>``; only a SHA-256 digest of the whole key is
stored (table ``api_keys`` in the ledger's own database, through
:mod:`ledger.store.keys`; the event log does not need it), so a copy of the
database yields no usable key. The secret is 32 random bytes, so a plain
digest is enough (no slow hash needed), and digests are compared in
constant time.

Roles: ``admin`` may do everything; ``ingest`` records and reverses charges,
for any account or only for its own; ``read`` reads its own account only.

A server may hold keys it has just verified in a :class:`KeyCache` for a
second or two, so that most requests skip the lookup; a revocation then
takes effect within that time rather than on the very next request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ledger.errors import InvalidInput, LedgerError
from ledger.store import keys as stored
from ledger.store.engine import PoolSettings
from ledger.text import text_problem

if TYPE_CHECKING:
    from ledger import Ledger
    from ledger.settings import HttpSettings

ROLES = ("admin", "ingest", "read")
PREFIX = "lk_"
_KEY = re.compile(r"lk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")


class InvalidKey(InvalidInput):
    """A key could not be created as asked (role, account)."""

    what = "key"


class UnknownKey(LedgerError, LookupError):
    """No key has this id."""

    def __init__(self, key_id: str) -> None:
        self.key_id = key_id
        super().__init__(f"no API key with id {key_id!r}")


@dataclass(frozen=True)
class ApiKey:
    """A key as stored: never its secret."""

    id: str
    role: str
    account_id: str | None
    name: str
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def scoped(self) -> bool:
        """True when the key acts for one account only."""
        return self.account_id is not None

    def may_act_for(self, account_id: str) -> bool:
        return self.account_id is None or self.account_id == account_id

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "role": self.role,
            "account_id": self.account_id,
            "name": self.name,
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def open_reader(ledger: Ledger, http: HttpSettings) -> None:
    """Open the key lookup's engine with the ``http`` section's pool (a server, at start)."""
    stored.open_reader(ledger.store, PoolSettings(size=http.key_pool_size, max_overflow=http.key_pool_max_overflow,
                                                  recycle_seconds=ledger.settings.pool_recycle_seconds))


def close_reader(ledger: Ledger) -> None:
    """Close the key lookup's connections (when the ledger closes)."""
    stored.close_reader(ledger.store)


def create_key(ledger: Ledger, role: str, account_id: str | None = None, name: str = "") -> tuple[ApiKey, str]:
    """Store a new key; return it and its secret (shown once, never stored)."""
    errors: dict[str, str] = {}
    if role not in ROLES:
        errors["role"] = f"choose one of {', '.join(ROLES)}, not {role!r}"
    account_id = account_id.strip() if account_id else None
    if role == "read" and not account_id:
        errors["account"] = "a read key needs the account it may read"
    if role == "admin" and account_id:
        errors["account"] = "an admin key acts for every account; give no account"
    if account_id and len(account_id) > 256:
        errors["account"] = "longer than 256 characters"
    elif account_id and (problem := text_problem(account_id, identifier=True)):
        errors["account"] = problem  # an id a charge could never carry
    if len(name) > 256:
        errors["name"] = "longer than 256 characters"
    elif name and (problem := text_problem(name, identifier=True)):
        errors["name"] = problem
    if errors:
        raise InvalidKey(errors)
    key_id = secrets.token_hex(8)
    secret = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    row = stored.KeyRow(id=key_id, digest=digest(secret), role=role, account_id=account_id, name=name,
                        created_at=datetime.now(UTC), revoked_at=None)
    stored.insert_key(ledger.store, row)
    return key_of(row), secret


def list_keys(ledger: Ledger) -> list[ApiKey]:
    """Every key, oldest first, revoked ones included."""
    return [key_of(row) for row in stored.all_keys(ledger.store)]


def revoke_key(ledger: Ledger, key_id: str) -> ApiKey:
    """Revoke a key; revoking twice keeps the first time.

    A running server refuses it once its key cache lets go of it (``LEDGER_HTTP_KEY_CACHE_SECONDS``).
    """
    row = stored.revoke(ledger.store, key_id, datetime.now(UTC))
    if row is None:
        raise UnknownKey(key_id)
    return key_of(row)


def well_formed(presented: str) -> bool:
    """Whether ``presented`` could be a key at all (checked before any lookup)."""
    return _KEY.fullmatch(presented) is not None


def authenticate(ledger: Ledger, presented: str) -> ApiKey | None:
    """The live key ``presented`` is, or None (malformed, unknown or revoked)."""
    match = _KEY.fullmatch(presented)
    if match is None:
        return None
    row = stored.find_key(ledger.store, match.group(1))
    if row is None or not hmac.compare_digest(row["digest"], digest(presented)):
        return None
    if row["revoked_at"] is not None:
        return None
    return key_of(row)


def key_of(row: stored.KeyRow) -> ApiKey:
    """A stored key as the service shows it (without its digest)."""
    return ApiKey(id=row["id"], role=row["role"], account_id=row["account_id"], name=row["name"],
                  created_at=row["created_at"], revoked_at=row["revoked_at"])


class KeyCache:
    """Keys verified in the last ``seconds``, by digest of the presented key.

    Only live keys are held, so a new key works at once and an unknown one is
    looked up every time; a revoked key keeps working for at most ``seconds``.
    ``seconds`` 0 holds nothing (every request looks its key up). Bounded:
    when ``size`` keys are held, the expired ones go, and all of them if none has.
    """

    def __init__(self, seconds: float, size: int = 4096, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.size = size
        self._clock = clock
        self._held: dict[str, tuple[float, ApiKey]] = {}
        self._lock = threading.Lock()

    def get(self, presented: str) -> ApiKey | None:
        """The key ``presented`` was verified as, if that was less than ``seconds`` ago."""
        if self.seconds <= 0:
            return None
        held = self._held.get(digest(presented))
        if held is None or held[0] <= self._clock():
            return None
        return held[1]

    def put(self, presented: str, key: ApiKey) -> None:
        if self.seconds <= 0:
            return
        now = self._clock()
        with self._lock:
            if len(self._held) >= self.size:
                live = {d: h for d, h in self._held.items() if h[0] > now}
                self._held = live if len(live) < self.size else {}
            self._held[digest(presented)] = (now + self.seconds, key)


def authenticate_cached(ledger: Ledger, presented: str, cache: KeyCache) -> ApiKey | None:
    """:func:`authenticate`, answered from ``cache`` when the key was verified a moment ago."""
    key = cache.get(presented)
    if key is None:
        key = authenticate(ledger, presented)
        if key is not None:
            cache.put(presented, key)
    return key
