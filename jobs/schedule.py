"""A crontab read in the billing time zone, for Huey's periodic tasks.

Huey asks a periodic task's ``validate_datetime(timestamp)`` about once a
minute, with the consumer's clock in UTC (``utc=True``). Huey's own
``crontab`` would match that UTC wall time; :class:`ZonedCrontab` converts it
to the billing zone first and handles daylight saving time:

* a wall time the clocks jump over (spring forward) is due in the first
  minute after the jump, so a day never loses its run;
* a wall time that occurs twice (fall back) is due on its first pass only.

Huey's scheduler checks on a 60-second timer that drifts against the wall
clock and may skip a minute; the callable remembers the last minute it
checked and also answers for the minutes in between (up to
:data:`CATCH_UP`), so a skipped check never loses a run and a repeated one
never doubles it.

:class:`ConfiguredCrontab` is the same schedule with its crontab and zone
read on first use (from a process's settings), so defining the periodic task
reads no settings at import.

:class:`ConfiguredInterval` is a schedule of every N seconds (the budget
check's), N read on first use. Huey asks only once a minute, so a shorter
interval is met by the periodic run scheduling its followers within the
minute (:meth:`ConfiguredInterval.follow_ups`).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from huey import crontab

MINUTE = timedelta(minutes=1)
#: How far back a check looks for minutes the scheduler skipped.
CATCH_UP = timedelta(minutes=10)


def utc_minute(moment: datetime) -> datetime:
    """The aware UTC minute of ``moment`` (naive means UTC, as Huey passes it)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).replace(second=0, microsecond=0)


class ZonedCrontab:
    """``minute hour day month day-of-week`` in ``zone``; a Huey ``validate_datetime``."""

    def __init__(self, expression: str, zone: ZoneInfo | str) -> None:
        self._last: datetime | None = None
        self._lock = threading.Lock()
        self._configure(expression, zone)

    def _configure(self, expression: str, zone: ZoneInfo | str) -> None:
        fields = expression.split()
        if len(fields) != 5:
            raise ValueError(
                f"crontab {expression!r}: expected 5 fields (minute hour day month day-of-week)"
            )
        minute, hour, day, month, day_of_week = fields
        self._matches = crontab(minute, hour, day, month, day_of_week, strict=True)
        self.expression = expression
        self.zone = zone if isinstance(zone, ZoneInfo) else ZoneInfo(zone)

    def __repr__(self) -> str:
        return f"ZonedCrontab({self.expression!r}, {self.zone.key!r})"

    def fires_at(self, moment: datetime) -> bool:
        """Whether the schedule is due in the UTC minute of ``moment`` (stateless)."""
        minute = utc_minute(moment)
        local = minute.astimezone(self.zone)
        if local.fold and local.replace(fold=0).utcoffset() != local.utcoffset():
            return False  # the second pass of a repeated hour
        wall = local.replace(tzinfo=None)
        if self._matches(wall):
            return True
        # Wall times skipped by a jump just before this minute are due now.
        skipped = (minute - MINUTE).astimezone(self.zone).replace(tzinfo=None) + MINUTE
        while skipped < wall:
            if self._matches(skipped):
                return True
            skipped += MINUTE
        return False

    def __call__(self, timestamp: datetime) -> bool:
        """Huey's periodic check: due in any minute since the previous check."""
        minute = utc_minute(timestamp)
        with self._lock:
            last = self._last
            if last is not None and minute <= last:
                return False  # this minute was answered already
            self._last = minute
        first = minute if last is None else max(last + MINUTE, minute - CATCH_UP)
        while first <= minute:
            if self.fires_at(first):
                return True
            first += MINUTE
        return False

    def next_runs(self, after: datetime, count: int = 1, horizon_days: int = 400) -> list[datetime]:
        """The next ``count`` UTC minutes strictly after ``after`` when the schedule fires."""
        runs: list[datetime] = []
        minute = utc_minute(after) + MINUTE
        end = minute + timedelta(days=horizon_days)
        while len(runs) < count and minute < end:
            if self.fires_at(minute):
                runs.append(minute)
            minute += MINUTE
        return runs


class ConfiguredCrontab(ZonedCrontab):
    """A :class:`ZonedCrontab` whose crontab and zone ``read()`` gives on first use."""

    def __init__(self, read: Callable[[], tuple[str, ZoneInfo | str]]) -> None:
        self._read = read
        self._last = None
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        """``expression``, ``zone`` and the matcher, read when first asked for."""
        if name in ("expression", "zone", "_matches") and "_read" in self.__dict__:
            self._configure(*self._read())
            return self.__dict__[name]
        raise AttributeError(name)

    def __repr__(self) -> str:
        if "expression" not in self.__dict__:
            return "ConfiguredCrontab(<not read yet>)"
        return super().__repr__()


class ConfiguredInterval:
    """Due every ``read()`` seconds (0: never): a Huey ``validate_datetime`` plus the runs between two checks.

    Huey's scheduler asks once a minute. An interval of a minute or more is
    due when that many minutes (rounded up) passed since it was last due; a
    shorter one is due at every check, and that run schedules
    :meth:`follow_ups` so the work runs every interval within the minute.
    """

    def __init__(self, read: Callable[[], float]) -> None:
        self._read = read
        self._seconds: float | None = None
        self._last: datetime | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return "ConfiguredInterval(<not read yet>)" if self._seconds is None else f"ConfiguredInterval({self._seconds}s)"

    @property
    def seconds(self) -> float:
        """The interval, read on first use."""
        if self._seconds is None:
            self._seconds = float(self._read())
        return self._seconds

    def __call__(self, timestamp: datetime) -> bool:
        """Huey's periodic check: due once per ``seconds`` (at least once per minute asked); never when 0."""
        if not self.seconds:
            return False
        minute = utc_minute(timestamp)
        step = max(1, math.ceil(self.seconds / 60)) * MINUTE
        with self._lock:
            if self._last is not None and self._last <= minute < self._last + step:
                return False
            self._last = minute
            return True

    def follow_ups(self) -> list[float]:
        """Delays in seconds of the runs a due run schedules before the next minute's check."""
        if not self.seconds or self.seconds >= 60:
            return []
        return [k * self.seconds for k in range(1, math.ceil(60 / self.seconds))]
