"""Webhook endpoints, and the signature each delivery carries.

An endpoint receives every account's alerts, or one account's when added
for it. Each POST is signed like Stripe's: the header
``Ledger-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">``
with the endpoint's secret, so a receiver checks the body is ours and fresh
(:func:`verify`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ledger.budget_rules import identifier, utc_now
from ledger.errors import InvalidWebhook, UnknownWebhook
from ledger.store import alerts as alert_store

if TYPE_CHECKING:
    from ledger.application import Ledger

SIGNATURE_HEADER = "Ledger-Signature"
#: A receiver's default tolerance for the signature's age, in seconds.
DEFAULT_TOLERANCE_SECONDS = 300


@dataclass(frozen=True)
class WebhookEndpoint:
    """A registered endpoint; ``secret`` signs its deliveries."""

    endpoint_id: str
    url: str
    secret: str
    account_id: str | None
    created_at: datetime

    def to_dict(self, *, with_secret: bool = False) -> dict[str, Any]:
        data = {"endpoint_id": self.endpoint_id, "url": self.url, "account_id": self.account_id,
                "created_at": self.created_at.isoformat()}
        if with_secret:
            data["secret"] = self.secret
        return data


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The ``Ledger-Signature`` header value for ``body``."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def verify(secret: str, body: bytes, header: str, *, tolerance: int = DEFAULT_TOLERANCE_SECONDS,
           now: float | None = None) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` and is at most ``tolerance`` seconds old."""
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        t = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance:
        return False
    expected = sign(secret, body, t).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def add_webhook(ledger: Ledger, url: Any, *, secret: Any = None, account_id: Any = None) -> WebhookEndpoint:
    """Register an endpoint (a secret is made when none is given)."""
    errors: dict[str, str] = {}
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
        errors["url"] = "must be an http:// or https:// URL"
    if secret is not None and (not isinstance(secret, str) or len(secret) < 16 or not secret.isprintable()):
        errors["secret"] = "must be at least 16 printable characters"
    account = identifier(errors, "account_id", account_id, required=False)
    if errors:
        raise InvalidWebhook(errors)
    endpoint = WebhookEndpoint(
        f"wh_{secrets.token_hex(8)}", url, secret or f"whsec_{secrets.token_urlsafe(24)}", account, utc_now()
    )
    with ledger.store.transaction(commit=True) as session:
        alert_store.insert_endpoint(session, {
            "endpoint_id": endpoint.endpoint_id, "url": endpoint.url, "secret": endpoint.secret,
            "account_id": endpoint.account_id, "created_at": endpoint.created_at,
        })
    return endpoint


def webhooks(ledger: Ledger) -> list[WebhookEndpoint]:
    """Registered endpoints, oldest first."""
    with ledger.store.transaction(commit=False) as session:
        found = alert_store.endpoint_rows(session)
    return [WebhookEndpoint(r["endpoint_id"], r["url"], r["secret"], r["account_id"], r["created_at"]) for r in found]


def remove_webhook(ledger: Ledger, endpoint_id: str) -> None:
    """Stop posting to an endpoint. Raises :class:`UnknownWebhook`."""
    with ledger.store.transaction(commit=True) as session:
        if not alert_store.remove_endpoint(session, endpoint_id, utc_now()):
            raise UnknownWebhook(endpoint_id)
