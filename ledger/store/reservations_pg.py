"""Reservations and captures on PostgreSQL in one call each (``reservations.sql``).

Each call runs on the store's own autocommit connection (the one appends
use), so the function's own transaction is the whole write: one round trip
and one commit. Budget rows
come back with their usage; :mod:`ledger.reservations` turns them into
statuses, and takes its Python path whenever a call answers ``decide``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ledger.store.base import Appended, ChargeBatch
from ledger.store.schema import holds, stored_utc

if TYPE_CHECKING:
    from ledger.budget_rules import Period
    from ledger.store.base import Store

#: The columns of a budget row the functions answer (as ``ledger_budgets`` names them, plus usage).
BUDGET_COLUMNS = (
    "budget_id", "user_id", "unit", "limit_value", "period", "mode", "thresholds", "version", "period_start",
    "spent_micros", "spent_tokens", "held_micros", "held_tokens", "unfolded",
)
_PERIOD_ARGUMENTS = (
    "%(day0)s, %(day1)s, %(day_t0)s, %(day_t1)s, %(month0)s, %(month1)s, %(month_t0)s, %(month_t1)s"
)
_RESERVE_COLUMNS = ("outcome", *BUDGET_COLUMNS)
_RESERVE = (
    f"SELECT {', '.join(_RESERVE_COLUMNS)} FROM ledger_reserve(%(rid)s, %(account)s, %(user)s, %(micros)s, "
    f"%(tokens)s, %(now)s, %(expires)s, {_PERIOD_ARGUMENTS})"
)
_CAPTURE_COLUMNS = ("outcome", "hold_charge_id", "idx", "known_payload", "known_recorded_at", "notification_id")
_CAPTURE = (
    f"SELECT {', '.join(_CAPTURE_COLUMNS)} FROM ledger_capture(%(rid)s, %(now)s, %(charge_ids)s, %(account_ids)s, "
    "%(originators)s::uuid[], %(hashes)s, %(payloads)s, %(states)s, %(opened_states)s, %(recorded_at)s, "
    "%(topic)s, %(opened_topic)s, %(catalogue_id)s::uuid, %(catalogue_version)s, %(user_ids)s::text[], "
    "%(occurred_ats)s::timestamptz[], %(costs)s::bigint[], %(tokens)s::bigint[])"
)
_HOLD_COLUMNS = tuple(column.name for column in holds.columns)
_HOLD = f"SELECT {', '.join(_HOLD_COLUMNS)} FROM ledger_holds WHERE reservation_id = %(rid)s"


@dataclass(frozen=True, slots=True)
class Answer:
    """A call's outcome, the intake's answer for a capture, and the budget rows with their usage."""

    outcome: str
    budgets: list[dict[str, Any]]
    hold_charge_id: str | None = None
    appended: Appended | None = None


def _rows(store: Store, sql: str, params: dict[str, Any], columns: Sequence[str]) -> list[dict[str, Any]]:
    """The statement's rows as dicts, run on the store's autocommit connection (errors as the library's)."""
    return [dict(zip(columns, row)) for row in store.call(sql, params)]  # type: ignore[attr-defined]


def _periods(day: Period, month: Period) -> dict[str, Any]:
    return {"day0": day.start, "day1": day.end, "day_t0": day.start_at, "day_t1": day.end_at,
            "month0": month.start, "month1": month.end, "month_t0": month.start_at, "month_t1": month.end_at}


def _budgets(rows: Sequence[Any], account_id: str) -> list[dict[str, Any]]:
    return [{"account_id": account_id, **{name: row[name] for name in BUDGET_COLUMNS}}
            for row in rows if row["outcome"] == "budget"]


def reserve(
    store: Store, *, reservation_id: str, account_id: str, user_id: str | None, estimate_micros: int | None,
    estimate_tokens: int | None, now: datetime, expires_at: datetime, day: Period, month: Period,
) -> Answer:
    """``ledger_reserve``: 'granted' (durable), 'known' or 'decide', with the scope's budgets and their usage."""
    params = {"rid": reservation_id, "account": account_id, "user": user_id, "micros": estimate_micros,
              "tokens": estimate_tokens, "now": now, "expires": expires_at, **_periods(day, month)}
    rows = _rows(store, _RESERVE, params, _RESERVE_COLUMNS)
    outcome = rows[-1]["outcome"]
    if outcome == "granted":  # committed without waiting for the flush (its budget locks were queued for)
        store.call("SELECT ledger_flush()", {})  # type: ignore[attr-defined] # durable before the caller goes on
    elif outcome == "committed":  # uncontended: its own commit was durable
        outcome = "granted"
    return Answer(outcome, _budgets(rows, account_id))


def capture(store: Store, *, reservation_id: str, now: datetime, batch: ChargeBatch) -> Answer:
    """``ledger_capture`` for a one-charge batch: the outcome and the intake's answer."""
    topics = store.topics  # type: ignore[attr-defined]
    params = {
        "rid": reservation_id, "now": now, "charge_ids": list(batch.charge_ids),
        "account_ids": list(batch.account_ids), "originators": [str(o) for o in batch.originators],
        "hashes": list(batch.hashes), "payloads": list(batch.payloads), "states": list(batch.states),
        "opened_states": list(batch.opened_states), "recorded_at": batch.recorded_at,
        "topic": topics.charge_recorded, "opened_topic": topics.account_opened,
        "catalogue_id": str(topics.catalogue_id), "catalogue_version": batch.catalogue_version,
        "user_ids": list(batch.user_ids), "occurred_ats": list(batch.occurred_ats), "costs": list(batch.costs),
        "tokens": list(batch.tokens),
    }
    rows = _rows(store, _CAPTURE, params, _CAPTURE_COLUMNS)
    first = rows[0]
    appended = None
    if first["outcome"] == "recorded":
        appended = (
            Appended(position=first["notification_id"])
            if first["known_payload"] is None
            else Appended(None, json.loads(first["known_payload"]), first["known_recorded_at"])
        )
    return Answer(first["outcome"], [], first["hold_charge_id"], appended)


def find_hold(store: Store, reservation_id: str) -> dict[str, Any] | None:
    """A hold's row read in one autocommit round trip (no transaction around it)."""
    found = _rows(store, _HOLD, {"rid": reservation_id}, _HOLD_COLUMNS)
    if not found:
        return None
    values = found[0]
    for name in ("created_at", "expires_at", "settled_at"):
        if values.get(name) is not None:
            values[name] = stored_utc(values[name])
    return values
