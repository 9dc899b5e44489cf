"""Prove every budget's spent, every credit balance and every budget definition from the log.

Budgets read spent from the charge-id index and its folded sums
(:mod:`ledger.store.spend`); this recomputes the same figures from the
events alone (each account's stream folded as the projector folds it, plus
the charges acknowledged into PostgreSQL's intake and not yet sequenced),
all in one snapshot, so writers recording meanwhile cannot make the two
sides differ. Balances are recomputed from the CreditLine events and the
log's daily costs; budget rows must equal their Budget aggregate's latest
definition.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from eventsourcing.utils import get_topic

from ledger.billing_keys import billing_date_function, moment
from ledger.budget_rules import utc_now
from ledger.budgets import Budget, budget_uuid, scope_of, statuses_of
from ledger.credits import CreditLine, allocate, credit_line
from ledger.domain import (
    CHARGE_RECORDED_TOPIC,
    CHARGE_REVERSED_TOPIC,
    DAY_ROLLED_UP_TOPIC,
    account_uuid,
)
from ledger.measures import MEASURES
from ledger.store import budgets as rows
from ledger.store import event_log
from ledger.store.spend import pending_states, snapshot
from projections.day_fold import DayFold

if TYPE_CHECKING:
    from ledger.application import Ledger
    from ledger.budget_rules import BudgetStatus

COST = MEASURES.index("cost_micros")
TOKENS = MEASURES.index("total_tokens")
GRANTED_TOPIC = get_topic(CreditLine.Granted)
BUDGET_TOPICS = [get_topic(Budget.Set), get_topic(Budget.Changed), get_topic(Budget.Removed)]
_EVERY_VERSION = 2**62
#: What moves an account's figures (its Opened event does not).
_ACCOUNT_TOPICS = [CHARGE_RECORDED_TOPIC, CHARGE_REVERSED_TOPIC, DAY_ROLLED_UP_TOPIC]


@dataclass(frozen=True)
class BudgetProof:
    """One budget's spent as reservations read it, against the log's figure for the same scope and period."""

    budget_id: str
    account_id: str
    unit: str
    period_start: date | None
    spent: int
    spent_log: int
    definition_matches: bool

    @property
    def ok(self) -> bool:
        return self.spent == self.spent_log and self.definition_matches

    def to_dict(self) -> dict[str, Any]:
        return {"budget_id": self.budget_id, "account_id": self.account_id, "unit": self.unit,
                "period_start": None if self.period_start is None else self.period_start.isoformat(),
                "spent": self.spent, "spent_log": self.spent_log,
                "definition_matches": self.definition_matches, "ok": self.ok}


@dataclass(frozen=True)
class BalanceProof:
    """One account's credit balance as budgets read it, against the balance the log's grants and costs give."""

    account_id: str
    balance: int
    balance_log: int

    @property
    def ok(self) -> bool:
        return self.balance == self.balance_log

    def to_dict(self) -> dict[str, Any]:
        return {"account_id": self.account_id, "balance": self.balance, "balance_log": self.balance_log,
                "ok": self.ok}


def prove(ledger: Ledger) -> tuple[list[BudgetProof], list[BalanceProof]]:
    """Every budget's and every credited account's proof, read in one snapshot."""
    store = ledger.store
    decode = event_log.state_decoder(ledger.mapper)
    zone = ledger.settings.zone
    date_of = billing_date_function(zone)
    now = utc_now()
    ledger.sequence()
    with snapshot(store) as connection:
        budget_rows = rows.budget_rows(connection)  # type: ignore[arg-type]
        statuses = statuses_of(ledger, connection, budget_rows, now)  # type: ignore[arg-type]
        accounts = rows.accounts_with_limits(connection)  # type: ignore[arg-type]
        folds: dict[str, DayFold] = {}
        for account in accounts:
            fold = DayFold(zone.key, date_of)
            origin = account_uuid(account)
            stream = [(topic, state) for _, topic, state in
                      event_log.stream_up_to(connection, store, origin, _EVERY_VERSION, _ACCOUNT_TOPICS)]  # type: ignore[arg-type]
            stream += [(CHARGE_RECORDED_TOPIC, state) for state in pending_states(connection, store, origin)]
            fold.add_rows(stream, decode)
            folds[account] = fold
        budgets = [
            BudgetProof(
                status.budget_id, status.account_id, status.suffix, status.period_start, status.spent,
                _spent_from_log(ledger, row, status, folds[row["account_id"]], now),
                _definition_matches(connection, store, row, decode),
            )
            for row, status in zip(budget_rows, statuses)
        ]
        balances = []
        for account in accounts:
            grants = _grants_from_log(connection, store, account, decode)
            if not grants:
                continue
            daily = _daily_cost(folds[account])
            balances.append(BalanceProof(
                account,
                credit_line(ledger, connection, account, now).balance_micros,  # type: ignore[arg-type]
                allocate(account, grants, daily, zone, now).balance_micros,
            ))
    return budgets, balances


def _spent_from_log(ledger: Ledger, row: dict[str, Any], status: BudgetStatus, fold: DayFold, now: Any) -> int:
    if status.credits:
        return status.spent  # a credits budget's spent is the balance's (proved by its BalanceProof)
    _, period = scope_of(row, ledger, now)
    column = TOKENS if row["unit"] == "tokens" else COST
    total = 0
    for (_, day), groups in fold.days.items():
        if period.start is not None and not period.start <= day < period.end:
            continue
        for (user, *_), figures in groups.items():
            if row["user_id"] is None or user == row["user_id"]:
                total += figures[column]
    return total


def _daily_cost(fold: DayFold) -> dict[date, int]:
    days: dict[date, int] = {}
    for (_, day), groups in fold.days.items():
        cost = sum(figures[COST] for figures in groups.values())
        if cost:
            days[day] = days.get(day, 0) + cost
    return days


def _grants_from_log(connection: Any, store: Any, account: str, decode: Any) -> list[dict[str, Any]]:
    stream = event_log.stream_up_to(connection, store, CreditLine.create_id(account), _EVERY_VERSION, [GRANTED_TOPIC])
    grants = []
    for _, _, state in stream:
        e = decode(state)
        grants.append({
            "grant_id": e["grant_id"], "account_id": account, "amount_micros": int(e["amount_micros"]),
            "granted_at": moment(e["granted_at"]),
            "expires_at": None if e["expires_at"] is None else moment(e["expires_at"]),
        })
    return grants


def _definition_matches(connection: Any, store: Any, row: dict[str, Any], decode: Any) -> bool:
    """Whether the budget's row says what its last Set/Changed event says."""
    facts = None
    for _, topic, state in event_log.stream_up_to(
        connection, store, budget_uuid(row["budget_id"]), _EVERY_VERSION, BUDGET_TOPICS
    ):
        facts = None if topic == BUDGET_TOPICS[2] else decode(state)["facts"]
    if facts is None:
        return False
    stored = {name: row[name] for name in ("account_id", "user_id", "unit", "limit_value", "period", "mode")}
    stored["thresholds"] = [int(t) for t in row["thresholds"].split(",") if t]
    return stored == facts
