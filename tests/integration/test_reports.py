"""Report queries over the live records on each real store."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from projections import Projector
from projections.reports import GROUP_COLUMNS, account_summaries, daily_billing_view, records

UTC = timezone.utc
FIGURES = ("charges", "prompt_tokens", "completion_tokens", "total_tokens", "cost_micros", "unpriced_charges")


def charge(charge_id: str, account: str, user: str, day: int, charge_type: str = "completion",
           provider: str | None = "openai", model: str | None = "gpt-4o", prompt: int = 100, completion: int = 10):
    return {"charge_id": charge_id, "account_id": account, "user_id": user, "charge_type": charge_type,
            "provider": provider, "model": model, "prompt_tokens": prompt, "completion_tokens": completion,
            "occurred_at": datetime(2026, 3, day, 15, tzinfo=UTC)}


@pytest.fixture
def billed(ledger):
    outcomes = ledger.record_charges([
        charge("a1", "acme", "ann", 1),
        charge("a2", "acme", "ann", 1, prompt=50),
        charge("a3", "acme", "bob", 1, charge_type="tool", provider=None, model=None),
        charge("a4", "acme", "ann", 2, provider="anthropic", model="claude"),
        charge("a5", "acme", "bob", 3, charge_type="usage", provider=None, model=None, prompt=7, completion=3),
        charge("b1", "beta", "cat", 2),
        charge("b2", "beta", "cat", 2),
    ])
    assert all(o.ok for o in outcomes)
    ledger.reverse_charge("b2")
    Projector(ledger).run()
    return ledger


def figures(row):
    """Charges and tokens (no prices are set here: cost 0, every charge unpriced)."""
    assert (row["cost_micros"], row["unpriced_charges"]) == (0, row["charges"])
    return tuple(row[name] for name in FIGURES[:4])


def test_row_level_records_have_the_agreed_keys_and_unspecified_as_none(billed):
    rows = records(billed, account_id="acme")
    assert all(list(r) == list(GROUP_COLUMNS) + list(FIGURES) for r in rows)
    assert len(rows) == 4
    tool = next(r for r in rows if r["charge_type"] == "tool")
    assert (tool["provider"], tool["model"], tool["billing_date"]) == (None, None, date(2026, 3, 1))
    ann = next(r for r in rows if r["user_id"] == "ann" and r["billing_date"] == date(2026, 3, 1))
    assert figures(ann) == (2, 150, 20, 170)


def test_group_by_any_subset_leaves_the_rest_none(billed):
    by_day = records(billed, group_by=["billing_date"])
    assert [(r["billing_date"], r["charges"]) for r in by_day] == [
        (date(2026, 3, 1), 3), (date(2026, 3, 2), 2), (date(2026, 3, 3), 1)
    ]
    assert all(r["account_id"] is None and r["user_id"] is None for r in by_day)
    by_provider = {r["provider"]: r["charges"] for r in records(billed, group_by=("provider",))}
    assert by_provider == {"openai": 3, "anthropic": 1, None: 2}
    by_user_model = records(billed, account_id="acme", group_by=["user", "model"])
    assert {(r["user_id"], r["model"]): r["charges"] for r in by_user_model} == {
        ("ann", "gpt-4o"): 2, ("ann", "claude"): 1, ("bob", None): 2
    }
    assert records(billed, group_by="account,charge_type")[0].keys() == records(billed)[0].keys()
    with pytest.raises(ValueError, match="cannot group by"):
        records(billed, group_by=["colour"])


def test_date_ranges_are_inclusive_and_filters_combine(billed):
    assert {r["billing_date"] for r in records(billed, start="2026-03-02", end=date(2026, 3, 2))} == {date(2026, 3, 2)}
    assert len(records(billed, start=date(2026, 3, 2))) == 3
    assert len(records(billed, end="2026-03-01")) == 2
    assert [figures(r) for r in records(billed, charge_type="usage", user_id="bob")] == [(1, 7, 3, 10)]
    assert len(records(billed, provider="openai", model="gpt-4o", account_id="acme")) == 1
    assert records(billed, account_id="nobody") == []


def test_fully_reversed_groups_are_left_out(billed):
    beta = records(billed, account_id="beta")
    assert [figures(r) for r in beta] == [(1, 100, 10, 110)]


def test_the_seed_daily_billing_view_groups_per_account_user_date_and_charge_type(billed):
    rows = daily_billing_view(billed, account_id="acme")
    keys = [(r["user_id"], r["billing_date"].day, r["charge_type"]) for r in rows]
    assert keys == [("ann", 1, "completion"), ("bob", 1, "tool"), ("ann", 2, "completion"), ("bob", 3, "usage")]
    assert all(r["provider"] is None and r["model"] is None for r in rows)
    assert figures(rows[0]) == (2, 150, 20, 170)


def test_account_summaries(billed):
    summaries = account_summaries(billed)
    assert [s["account_id"] for s in summaries] == ["acme", "beta"]
    acme = summaries[0]
    assert figures(acme) == (5, 357, 43, 400)
    assert (acme["users"], acme["first_date"], acme["last_date"]) == (2, date(2026, 3, 1), date(2026, 3, 3))
    assert figures(account_summaries(billed, start="2026-03-02")[0]) == (2, 107, 13, 120)


def test_reports_read_from_an_engine_too_and_are_empty_before_any_projection(ledger):
    engine = ledger.recorder.datastore.engine
    assert records(engine) == [] and account_summaries(ledger) == []
    ledger.record_charge(**charge("x", "acme", "ann", 5))
    Projector(ledger).run()
    assert [figures(r) for r in records(engine, group_by=[])] == [(1, 100, 10, 110)]
    assert records(engine, start=date(2026, 3, 5) + timedelta(days=1)) == []
