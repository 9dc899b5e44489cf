"""What a budget is and what it allows: validation, periods and statuses, with no storage.

A budget bounds one account's spend (or one user's within it) in cost
micro-units, in tokens, or by the account's prepaid credit balance, over a
billing day, a billing month or all time. A hard budget refuses reservations
it cannot hold; a soft one only alerts. Thresholds are integer percents of
the limit at which an alert fires, once per period.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from ledger.errors import InvalidBudget
from ledger.text import text_problem

PERIODS = ("day", "month", "total")
MODES = ("hard", "soft")
UNITS = ("micros", "tokens", "credits")
DEFAULT_THRESHOLDS = (50, 80, 100)
#: The most thresholds one budget may carry.
MAX_THRESHOLDS = 20
#: Limits, estimates and grants stay below this (a signed 64-bit column holds their sums).
MAX_AMOUNT = 10**15


@dataclass(frozen=True, slots=True)
class BudgetSpec:
    """A validated budget definition."""

    budget_id: str
    account_id: str
    user_id: str | None
    unit: str
    limit_value: int | None
    period: str
    mode: str
    thresholds: tuple[int, ...]

    def facts(self) -> dict[str, Any]:
        """As the Budget aggregate's Set event carries them."""
        return {
            "account_id": self.account_id,
            "user_id": self.user_id,
            "unit": self.unit,
            "limit_value": self.limit_value,
            "period": self.period,
            "mode": self.mode,
            "thresholds": list(self.thresholds),
        }


def identifier(errors: dict[str, str], name: str, value: Any, *, required: bool = True) -> str | None:
    if value is None:
        if required:
            errors[name] = "is required"
        return None
    if not isinstance(value, str) or not value.strip():
        errors[name] = "must be a non-empty string"
        return None
    if len(value) > 256:
        errors[name] = "must be at most 256 characters"
        return None
    problem = text_problem(value, identifier=True)
    if problem:
        errors[name] = problem
        return None
    return value


def positive_amount(errors: dict[str, str], name: str, value: Any) -> int | None:
    """An integer in 1..MAX_AMOUNT, or None with the reason in ``errors``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        errors[name] = "must be an integer"
        return None
    if value <= 0:
        errors[name] = "must be greater than 0"
        return None
    if value >= MAX_AMOUNT:
        errors[name] = f"must be less than {MAX_AMOUNT}"
        return None
    return value


def validate_budget(fields: Mapping[str, Any]) -> BudgetSpec:
    """A :class:`BudgetSpec` from caller input, or :class:`InvalidBudget` naming every bad field."""
    errors: dict[str, str] = {}
    budget_id = identifier(errors, "budget_id", fields.get("budget_id"))
    account_id = identifier(errors, "account_id", fields.get("account_id"))
    user_id = identifier(errors, "user_id", fields.get("user_id"), required=False)
    limit = fields.get("limit")
    micros = positive_amount(errors, "limit_micros", fields.get("limit_micros"))
    tokens = positive_amount(errors, "limit_tokens", fields.get("limit_tokens"))
    given = [name for name in ("limit_micros", "limit_tokens", "limit") if fields.get(name) is not None]
    unit, value = "micros", micros
    if limit is not None and limit != "credits":
        errors["limit"] = 'must be "credits" (the account\'s prepaid balance), or use limit_micros or limit_tokens'
    if len(given) != 1:
        errors.setdefault("limit_micros", "give exactly one of limit_micros, limit_tokens or limit=\"credits\"")
    elif given[0] == "limit_tokens":
        unit, value = "tokens", tokens
    elif given[0] == "limit":
        unit, value = "credits", None
    period = fields.get("period")
    if period is None:
        period = "total" if unit == "credits" else "month"
    if period not in PERIODS:
        errors["period"] = f"must be one of {', '.join(PERIODS)}"
    elif unit == "credits" and period != "total":
        errors["period"] = 'a credits budget spans the grants\' lives: use "total" (or leave it out)'
    if unit == "credits" and user_id is not None:
        errors["user_id"] = "a credits budget bounds the whole account's prepaid balance: leave user_id out"
    mode = fields.get("mode", "hard")
    if mode not in MODES:
        errors["mode"] = f"must be one of {', '.join(MODES)}"
    thresholds = _thresholds(errors, fields.get("thresholds", DEFAULT_THRESHOLDS))
    if errors:
        raise InvalidBudget(errors)
    assert budget_id is not None and account_id is not None
    return BudgetSpec(budget_id, account_id, user_id, unit, value, period, mode, thresholds)


def _thresholds(errors: dict[str, str], value: Any) -> tuple[int, ...]:
    if value is None:
        return DEFAULT_THRESHOLDS
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        errors["thresholds"] = "must be a list of integer percents, e.g. [50, 80, 100]"
        return ()
    items = list(value)
    if len(items) > MAX_THRESHOLDS:
        errors["thresholds"] = f"at most {MAX_THRESHOLDS} thresholds"
        return ()
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int) or not 1 <= item <= 1000:
            errors["thresholds"] = "each threshold must be an integer percent from 1 to 1000"
            return ()
    return tuple(sorted(set(items)))


# -- periods ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Period:
    """A budget's current period: billing dates ``[start, end)`` and the same as UTC instants (all None: ``total``)."""

    start: date | None
    end: date | None
    start_at: datetime | None
    end_at: datetime | None

    @property
    def key(self) -> str:
        """What identifies the period among a budget's alerts ("" for ``total``)."""
        return "" if self.start is None else self.start.isoformat()


def current_period(period: str, zone: ZoneInfo, now: datetime) -> Period:
    """The period containing ``now``, in billing dates of ``zone``."""
    if period == "total":
        return Period(None, None, None, None)
    today = now.astimezone(zone).date()
    if period == "day":
        start = today
        end = date.fromordinal(today.toordinal() + 1)
    else:
        start = today.replace(day=1)
        end = date(start.year + (start.month == 12), start.month % 12 + 1, 1)
    return Period(start, end, _midnight(start, zone), _midnight(end, zone))


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


# -- statuses -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BudgetStatus:
    """A budget now: its definition, and in its unit the limit, spent, held and remaining.

    Figures are in the budget's unit: ``*_micros`` for a cost or credits
    budget, ``*_tokens`` for a token budget (the other unit's are None).
    remaining = limit − spent − held, never below 0. For a credits budget
    the limit is the unexpired grants' total and spent what they covered.
    """

    budget_id: str
    account_id: str
    user_id: str | None
    period: str
    period_start: date | None
    mode: str
    thresholds: tuple[int, ...]
    unit: str
    limit: int
    spent: int
    held: int
    version: int = 1
    credits: bool = field(default=False)
    #: Charges in scope not yet folded into the spend sums (how long a read of spent is); not shown.
    unfolded: int = field(default=0, compare=False, repr=False)

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.spent - self.held)

    @property
    def suffix(self) -> str:
        return "tokens" if self.unit == "tokens" else "micros"

    def figures(self) -> dict[str, int]:
        """limit, spent, held and remaining, named in the budget's unit (``limit_micros``…)."""
        s = self.suffix
        return {f"limit_{s}": self.limit, f"spent_{s}": self.spent, f"held_{s}": self.held,
                f"remaining_{s}": self.remaining}

    def __getattr__(self, name: str) -> Any:
        for stem in ("limit", "spent", "held", "remaining"):
            for unit in ("micros", "tokens"):
                if name == f"{stem}_{unit}":
                    return getattr(self, stem) if unit == self.suffix else None
        raise AttributeError(name)

    def to_dict(self) -> dict[str, Any]:
        """As JSON: what the HTTP API and ``ledger budgets list --json`` show."""
        return {
            "budget_id": self.budget_id,
            "account_id": self.account_id,
            "user_id": self.user_id,
            "period": self.period,
            "period_start": None if self.period_start is None else self.period_start.isoformat(),
            "mode": self.mode,
            "thresholds": list(self.thresholds),
            "limit": "credits" if self.credits else None,
            "unit": self.suffix,
            **self.figures(),
        }


def crossed(status: BudgetStatus) -> list[int]:
    """The thresholds spent has reached (spent ≥ threshold% of the limit)."""
    if status.limit <= 0:
        return []
    return [t for t in status.thresholds if status.spent * 100 >= t * status.limit]


def refusal(status: BudgetStatus, estimate: int) -> bool:
    """Whether a hard budget must refuse a hold of ``estimate``: spent + held + estimate would exceed the limit."""
    return status.spent + status.held + estimate > status.limit


def utc_now() -> datetime:
    return datetime.now(UTC)
