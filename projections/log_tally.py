"""The log's own totals per account and billing day, for the audit's conservation check.

Charges add, reversals subtract, and a rollup replaces its account's day
with its own totals, as the projections apply them. Memory grows with
account-days only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from ledger.billing_keys import DayKey, billing_date_function
from ledger.domain import CHARGE_RECORDED_TOPIC, DAY_ROLLED_UP_TOPIC
from ledger.measures import MEASURES, ZERO, add, event_figures
from ledger.store.event_log import Decoder
from projections.day_fold import RunningFigures
from projections.rollup_check import (
    PROJECTED_TOPICS,
    Rollup,
    RollupIssue,
    group_totals,
    internal_issues,
)


def figures_dict(figures: RunningFigures) -> dict[str, int]:
    """Figures by name."""
    return dict(zip(MEASURES, figures, strict=True))


@dataclass
class TallyDay:
    """One account-day of the tally."""

    figures: RunningFigures = field(default_factory=lambda: list(ZERO))
    raw_since_rollup: int = 0
    rolled_up: bool = False


class LogTally:
    """The log's totals per (account, billing day), and the rollups worth verifying."""

    def __init__(self, zone: ZoneInfo) -> None:
        self.date_of = billing_date_function(zone)
        self.days: dict[DayKey, TallyDay] = {}
        self.to_verify: list[Rollup] = []
        self.issues: list[RollupIssue] = []
        self.versions: dict[UUID, int] = {}
        self.rolled: dict[UUID, str] = {}  # originator id -> account id, for accounts with rollups
        self.charge_events = self.reversal_events = self.rollup_events = 0

    def add(self, row: Sequence[Any], decode: Decoder) -> None:
        """Fold one stored event (id, originator_id, originator_version, topic, state)."""
        position, originator_id, version, topic, state_bytes = row
        if version > self.versions.get(originator_id, 0):
            self.versions[originator_id] = version
        if topic not in PROJECTED_TOPICS:
            return
        state = decode(bytes(state_bytes))
        if topic == DAY_ROLLED_UP_TOPIC:
            self._rollup(position, originator_id, state)
            return
        sign = 1 if topic == CHARGE_RECORDED_TOPIC else -1
        if sign > 0:
            self.charge_events += 1
        else:
            self.reversal_events += 1
        key = (state["account_id"], self.date_of(state["occurred_at"]["_data_"]))
        day = self.days.setdefault(key, TallyDay())
        add(day.figures, event_figures(state, sign))
        day.raw_since_rollup += 1

    def _rollup(self, position: int, originator_id: UUID, state: dict[str, Any]) -> None:
        self.rollup_events += 1
        self.rolled[originator_id] = state["account_id"]
        key = (state["account_id"], date.fromisoformat(state["billing_date"]))
        day = self.days.setdefault(key, TallyDay())
        if day.raw_since_rollup or day.rolled_up:
            self.to_verify.append(Rollup(position, originator_id, state))
        totals = group_totals(state["groups"])
        self.issues += internal_issues(position, state, totals)
        day.figures = totals
        day.raw_since_rollup = 0
        day.rolled_up = True

    def totals(self, accounts: set[str] | None = None) -> dict[str, int]:
        """Sums over every account's days, or over the given accounts'."""
        sums = list(ZERO)
        for (account_id, _), day in self.days.items():
            if accounts is not None and account_id not in accounts:
                continue
            for i, value in enumerate(day.figures):
                sums[i] += value
        return figures_dict(sums)
