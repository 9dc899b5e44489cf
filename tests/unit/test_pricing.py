"""The costing rule and price lookups: integers only, boundaries exact."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.errors import InvalidPrice
from ledger.money import format_micros
from ledger.pricing import Price, PriceTable, validate_price
from ledger.settings import DEFAULT_CHARGE_TYPES

UTC = timezone.utc
CHANGE = datetime(2026, 3, 1, tzinfo=UTC)
ONE_US = timedelta(microseconds=1)


def price(version=1, prompt=2_500_000, completion=10_000_000, at=CHANGE, charge_type=None, per_call=0,
          provider="openai", model="gpt-4o") -> Price:
    return Price(version, provider, model, charge_type, prompt, completion, per_call, at)


def test_cost_is_rounded_once_half_up_to_the_micro_unit():
    p = price(prompt=2_500_000, completion=10_000_000)
    assert p.cost_micros(1000, 500, 1500) == 2_500 + 5_000
    assert p.cost_micros(1, 0, 1) == 3  # 2.5 micro-units: half up
    assert price(prompt=2_400_000).cost_micros(1, 0, 1) == 2  # 2.4: down
    assert price(prompt=150_000).cost_micros(3, 0, 3) == 0  # 0.45: down
    assert price(prompt=150_000, per_call=7).cost_micros(0, 0, 0) == 7


def test_a_total_only_charge_is_costed_at_the_prompt_rate():
    assert price(prompt=1_000_000, completion=9_000_000).cost_micros(0, 0, 40) == 40


@given(st.lists(st.tuples(st.integers(0, 10**7), st.integers(0, 10**7)), max_size=200),
       st.integers(0, 10**8), st.integers(0, 10**8))
def test_the_sum_of_costed_charges_is_exactly_the_sum_of_their_costs(charges, prompt_rate, completion_rate):
    """Integers all the way: no total ever drifts from its lines (floats would)."""
    p = price(prompt=prompt_rate, completion=completion_rate)
    costs = [p.cost_micros(a, b, a + b) for a, b in charges]
    assert all(isinstance(c, int) and c >= 0 for c in costs)
    exact = [(a * prompt_rate + b * completion_rate) for a, b in charges]
    assert all(abs(c * 1_000_000 - e) <= 500_000 for c, e in zip(costs, exact))  # each off by <= half a micro
    assert sum(costs) == sum((e + 500_000) // 1_000_000 for e in exact)


def test_price_in_effect_switches_exactly_at_effective_from():
    table = PriceTable([price(1, prompt=1_000_000, at=CHANGE - timedelta(days=30)), price(2, prompt=2_000_000)])
    assert table.price_for("openai", "gpt-4o", "completion", CHANGE - ONE_US).version == 1
    assert table.price_for("openai", "gpt-4o", "completion", CHANGE).version == 2
    assert table.price_for("openai", "gpt-4o", "completion", CHANGE + ONE_US).version == 2
    assert table.price_for("openai", "gpt-4o", "completion", CHANGE - timedelta(days=31)) is None


def test_a_charge_type_price_wins_over_the_any_type_price_and_later_sets_win_ties():
    table = PriceTable([price(1), price(2, charge_type="tool", prompt=1), price(3, prompt=5)])
    assert table.price_for("openai", "gpt-4o", "tool", CHANGE).version == 2
    assert table.price_for("openai", "gpt-4o", "completion", CHANGE).version == 3
    assert table.price_for("openai", "other", "completion", CHANGE) is None
    assert table.price_for(None, None, "completion", CHANGE) is None


def test_validation_names_every_bad_field_and_refuses_floats():
    with pytest.raises(InvalidPrice) as caught:
        validate_price({"model": "m", "prompt_micros_per_million": 1.5, "effective_from": "2026-01-01",
                        "charge_type": "nope", "colour": "red"}, DEFAULT_CHARGE_TYPES)
    assert set(caught.value.errors) == {"prompt_micros_per_million", "completion_micros_per_million",
                                        "effective_from", "charge_type", "colour"}
    assert "float" in caught.value.errors["prompt_micros_per_million"]
    assert "time zone" in caught.value.errors["effective_from"]
    with pytest.raises(InvalidPrice, match="must be >= 0"):
        validate_price({"prompt_micros_per_million": -1, "completion_micros_per_million": 0}, DEFAULT_CHARGE_TYPES)


def test_money_is_formatted_only_at_the_edge_and_exactly():
    assert format_micros(1_234_567) == "1.234567"
    assert format_micros(-5) == "-0.000005"
    assert format_micros(12_345_000_000, "USD") == "12,345.000000 USD"
    assert format_micros(None) == "-"
