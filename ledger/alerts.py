"""Threshold alerts: each budget threshold fires once per period, when spent reaches it.

``check`` reads the budgets' statuses and records an alert for every
threshold crossed and not yet fired in the current period; the alert row is
unique per (budget, period, threshold), so processes checking at once fire
it once. Recording an alert queues its webhook deliveries in the same
transaction (:mod:`ledger.store.alerts`); delivering them is the jobs'
business (:mod:`jobs.webhooks`). Checks run after each capture and
periodically in the worker, so a threshold crossed by plain charges is
noticed within the worker's check interval.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from ledger.budget_rules import BudgetStatus, crossed, utc_now
from ledger.budgets import statuses_of
from ledger.store import alerts as alert_store
from ledger.store import budgets as rows

if TYPE_CHECKING:
    from ledger.application import Ledger

ALERT_TYPE = "budget.threshold_crossed"


@dataclass(frozen=True)
class BudgetAlert:
    """A fired threshold, with the JSON body its webhooks carry."""

    alert_id: str
    budget_id: str
    account_id: str
    threshold: int
    period_key: str
    occurred_at: datetime
    body: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.body)


def alert_body(status: BudgetStatus, threshold: int, alert_id: str, now: datetime) -> dict[str, Any]:
    """The webhook body of an alert (the figures named in the budget's unit)."""
    s = status.suffix
    return {
        "id": alert_id,
        "type": ALERT_TYPE,
        "budget_id": status.budget_id,
        "account_id": status.account_id,
        "user_id": status.user_id,
        "threshold": threshold,
        "period_start": None if status.period_start is None else status.period_start.isoformat(),
        f"spent_{s}": status.spent,
        f"limit_{s}": status.limit,
        "occurred_at": now.isoformat(),
    }


def check(ledger: Ledger, account_id: str | None = None) -> list[BudgetAlert]:
    """Fire every threshold crossed and not yet fired this period (of one account's budgets, when given)."""
    now = utc_now()
    fired: list[BudgetAlert] = []
    with ledger.store.transaction(commit=True) as session:
        budget_rows = [r for r in rows.budget_rows(session, account_id) if r["thresholds"]]
        if not budget_rows:
            return []
        for status in statuses_of(ledger, session, budget_rows, now):
            reached = crossed(status)
            if not reached:
                continue
            key = "" if status.period_start is None else status.period_start.isoformat()
            done = alert_store.fired(session, status.budget_id, key)
            for threshold in reached:
                if threshold in done:
                    continue
                alert_id = f"alrt_{uuid.uuid4().hex}"
                body = alert_body(status, threshold, alert_id, now)
                values = {"alert_id": alert_id, "budget_id": status.budget_id, "period_key": key,
                          "threshold": threshold, "account_id": status.account_id,
                          "body": orjson.dumps(body).decode(), "occurred_at": now}
                if alert_store.insert_alert(session, ledger.store.dialect, values, now):
                    fired.append(BudgetAlert(alert_id, status.budget_id, status.account_id, threshold, key, now, body))
    return fired


def alerts(
    ledger: Ledger, *, account_id: str | None = None, budget_id: str | None = None, limit: int = 100
) -> list[BudgetAlert]:
    """Alerts fired so far, newest first."""
    with ledger.store.transaction(commit=False) as session:
        found = alert_store.alert_rows(session, account_id=account_id, budget_id=budget_id, limit=limit)
    return [
        BudgetAlert(r["alert_id"], r["budget_id"], r["account_id"], int(r["threshold"]), r["period_key"],
                    r["occurred_at"], orjson.loads(r["body"]))
        for r in found
    ]
