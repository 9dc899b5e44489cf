"""A projector batch folded in memory: per account-day, per group, the figures to add.

A batch of thousands of charges touches a few hundred keys, so the
projector writes one upsert per key rather than one per event. A rollup
(``Account.DayRolledUp``) *sets* its account's day: it drops what the batch
had pending for that day (the rollup stands for it) and marks the day to be
cleared before the batch's sums are added.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import date
from operator import add
from typing import Any

from ledger.billing_keys import DayKey, GroupKey, group_key
from ledger.domain import (
    CHARGE_RECORDED_TOPIC,
    CHARGE_REVERSED_TOPIC,
    DAY_ROLLED_UP_TOPIC,
)
from ledger.measures import charge_figures, group_figures
from ledger.store.event_log import Decoder
from projections.errors import ProjectionError

#: A running sum of :data:`ledger.measures.Figures`, added to in place.
RunningFigures = list[int]

#: How a charge event moves its key's figures: recorded adds, reversed subtracts.
SIGNS = {CHARGE_RECORDED_TOPIC: 1, CHARGE_REVERSED_TOPIC: -1}


class DayFold:
    """Pending per-group deltas of one batch, and the days its rollups reset.

    Groups are keyed as :func:`ledger.billing_keys.group_key` keys them (None
    for an unspecified provider or model).
    """

    __slots__ = ("_date_of", "days", "resets", "zone_name")

    def __init__(self, zone_name: str, date_of: Callable[[str], date]) -> None:
        self.days: dict[DayKey, dict[GroupKey, RunningFigures]] = {}
        self.resets: set[DayKey] = set()
        self.zone_name = zone_name
        self._date_of = date_of

    def add_rows(self, rows: Iterable[tuple[str, Any]], decode: Decoder) -> None:
        """Fold (topic, state) rows in log order; other topics are skipped before decoding.

        The hot loop of the projector: one dict lookup picks the sign by topic,
        the state is decoded once, and the figures are added in place.
        """
        days = self.days
        date_of = self._date_of
        sign_of = SIGNS.get
        values_of = charge_figures  # ledger.measures: the one mapping of state to figures
        for topic, state in rows:
            sign = sign_of(topic)
            if sign is None:
                if topic == DAY_ROLLED_UP_TOPIC:
                    self.roll_up(decode(state))
                continue
            e = decode(state)
            day = (e["account_id"], date_of(e["occurred_at"]["_data_"]))
            groups = days.get(day)
            if groups is None:
                groups = days[day] = {}
            # the group key, inlined: a call per event costs more than the key itself
            key = (e["user_id"], e["charge_type"], e["provider"] or None, e["model"] or None)
            values = values_of(e)
            figures = groups.get(key)
            if sign < 0:
                values = [-value for value in values]
            if figures is None:
                groups[key] = list(values)
            else:
                figures[:] = map(add, figures, values)

    def roll_up(self, e: dict[str, Any]) -> None:
        """Set the account's day to the rollup's groups (dropping what was pending)."""
        if e.get("time_zone", self.zone_name) != self.zone_name:
            raise ProjectionError(
                f"rollup of {e['account_id']} {e['billing_date']} is in time zone "
                f"{e['time_zone']!r} but this projection bills in {self.zone_name!r}"
            )
        day = (e["account_id"], date.fromisoformat(e["billing_date"]))
        self.resets.add(day)
        groups: dict[GroupKey, RunningFigures] = {}
        for g in e["groups"]:
            key = group_key(g)
            figures = groups.get(key)
            if figures is None:
                groups[key] = list(group_figures(g))
            else:
                figures[:] = map(add, figures, group_figures(g))
        self.days[day] = groups


def fold_rows(
    rows: Iterable[tuple[str, Any]], zone_name: str, date_of: Callable[[str], date], decode: Decoder
) -> DayFold:
    """A batch's (topic, state) rows folded in log order (see :meth:`DayFold.add_rows`)."""
    fold = DayFold(zone_name, date_of)
    fold.add_rows(rows, decode)
    return fold

