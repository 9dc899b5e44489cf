"""Budget validation, periods, thresholds and credit coverage: the pure rules, without a store."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from ledger.budget_rules import (
    BudgetStatus,
    crossed,
    current_period,
    refusal,
    validate_budget,
)
from ledger.credits import allocate
from ledger.errors import InvalidBudget


def status(limit: int, spent: int, held: int = 0, thresholds=(50, 80, 100), unit="micros") -> BudgetStatus:
    return BudgetStatus("b", "acme", None, "month", date(2026, 12, 1), "hard", tuple(thresholds), unit,
                        limit, spent, held)


@pytest.mark.parametrize(("fields", "named"), [
    ({"account_id": "a"}, "budget_id"),
    ({"budget_id": "b"}, "account_id"),
    ({"budget_id": "b", "account_id": "a"}, "limit_micros"),
    ({"budget_id": "b", "account_id": "a", "limit_micros": 5, "limit_tokens": 5}, "limit_micros"),
    ({"budget_id": "b", "account_id": "a", "limit_micros": 0}, "limit_micros"),
    ({"budget_id": "b", "account_id": "a", "limit_tokens": -1}, "limit_tokens"),
    ({"budget_id": "b", "account_id": "a", "limit_micros": 1.5}, "limit_micros"),
    ({"budget_id": "b", "account_id": "a", "limit_micros": True}, "limit_micros"),
    ({"budget_id": "b", "account_id": "a", "limit": "dollars"}, "limit"),
    ({"budget_id": "b", "account_id": "a", "limit_micros": 5, "period": "week"}, "period"),
    ({"budget_id": "b", "account_id": "a", "limit_micros": 5, "mode": "strict"}, "mode"),
    ({"budget_id": "b", "account_id": "a", "limit_micros": 5, "thresholds": [0]}, "thresholds"),
    ({"budget_id": "b", "account_id": "a", "limit_micros": 5, "thresholds": "50"}, "thresholds"),
    ({"budget_id": "b", "account_id": "a", "limit_micros": 5, "thresholds": [50.5]}, "thresholds"),
    ({"budget_id": "b", "account_id": "a", "limit": "credits", "period": "month"}, "period"),
    ({"budget_id": "b", "account_id": "a", "limit": "credits", "user_id": "u"}, "user_id"),
    ({"budget_id": "b\x00", "account_id": "a", "limit_micros": 5}, "budget_id"),
    ({"budget_id": "b", "account_id": "a\u200b", "limit_micros": 5}, "account_id"),
])
def test_bad_budgets_are_refused_naming_the_field(fields, named):
    with pytest.raises(InvalidBudget) as caught:
        validate_budget(fields)
    assert named in caught.value.errors


def test_defaults_and_normalised_thresholds():
    spec = validate_budget({"budget_id": "b", "account_id": "a", "limit_tokens": 10, "thresholds": [100, 50, 50]})
    assert (spec.unit, spec.limit_value, spec.period, spec.mode, spec.thresholds) == (
        "tokens", 10, "month", "hard", (50, 100))
    credits = validate_budget({"budget_id": "c", "account_id": "a", "limit": "credits"})
    assert (credits.unit, credits.limit_value, credits.period) == ("credits", None, "total")


def test_periods_are_billing_dates_of_the_zone():
    zone = ZoneInfo("Asia/Kolkata")  # +05:30: days start at 18:30 UTC
    now = datetime(2026, 12, 31, 19, 0, tzinfo=UTC)  # already 1 January there
    day = current_period("day", zone, now)
    assert (day.start, day.end) == (date(2027, 1, 1), date(2027, 1, 2))
    assert day.start_at == datetime(2026, 12, 31, 18, 30, tzinfo=UTC)
    month = current_period("month", zone, now)
    assert (month.start, month.end, month.key) == (date(2027, 1, 1), date(2027, 2, 1), "2027-01-01")
    december = current_period("month", ZoneInfo("UTC"), datetime(2026, 12, 15, tzinfo=UTC))
    assert december.end == date(2027, 1, 1)
    total = current_period("total", zone, now)
    assert (total.start, total.key) == (None, "")


def test_remaining_never_goes_below_zero_and_figures_carry_the_unit():
    over = status(100, 150, 10, unit="tokens")
    assert over.remaining == 0
    assert over.figures() == {"limit_tokens": 100, "spent_tokens": 150, "held_tokens": 10, "remaining_tokens": 0}
    assert (over.limit_tokens, over.limit_micros) == (100, None)


def test_refusal_is_exact_at_the_limit():
    assert not refusal(status(100, 60, 30), 10)
    assert refusal(status(100, 60, 30), 11)


def test_thresholds_cross_at_their_percent_exactly():
    assert crossed(status(1000, 499)) == []
    assert crossed(status(1000, 500)) == [50]
    assert crossed(status(1000, 1000)) == [50, 80, 100]
    assert crossed(status(3, 2, thresholds=[66, 67])) == [66]  # 200% >= 198, < 201: integers, no rounding


def grant(grant_id: str, amount: int, granted: datetime, expires: datetime | None = None) -> dict:
    return {"grant_id": grant_id, "account_id": "a", "amount_micros": amount, "granted_at": granted,
            "expires_at": expires}


def test_spend_is_covered_by_the_earliest_expiring_grant_first_and_only_while_it_lives():
    zone = ZoneInfo("UTC")
    d1 = datetime(2026, 12, 1, 9, tzinfo=UTC)
    grants = [grant("forever", 1000, d1), grant("short", 300, d1, d1 + timedelta(days=2)),
              grant("later", 500, d1 + timedelta(days=5))]
    spent = {date(2026, 12, 1): 200, date(2026, 12, 2): 200, date(2026, 12, 4): 100, date(2026, 12, 6): 50}
    now = datetime(2026, 12, 7, tzinfo=UTC)
    balance = allocate("a", grants, spent, zone, now)
    left = {g.grant_id: g.remaining_micros for g in balance.grants}
    # day 1: short 300 -> 100; day 2: short 100 -> 0, forever 100; day 4: forever 100 (short expired);
    # day 6: "later" never expires either, "forever" was granted first: forever 50.
    assert left == {"short": 0, "forever": 750, "later": 500}
    assert (balance.balance_micros, balance.granted_micros, balance.overage_micros) == (1250, 1500, 0)


def test_spend_no_grant_covers_is_overage():
    zone = ZoneInfo("UTC")
    d1 = datetime(2026, 12, 3, tzinfo=UTC)
    balance = allocate("a", [grant("g", 100, d1)], {date(2026, 12, 1): 70, date(2026, 12, 3): 150}, zone,
                       datetime(2026, 12, 4, tzinfo=UTC))
    assert (balance.balance_micros, balance.used_micros, balance.overage_micros) == (0, 100, 120)


def test_a_grant_stops_covering_and_counting_at_the_start_of_its_expiry_date():
    zone = ZoneInfo("UTC")
    granted = datetime(2026, 12, 1, 9, tzinfo=UTC)
    grants = [grant("short", 100, granted, datetime(2026, 12, 3, 12, tzinfo=UTC)), grant("forever", 100, granted)]
    spent = {date(2026, 12, 3): 50}  # on the expiry date, before and after 12:00 alike
    on_the_day = allocate("a", grants, spent, zone, datetime(2026, 12, 3, 8, tzinfo=UTC))
    left = {g.grant_id: (g.remaining_micros, g.expired) for g in on_the_day.grants}
    assert left == {"short": (100, True), "forever": (50, False)}
    assert (on_the_day.balance_micros, on_the_day.granted_micros) == (50, 100)
