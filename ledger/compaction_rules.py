"""Which days and events a compaction run may touch, and why a closed day is held back.

A day D is due when D < ``before`` and its end in the billing time zone is
older than ``now - grace``. An event may be pruned when the projector has
applied it (its position <= ``projected_position``) and it was recorded
before ``now - grace``, so no stale writer can re-insert a pruned version.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from ledger.billing_keys import day_end, moment
from ledger.errors import LedgerError


class CompactionError(LedgerError):
    """The log holds something compaction must not paper over."""


#: Why a closed account-day was held back, in the order a day is counted under
#: (each skipped day counts once, under the first reason that applies to it).
#: Raw events stored before the day's rollup: left for a person to look at.
HELD_RAW_BEFORE_ROLLUP = "raw_before_rollup"
#: An event to prune was recorded less than the grace period ago (counted from
#: the recording time, so a backdated import waits for the grace period too).
HELD_GRACE_PERIOD = "grace_period"
#: An event to prune is past the projector's position.
HELD_NOT_PROJECTED = "not_projected"
HOLD_REASONS = (HELD_RAW_BEFORE_ROLLUP, HELD_GRACE_PERIOD, HELD_NOT_PROJECTED)


def first_reason(reasons: Iterable[str]) -> str:
    """The reason a day held back for several is counted under."""
    present = set(reasons)
    return next((reason for reason in HOLD_REASONS if reason in present), HELD_NOT_PROJECTED)


@dataclass(frozen=True)
class Rules:
    """Which days and events a run may touch, fixed at its start."""

    before: date
    projected_position: int
    cutoff: datetime  # now - grace
    zone: ZoneInfo
    time_zone: str

    def day_is_due(self, day: date) -> bool:
        return day < self.before and day_end(day, self.zone) <= self.cutoff

    def may_prune(self, position: int, recorded_at: Any) -> bool:
        return position <= self.projected_position and moment(recorded_at) <= self.cutoff

    def hold_reasons(self, position: int, recorded_at: Any) -> set[str]:
        """Why an event may not be pruned yet: empty exactly when :meth:`may_prune`."""
        reasons = set()
        if moment(recorded_at) > self.cutoff:
            reasons.add(HELD_GRACE_PERIOD)
        if position > self.projected_position:
            reasons.add(HELD_NOT_PROJECTED)
        return reasons
