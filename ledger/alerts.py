"""Threshold alerts: each budget threshold fires once per period, when spent reaches it.

``check`` reads the budgets' statuses and records an alert for every
threshold crossed and not yet fired in the current period; the alert row is
unique per (budget, period, threshold), so processes checking at once fire
it once. Recording an alert queues its webhook deliveries in the same
transaction (:mod:`ledger.store.alerts`); delivering them is the jobs'
business (:mod:`jobs.webhooks`). Checks run in every reservation (for the
budgets of its scope, with the figures it reads anyway; a refusal keeps the
alerts it fired) and periodically in the worker, so a threshold crossed by a
capture or by plain charges is noticed at the scope's next reservation or
within the worker's check interval, whichever comes first. Captures do not
check: that would read every budget of the account on the busiest path.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy.orm import Session

from ledger.budget_rules import BudgetStatus, crossed, current_period, utc_now
from ledger.budgets import statuses_of, thresholds_of
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
    with ledger.store.transaction(commit=True) as session:
        return check_in(ledger, session, rows.budget_rows(session, account_id), now)


def check_in(
    ledger: Ledger, session: Session, budget_rows: Sequence[dict[str, Any]], now: datetime,
    statuses: Sequence[BudgetStatus] | None = None,
) -> list[BudgetAlert]:
    """In the caller's transaction: fire what ``budget_rows`` (or their ``statuses``, when read already) crossed.

    Thresholds this process already saw fired in the current period are not
    read again (alerts are never withdrawn, so that stays true until the
    period ends or the budget changes): a budget whose every threshold fired
    is skipped without reading its spent.
    """
    if statuses is None:
        wanted = [r for r in budget_rows if r["thresholds"] and not _all_fired(ledger, r, now)]
        statuses = statuses_of(ledger, session, wanted, now) if wanted else []
    fired: list[BudgetAlert] = []
    for status in statuses:
        reached = crossed(status)
        known = ledger.fired_thresholds.get(_key(status), set())
        if set(reached) <= known:
            continue
        done = alert_store.fired(session, status.budget_id, _period_key(status))
        for threshold in reached:
            if threshold in done:
                continue
            alert_id = f"alrt_{uuid.uuid4().hex}"
            body = alert_body(status, threshold, alert_id, now)
            values = {"alert_id": alert_id, "budget_id": status.budget_id, "period_key": _period_key(status),
                      "threshold": threshold, "account_id": status.account_id,
                      "body": orjson.dumps(body).decode(), "occurred_at": now}
            if alert_store.insert_alert(session, ledger.store.dialect, values, now):
                fired.append(BudgetAlert(alert_id, status.budget_id, status.account_id, threshold,
                                         _period_key(status), now, body))
        _remember(ledger, _key(status), done | set(reached))
    return fired


def may_fire(ledger: Ledger, statuses: Sequence[BudgetStatus]) -> bool:
    """Whether some status crossed a threshold this process has not seen fired (then :func:`check_in` it)."""
    return any(not set(crossed(s)) <= ledger.fired_thresholds.get(_key(s), set()) for s in statuses)


#: The most (budget, period, version) keys a ledger remembers fired thresholds of.
_REMEMBERED_LIMIT = 100_000


def _period_key(status: BudgetStatus) -> str:
    return "" if status.period_start is None else status.period_start.isoformat()


def _key(status: BudgetStatus) -> tuple[str, str, int]:
    return (status.budget_id, _period_key(status), status.version)


def _remember(ledger: Ledger, key: tuple[str, str, int], thresholds: set[int]) -> None:
    known = ledger.fired_thresholds
    if len(known) >= _REMEMBERED_LIMIT:
        known.clear()
    known[key] = thresholds


def _all_fired(ledger: Ledger, row: dict[str, Any], now: datetime) -> bool:
    period = current_period(row["period"], ledger.settings.zone, now)
    known = ledger.fired_thresholds.get((row["budget_id"], period.key, int(row["version"])), set())
    return known >= set(thresholds_of(row))


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
