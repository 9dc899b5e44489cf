"""Repricing: what the log's charges would cost under another catalogue.

A scratch projection kept in memory (one entry per account and billing day,
like the audit's tally), built from the log alone and never written
anywhere: live records, the catalogue and the log stay as they are. For
each account-day it sets the cost the charges were pinned to when recorded
beside the cost under the given catalogue, so the difference is exact.

Compacted days have no raw charges left, only their rollup's groups; those
are repriced per group (its token sums, its number of charges for per-call
fees) at the price in effect at the start of the billing day, and marked
``basis="rollup"``: an estimate wherever prices changed within such a day.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date, datetime, time
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from ledger.billing_keys import billing_date_function
from ledger.domain import (
    CHARGE_RECORDED_TOPIC,
    CHARGE_REVERSED_TOPIC,
    DAY_ROLLED_UP_TOPIC,
)
from ledger.measures import event_figures, group_figures
from ledger.pricing import PriceTable
from ledger.store import event_log

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ledger.application import Ledger

TOPICS = (CHARGE_RECORDED_TOPIC, CHARGE_REVERSED_TOPIC, DAY_ROLLED_UP_TOPIC)


@dataclass
class RepricedDay:
    """One account-day: its charges, pinned and repriced cost, unpriced counts before and after."""

    account_id: str
    billing_date: date
    charges: int = 0
    cost_micros: int = 0
    repriced_micros: int = 0
    unpriced_charges: int = 0
    repriced_unpriced: int = 0
    basis: str = "charges"

    @property
    def difference_micros(self) -> int:
        return self.repriced_micros - self.cost_micros

    @property
    def changed(self) -> bool:
        return self.difference_micros != 0 or self.unpriced_charges != self.repriced_unpriced

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "difference_micros": self.difference_micros}


@dataclass
class RepriceResult:
    """Every account-day in range (``changed`` ones first to look at), up to a log position."""

    position: int
    days: list[RepricedDay] = field(default_factory=list)

    @property
    def changed(self) -> list[RepricedDay]:
        return [d for d in self.days if d.changed]

    def total(self, name: str) -> int:
        return sum(getattr(d, name) for d in self.days)

    def to_dict(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "cost_micros": self.total("cost_micros"),
            "repriced_micros": self.total("repriced_micros"),
            "difference_micros": self.total("repriced_micros") - self.total("cost_micros"),
            "days": [d.to_dict() for d in self.changed],
        }


def reprice(
    ledger: Ledger,
    prices: PriceTable,
    start: date | None = None,
    end: date | None = None,
    *,
    batch_size: int = 10_000,
) -> RepriceResult:
    """Reprice the log's charges billed from ``start`` to ``end`` (inclusive) with ``prices``."""
    zone = ledger.settings.zone
    date_of = billing_date_function(zone)
    days: dict[tuple[str, date], RepricedDay] = {}
    position = 0
    for position, topic, state in _rows(ledger, batch_size):
        if topic == DAY_ROLLED_UP_TOPIC:
            day = date.fromisoformat(state["billing_date"])
            if _in_range(day, start, end):
                days[(state["account_id"], day)] = _rolled_up(state, day, prices, zone)
            continue
        when = state["occurred_at"]["_data_"]
        day = date_of(when)
        if not _in_range(day, start, end):
            continue
        entry = days.get((state["account_id"], day))
        if entry is None:
            entry = days[(state["account_id"], day)] = RepricedDay(state["account_id"], day)
        _add_event(entry, state, 1 if topic == CHARGE_RECORDED_TOPIC else -1, prices, when)
    ordered = sorted(days.values(), key=lambda d: (d.account_id, d.billing_date))
    return RepriceResult(position, ordered)


def _in_range(day: date, start: date | None, end: date | None) -> bool:
    return (start is None or day >= start) and (end is None or day <= end)


def _add_event(entry: RepricedDay, state: dict[str, Any], sign: int, prices: PriceTable, when: str) -> None:
    figures = event_figures(state, sign)
    entry.charges += figures[0]
    entry.cost_micros += figures[4]
    entry.unpriced_charges += figures[5]
    price = prices.price_for(state["provider"], state["model"], state["charge_type"], datetime.fromisoformat(when))
    if price is None:
        entry.repriced_unpriced += sign
    else:
        cost = price.cost_micros(state["prompt_tokens"], state["completion_tokens"], state["total_tokens"])
        entry.repriced_micros += sign * cost


def _rolled_up(state: dict[str, Any], day: date, prices: PriceTable, zone: ZoneInfo) -> RepricedDay:
    """A compacted day from its rollup's groups (replacing what came before, as projections do)."""
    entry = RepricedDay(state["account_id"], day, basis="rollup")
    day_start = datetime.combine(day, time.min, zone)
    for group in state["groups"]:
        figures = group_figures(group)
        entry.charges += figures[0]
        entry.cost_micros += figures[4]
        entry.unpriced_charges += figures[5]
        price = prices.price_for(group["provider"], group["model"], group["charge_type"], day_start)
        if price is None:
            entry.repriced_unpriced += figures[0]
        else:
            entry.repriced_micros += price.group_cost_micros(*figures[:4])
    return entry


def _rows(ledger: Ledger, batch_size: int) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """(position, topic, decoded state) of the charges, reversals and rollups, in log order."""
    decode = event_log.state_decoder(ledger.mapper)
    ledger.sequence()
    for row in event_log.events_up_to(ledger.store, event_log.max_position(ledger.store), batch_size):
        if row.topic in TOPICS:
            yield row.id, row.topic, decode(bytes(row.state))
