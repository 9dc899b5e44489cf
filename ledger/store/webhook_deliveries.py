"""The webhook deliveries outbox: claiming what is due, recording each attempt, the log.

A delivery row (one alert for one endpoint) is *claimed* before its POST:
its ``attempts`` goes up by one and its ``next_attempt_at`` moves one claim
lease ahead, in a short transaction of its own. The POST runs outside any
transaction; its outcome is recorded afterwards only if the row is still the
one claimed (pending, same attempt count). So:

* two workers never post the same attempt at once: on PostgreSQL the claim
  reads with ``FOR UPDATE SKIP LOCKED`` (a row another worker is claiming is
  skipped, not waited for), and on either store the claim's update is
  conditional on the attempt count it read, so only one claimer wins;
* a process that dies between its POST and the record leaves the row pending
  with a due time one lease ahead: the delivery is made again then (at least
  once; receivers deduplicate on the alert id).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ledger.store.schema import (
    budget_alerts,
    stored_utc,
    webhook_deliveries,
    webhook_endpoints,
)

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"
#: Longest error text kept in the log for one attempt.
MAX_ERROR_LENGTH = 500


@dataclass(frozen=True)
class Claim:
    """One claimed attempt: what to POST, where, and the attempt number it holds."""

    alert_id: str
    endpoint_id: str
    attempt: int
    url: str
    secret: str
    body: bytes


def any_due(session: Session, now: datetime) -> bool:
    """Whether some pending delivery is due at ``now`` (a read: no write lock is taken to find nothing)."""
    d = webhook_deliveries
    query = sa.select(d.c.alert_id).where(d.c.state == PENDING, d.c.next_attempt_at <= now).limit(1)
    return session.execute(query).first() is not None


def claim_due(session: Session, dialect: str, now: datetime, lease_until: datetime, limit: int) -> list[Claim]:
    """Claim up to ``limit`` pending deliveries due at ``now``; each is not due again before ``lease_until``."""
    d = webhook_deliveries
    due = (
        sa.select(d.c.alert_id, d.c.endpoint_id, d.c.attempts)
        .where(d.c.state == PENDING, d.c.next_attempt_at <= now)
        .order_by(d.c.next_attempt_at, d.c.alert_id, d.c.endpoint_id)
        .limit(limit)
    )
    if dialect == "postgresql":
        due = due.with_for_update(skip_locked=True)
    claimed: list[tuple[str, str, int]] = []
    for alert_id, endpoint_id, attempts in session.execute(due).all():
        won = session.execute(
            d.update()
            .where(d.c.alert_id == alert_id, d.c.endpoint_id == endpoint_id,
                   d.c.state == PENDING, d.c.attempts == attempts)
            .values(attempts=attempts + 1, next_attempt_at=lease_until)
        )
        if won.rowcount:  # type: ignore[attr-defined]
            claimed.append((alert_id, endpoint_id, attempts + 1))
    if not claimed:
        return []
    targets = _targets(session, {(a, e) for a, e, _ in claimed})
    return [Claim(a, e, n, *targets[(a, e)]) for a, e, n in claimed if (a, e) in targets]


def _targets(session: Session, keys: set[tuple[str, str]]) -> dict[tuple[str, str], tuple[str, str, bytes]]:
    """Per (alert, endpoint): the endpoint's URL and secret and the alert's body, as stored."""
    d, a, e = webhook_deliveries, budget_alerts, webhook_endpoints
    query = (
        sa.select(d.c.alert_id, d.c.endpoint_id, e.c.url, e.c.secret, a.c.body)
        .select_from(d.join(a, a.c.alert_id == d.c.alert_id).join(e, e.c.endpoint_id == d.c.endpoint_id))
        .where(sa.tuple_(d.c.alert_id, d.c.endpoint_id).in_(sorted(keys)))
    )
    return {
        (alert_id, endpoint_id): (url, secret, body.encode() if isinstance(body, str) else bytes(body))
        for alert_id, endpoint_id, url, secret, body in session.execute(query)
    }


def _claimed(claim: Claim) -> Any:
    """The row of ``claim`` if it is still as claimed (pending, at the claimed attempt)."""
    d = webhook_deliveries
    return sa.and_(d.c.alert_id == claim.alert_id, d.c.endpoint_id == claim.endpoint_id,
                   d.c.state == PENDING, d.c.attempts == claim.attempt)


def record_delivered(session: Session, claim: Claim, status: int, at: datetime) -> bool:
    """The attempt was acknowledged (2xx). False if the row moved on meanwhile (removed endpoint, re-claimed)."""
    result = session.execute(
        webhook_deliveries.update().where(_claimed(claim))
        .values(state=DELIVERED, last_status=status, last_error=None, delivered_at=at)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def record_failed(
    session: Session, claim: Claim, status: int | None, error: str, retry_at: datetime | None
) -> bool:
    """The attempt failed: due again at ``retry_at``, or given up (state failed) when None."""
    values: dict[str, Any] = {"last_status": status, "last_error": error[:MAX_ERROR_LENGTH]}
    if retry_at is None:
        values["state"] = FAILED
    else:
        values["next_attempt_at"] = retry_at
    result = session.execute(webhook_deliveries.update().where(_claimed(claim)).values(**values))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def delivery_log(
    session: Session, *, account_id: str | None = None, state: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Deliveries with their alert and endpoint, newest alert first."""
    d, a, e = webhook_deliveries, budget_alerts, webhook_endpoints
    query = (
        sa.select(d.c.alert_id, d.c.endpoint_id, e.c.url, a.c.account_id, a.c.budget_id, a.c.threshold,
                  a.c.period_key, a.c.occurred_at, d.c.state, d.c.attempts, d.c.last_status, d.c.last_error,
                  d.c.next_attempt_at, d.c.delivered_at)
        .select_from(d.join(a, a.c.alert_id == d.c.alert_id).join(e, e.c.endpoint_id == d.c.endpoint_id))
        .order_by(a.c.occurred_at.desc(), d.c.alert_id, d.c.endpoint_id)
        .limit(limit)
    )
    if account_id is not None:
        query = query.where(a.c.account_id == account_id)
    if state is not None:
        query = query.where(d.c.state == state)
    rows = []
    for row in session.execute(query):
        values = dict(row._mapping)
        for name in ("occurred_at", "next_attempt_at", "delivered_at"):
            if values[name] is not None:
                values[name] = stored_utc(values[name])
        values["threshold"] = int(values["threshold"])
        rows.append(values)
    return rows
