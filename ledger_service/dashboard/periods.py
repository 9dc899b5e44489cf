"""The period a page shows: this month, the last 30 days, or a custom range, in billing dates."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

CHOICES = {"month": "This month", "30d": "Last 30 days", "custom": "Custom range"}
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
#: Longest custom range a page draws, in days.
MAX_DAYS = 366


@dataclass(frozen=True)
class Period:
    choice: str
    start: date
    end: date
    error: str = ""

    @property
    def days(self) -> list[date]:
        return [self.start + timedelta(days=n) for n in range((self.end - self.start).days + 1)]

    def query(self) -> str:
        """The period as query parameters, for links that keep it."""
        if self.choice == "custom":
            return f"period=custom&from={self.start.isoformat()}&to={self.end.isoformat()}"
        return f"period={self.choice}"


def today_in(zone: str) -> date:
    return datetime.now(ZoneInfo(zone)).date()


def period_of(choice: str | None, start: str | None, end: str | None, zone: str) -> Period:
    """The period asked for; a bad custom range falls back to this month with a message."""
    today = today_in(zone)
    if choice == "30d":
        return Period("30d", today - timedelta(days=29), today)
    if choice == "custom":
        first, last = _day(start), _day(end)
        if first is None or last is None:
            return Period("month", today.replace(day=1), today, "give both dates as YYYY-MM-DD")
        if first > last:
            return Period("month", today.replace(day=1), today, f"{first} is after {last}")
        if (last - first).days >= MAX_DAYS:
            return Period("month", today.replace(day=1), today, f"at most {MAX_DAYS} days at a time")
        return Period("custom", first, last)
    return Period("month", today.replace(day=1), today)


def _day(value: str | None) -> date | None:
    if not value or not _DAY.fullmatch(value.strip()):
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        return None
