"""The period a page shows: the last 30 days (the default), this month, or a custom range, in billing dates.

"Last 30 days" is today and the 30 whole days before it, so it holds
everything a newcomer just made: ``ledger demo`` fills the 30 days before
today, and a charge recorded a moment ago lands today. The default is not
"this month", which early in a month shows almost nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from ledger_service.days import parse_day

CHOICES = {"30d": "Last 30 days", "month": "This month", "custom": "Custom range"}
DEFAULT = "30d"
#: Whole days before today that "Last 30 days" covers (today is added).
RECENT_DAYS = 30
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
    """The period asked for; no choice, or a bad custom range, gives the last 30 days (with a message)."""
    today = today_in(zone)
    if choice == "month":
        return Period("month", today.replace(day=1), today)
    if choice == "custom":
        first, last = _day(start), _day(end)
        if first is None or last is None:
            return recent(today, "give both dates as YYYY-MM-DD")
        if first > last:
            return recent(today, f"{first} is after {last}")
        if (last - first).days >= MAX_DAYS:
            return recent(today, f"at most {MAX_DAYS} days at a time")
        return Period("custom", first, last)
    return recent(today)


def recent(today: date, error: str = "") -> Period:
    """Today and the 30 whole days before it (the demo's days, and today's new charges)."""
    return Period(DEFAULT, today - timedelta(days=RECENT_DAYS), today, error)


def _day(value: str | None) -> date | None:
    if not value:
        return None
    try:
        return parse_day(value)
    except ValueError:
        return None
