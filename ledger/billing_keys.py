"""The key of a daily billing record: an account's billing date, and a group within that day.

A billing date is the calendar date of a charge's ``occurred_at`` in the
billing time zone. A group is (user, charge type, provider, model); an
unspecified provider or model is None here, in the domain (the store keeps
``''`` in its key columns and converts at its boundary).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

#: (account_id, billing_date)
DayKey = tuple[str, date]
#: (user_id, charge_type, provider, model); provider and model None when unspecified.
GroupKey = tuple[str, str, "str | None", "str | None"]


def group_key(state: Mapping[str, Any]) -> GroupKey:
    """The group of a charge, a reversal or a rollup group (its decoded state)."""
    return (state["user_id"], state["charge_type"], state["provider"] or None, state["model"] or None)


def moment(value: Any) -> datetime:
    """An aware datetime from a decoded or still transcoded state value (naive means UTC)."""
    if isinstance(value, dict):
        value = datetime.fromisoformat(value["_data_"])
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def billing_date(occurred_at: Any, zone: ZoneInfo) -> date:
    """The billing date of a moment: its calendar date in the billing time zone."""
    return moment(occurred_at).astimezone(zone).date()


def billing_date_function(zone: ZoneInfo) -> Callable[[str], date]:
    """ISO timestamp -> :func:`billing_date`, fast for the stored UTC form (``...+00:00``).

    Within one UTC hour the local date is the same unless midnight falls
    inside the hour (zones with odd offsets), so each hour is converted once
    and cached; such hours, and other strings, are converted one by one.
    """
    by_hour: dict[str, date | None] = {}
    one_hour = timedelta(hours=1, microseconds=-1)

    def hour_date(hour: str) -> date | None:
        start = datetime.fromisoformat(hour + ":00:00+00:00")
        first = start.astimezone(zone).date()
        return first if (start + one_hour).astimezone(zone).date() == first else None

    def date_of(iso: str) -> date:
        if iso.endswith("+00:00"):
            hour = iso[:13]
            try:
                day = by_hour[hour]
            except KeyError:
                day = by_hour[hour] = hour_date(hour)
            if day is not None:
                return day
        return billing_date(datetime.fromisoformat(iso), zone)

    return date_of


@lru_cache(maxsize=4096)
def day_end(day: date, zone: ZoneInfo) -> datetime:
    """The first instant after ``day`` in ``zone`` (DST-correct), in UTC."""
    return datetime.combine(day + timedelta(days=1), datetime.min.time(), zone).astimezone(UTC)
