"""Threshold alerts, webhook endpoints and the deliveries outbox: their rows.

An alert row is unique per (budget, period, threshold), so a threshold fires
once per period however many processes notice it crossed. The alert and one
pending delivery per matching endpoint are inserted in one transaction (an
outbox): whatever delivers them later finds every alert that was recorded.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ledger.store.schema import (
    budget_alerts,
    stored_utc,
    webhook_deliveries,
    webhook_endpoints,
)


def _row(row: Any) -> dict[str, Any]:
    values = dict(row._mapping)
    for name in ("occurred_at", "created_at", "removed_at", "next_attempt_at", "delivered_at"):
        if values.get(name) is not None:
            values[name] = stored_utc(values[name])
    return values


def fired(session: Session, budget_id: str, period_key: str) -> set[int]:
    """The thresholds of a budget already fired in a period."""
    query = sa.select(budget_alerts.c.threshold).where(
        budget_alerts.c.budget_id == budget_id, budget_alerts.c.period_key == period_key
    )
    return {int(t) for (t,) in session.execute(query)}


def insert_alert(session: Session, dialect: str, values: Mapping[str, Any], now: datetime) -> bool:
    """Record an alert and queue it for every endpoint that takes its account; False if it had fired already."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    result = session.execute(
        insert(budget_alerts)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["budget_id", "period_key", "threshold"])
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return False
    endpoints = session.execute(
        sa.select(webhook_endpoints.c.endpoint_id).where(
            webhook_endpoints.c.removed_at.is_(None),
            sa.or_(webhook_endpoints.c.account_id.is_(None), webhook_endpoints.c.account_id == values["account_id"]),
        )
    ).scalars().all()
    if endpoints:
        session.execute(webhook_deliveries.insert(), [
            {"alert_id": values["alert_id"], "endpoint_id": endpoint, "state": "pending", "attempts": 0,
             "next_attempt_at": now}
            for endpoint in endpoints
        ])
    return True


def alert_rows(
    session: Session, *, account_id: str | None = None, budget_id: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Alerts, newest first."""
    query = (
        sa.select(budget_alerts)
        .order_by(budget_alerts.c.occurred_at.desc(), budget_alerts.c.threshold.desc(), budget_alerts.c.alert_id)
        .limit(limit)
    )
    if account_id is not None:
        query = query.where(budget_alerts.c.account_id == account_id)
    if budget_id is not None:
        query = query.where(budget_alerts.c.budget_id == budget_id)
    return [_row(row) for row in session.execute(query)]


# -- endpoints ---------------------------------------------------------------------------------


def insert_endpoint(session: Session, values: Mapping[str, Any]) -> None:
    session.execute(webhook_endpoints.insert().values(**values))


def endpoint_rows(session: Session, *, include_removed: bool = False) -> list[dict[str, Any]]:
    query = sa.select(webhook_endpoints).order_by(webhook_endpoints.c.created_at, webhook_endpoints.c.endpoint_id)
    if not include_removed:
        query = query.where(webhook_endpoints.c.removed_at.is_(None))
    return [_row(row) for row in session.execute(query)]


def remove_endpoint(session: Session, endpoint_id: str, at: datetime) -> bool:
    """Stop an endpoint (its pending deliveries are dropped from the queue, kept in the log as failed)."""
    result = session.execute(
        webhook_endpoints.update()
        .where(webhook_endpoints.c.endpoint_id == endpoint_id, webhook_endpoints.c.removed_at.is_(None))
        .values(removed_at=at)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return False
    session.execute(
        webhook_deliveries.update()
        .where(webhook_deliveries.c.endpoint_id == endpoint_id, webhook_deliveries.c.state == "pending")
        .values(state="failed", last_error="endpoint removed")
    )
    return True
