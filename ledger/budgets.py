"""Budgets: setting, changing and removing them (events), and reading their status.

A budget's history is its ``Budget`` aggregate's events in the log (the
audit trail); its current definition is also a row of ``ledger_budgets``,
written in the same transaction, which reservations lock. A status reads
spent and held in one statement (:mod:`ledger.store.spend`), so it is exact
at one moment: spent counts every acknowledged charge in scope and period,
net of reversals, and held the active reservations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import IntegrityError
from sqlalchemy.orm import Session

from ledger import credits
from ledger.backoff import backoff
from ledger.budget_rules import (
    BudgetSpec,
    BudgetStatus,
    current_period,
    utc_now,
    validate_budget,
)
from ledger.errors import BusyAccount, InvalidBudget, UnknownBudget
from ledger.store import budgets as rows
from ledger.store.spend import FOLD_BATCH, Scope, Usage, fold, read_usage

if TYPE_CHECKING:
    from ledger.application import Ledger
    from ledger.credits import Balance

BUDGET_NAMESPACE = uuid5(NAMESPACE_URL, "urn:llm-usage-ledger:budget")


class Budget(Aggregate):
    """One budget's definitions over time; removing it is an event too."""

    @staticmethod
    def create_id(budget_id: str, facts: dict[str, Any]) -> UUID:
        return budget_uuid(budget_id)

    @event("Set")
    def __init__(self, budget_id: str, facts: dict[str, Any]) -> None:
        self.budget_id = budget_id
        self.facts = dict(facts)
        self.removed = False

    @event("Changed")
    def change(self, facts: dict[str, Any]) -> None:
        self.facts = dict(facts)
        self.removed = False

    @event("Removed")
    def remove(self) -> None:
        self.removed = True


def budget_uuid(budget_id: str) -> UUID:
    """A budget's stream id, the same in every process."""
    return uuid5(BUDGET_NAMESPACE, budget_id)


@dataclass(frozen=True)
class BudgetSet:
    """What ``set_budget`` did: the status now, and whether it created or changed the budget."""

    status: BudgetStatus
    created: bool
    changed: bool


def set_budget(ledger: Ledger, fields: dict[str, Any]) -> BudgetSet:
    """Create or change a budget (an event); setting the same definition again changes nothing."""
    spec = validate_budget(fields)
    for attempt in range(ledger.settings.retry_attempts):
        try:
            created, changed = _save(ledger, spec)
            return BudgetSet(budget_status(ledger, spec.budget_id), created, changed)
        except IntegrityError:  # another process changed the same budget: read it again
            backoff(attempt)
    raise BusyAccount(f"could not set budget {spec.budget_id!r}: concurrent changes kept conflicting")


def _load(ledger: Ledger, budget_id: str) -> Budget | None:
    try:
        budget: Budget = ledger.repository.get(budget_uuid(budget_id))
    except AggregateNotFoundError:
        return None
    return budget


def _save(ledger: Ledger, spec: BudgetSpec) -> tuple[bool, bool]:
    facts = spec.facts()
    budget = _load(ledger, spec.budget_id)
    if budget is not None and not budget.removed and budget.facts.get("account_id") != spec.account_id:
        raise InvalidBudget({"account_id": (
            f"budget {spec.budget_id!r} belongs to account {budget.facts.get('account_id')!r}; "
            "remove it first, or use another budget id"
        )})
    if budget is not None and not budget.removed and budget.facts == facts:
        return False, False
    created = budget is None or budget.removed
    if budget is None:
        budget = Budget(spec.budget_id, facts)
    else:
        budget.change(facts)
    now = utc_now()
    with ledger.store.transaction(commit=True) as session:
        ledger.save(budget)
        rows.put_budget(session, ledger.store.dialect, {
            "budget_id": spec.budget_id,
            "account_id": spec.account_id,
            "user_id": spec.user_id,
            "unit": spec.unit,
            "limit_value": spec.limit_value,
            "period": spec.period,
            "mode": spec.mode,
            "thresholds": ",".join(str(t) for t in spec.thresholds),
            "version": budget.version,
            "updated_at": now,
        })
    return created, True


def remove_budget(ledger: Ledger, budget_id: str) -> None:
    """Remove a budget (an event); its holds stop counting against it. Raises :class:`UnknownBudget`."""
    for attempt in range(ledger.settings.retry_attempts):
        budget = _load(ledger, budget_id)
        if budget is None or budget.removed:
            raise UnknownBudget(budget_id)
        budget.remove()
        try:
            with ledger.store.transaction(commit=True) as session:
                ledger.save(budget)
                rows.delete_budget(session, budget_id)
            return
        except IntegrityError:
            backoff(attempt)
    raise BusyAccount(f"could not remove budget {budget_id!r}: concurrent changes kept conflicting")


def budget_status(ledger: Ledger, budget_id: str) -> BudgetStatus:
    """One budget's status now. Raises :class:`UnknownBudget`."""
    with ledger.store.transaction(commit=False) as session:
        row = rows.budget_row(session, budget_id)
        if row is None:
            raise UnknownBudget(budget_id)
        return statuses_of(ledger, session, [row], utc_now())[0]


def budget_statuses(ledger: Ledger, account_id: str | None = None) -> list[BudgetStatus]:
    """Every budget's status (of one account, when given), by account and id."""
    with ledger.store.transaction(commit=False) as session:
        return statuses_of(ledger, session, rows.budget_rows(session, account_id), utc_now())


def scope_of(row: dict[str, Any], ledger: Ledger, now: datetime) -> tuple[Scope, Any]:
    period = current_period(row["period"], ledger.settings.zone, now)
    scope = Scope(row["account_id"], row["user_id"], period.start, period.end, period.start_at, period.end_at)
    return scope, period


def statuses_of(
    ledger: Ledger, session: Session, budget_rows: Sequence[dict[str, Any]], now: datetime
) -> list[BudgetStatus]:
    """Statuses of ``budget_rows`` in ``session``: every spent and held read in one statement."""
    scoped = [scope_of(row, ledger, now) for row in budget_rows]
    usages = read_usage(session, [scope for scope, _ in scoped], now)
    result = []
    for row, (_, period), usage in zip(budget_rows, scoped, usages):
        line = None
        if row["unit"] == "credits":
            line = credits.credit_line(ledger, session, row["account_id"], now)
        result.append(status_of(row, period.start, usage, line))
    return result


def status_of(row: dict[str, Any], period_start: date | None, usage: Usage, line: Balance | None = None) -> BudgetStatus:
    """A budget's status from its row and its usage (and, for a credits budget, the account's credit line)."""
    unit = row["unit"]
    if unit == "credits":
        assert line is not None
        limit, spent, held = line.granted_micros, line.used_micros, usage.held_micros
    elif unit == "tokens":
        limit, spent, held = row["limit_value"], usage.spent_tokens, usage.held_tokens
    else:
        limit, spent, held = row["limit_value"], usage.spent_micros, usage.held_micros
    return BudgetStatus(
        budget_id=row["budget_id"],
        account_id=row["account_id"],
        user_id=row["user_id"],
        period=row["period"],
        period_start=period_start,
        mode=row["mode"],
        thresholds=thresholds_of(row),
        unit="micros" if unit == "credits" else unit,
        limit=int(limit),
        spent=int(spent),
        held=int(held),
        version=int(row["version"]),
        credits=unit == "credits",
        unfolded=usage.unfolded,
    )


def usage_of(row: dict[str, Any]) -> Usage:
    """The usage columns of a budget row answered with them (see :mod:`ledger.store.reservations_pg`)."""
    return Usage(*(int(row[name]) for name in ("spent_micros", "spent_tokens", "held_micros", "held_tokens",
                                                "unfolded")))


def thresholds_of(row: dict[str, Any]) -> tuple[int, ...]:
    text = row["thresholds"]
    return tuple(int(part) for part in text.split(",") if part)


def fold_spend(ledger: Ledger, account_id: str | None = None) -> int:
    """Fold unfolded charges into ``ledger_spend``, batch by batch; how many rows moved.

    Without ``account_id``: every account that has a budget or a credit
    grant, one at a time (an account's folds never run two at once, so two
    folders never lock the same rows in different orders).
    """
    if account_id is None:
        with ledger.store.transaction(commit=False) as session:
            accounts = rows.accounts_with_limits(session)
        return sum(fold_spend(ledger, account) for account in accounts)
    total = 0
    while True:
        with ledger.store.transaction(commit=True) as session:
            moved = fold(session, ledger.store.dialect, ledger.settings.zone, account_id)
        total += moved
        if moved < FOLD_BATCH:
            return total
