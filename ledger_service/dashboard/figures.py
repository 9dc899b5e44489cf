"""What the pages show, from the same queries as ``GET /v1/usage`` (so the numbers agree).

Every figure comes from ``projections.reports.records`` over the period's
billing dates, after the projector has caught up, exactly as the API answers.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ledger.measures import MEASURES
from ledger_service.audits import AuditRun, last_audit
from ledger_service.dashboard.periods import Period

if TYPE_CHECKING:
    from ledger import Ledger

_projecting = threading.Lock()


@dataclass
class Figures:
    """One page's numbers."""

    totals: dict[str, int]
    #: billing date -> series label -> figures, for the stacked daily charts.
    daily: dict[str, dict[str, dict[str, int]]]
    series: list[str]
    by_account: list[dict[str, Any]] = field(default_factory=list)
    by_user: list[dict[str, Any]] = field(default_factory=list)
    by_charge_type: list[dict[str, Any]] = field(default_factory=list)
    #: Rows behind the page, for its CSV.
    rows: list[dict[str, Any]] = field(default_factory=list)
    lag: int = 0
    audit: AuditRun | None = None


def catch_up(ledger: Ledger) -> int:
    """Bring the records up to date; return how many events they were behind."""
    from projections import Projector

    with _projecting:
        projector = Projector(ledger)
        behind = max(ledger.log_position() - projector.position(), 0)
        projector.run()
    return behind


def series_label(row: dict[str, Any]) -> str:
    provider, model = row["provider"] or "unspecified", row["model"] or "unspecified"
    return f"{provider} / {model}"


def figures(ledger: Ledger, period: Period, account_id: str | None) -> Figures:
    """The page's figures for one account, or every account (``None``)."""
    from projections.reports import records

    lag = catch_up(ledger)
    query = {"account_id": account_id, "start": period.start, "end": period.end}
    rows = records(ledger, group_by=("account_id", "billing_date", "user_id", "charge_type", "provider", "model"),
                   **query)
    totals = _sum(rows)
    daily: dict[str, dict[str, dict[str, int]]] = {day.isoformat(): {} for day in period.days}
    for row in rows:
        day = daily.setdefault(row["billing_date"].isoformat(), {})
        _add(day.setdefault(series_label(row), _zero()), row)
    series = sorted({series_label(row) for row in rows})
    result = Figures(totals=totals, daily=daily, series=series, rows=rows, lag=lag, audit=last_audit(ledger))
    result.by_account = _grouped(rows, "account_id")
    result.by_user = _grouped(rows, "user_id")
    result.by_charge_type = _grouped(rows, "charge_type")
    return result


def _grouped(rows: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    groups: dict[str, dict[str, int]] = {}
    for row in rows:
        _add(groups.setdefault(row[name], _zero()), row)
    return [{name: key, **values} for key, values in sorted(groups.items())]


def _zero() -> dict[str, int]:
    return dict.fromkeys(MEASURES, 0)


def _add(into: dict[str, int], row: dict[str, Any]) -> None:
    for name in MEASURES:
        into[name] += row[name]


def _sum(rows: list[dict[str, Any]]) -> dict[str, int]:
    total = _zero()
    for row in rows:
        _add(total, row)
    return total
