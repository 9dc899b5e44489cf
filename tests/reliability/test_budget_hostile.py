"""Hostile input to budgets, reservations and credits: each refused naming its field, nothing stored.

Every case compares the store's row counts (events, charge index, holds,
budgets, grants, alerts) and the budget's figures before and after the
refused call: a refusal must leave no trace, and must not disturb a hold
or a charge that was already there.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from budget_support import stored_counts, tokens_charge

from ledger import Ledger
from ledger.errors import (
    ChargeConflict,
    InvalidBudget,
    InvalidCredit,
    InvalidInput,
    InvalidReservation,
    ReservationConflict,
    UnknownReservation,
)

ACCOUNT = "acct-hostile"


@pytest.fixture
def budgeted(ledger: Ledger) -> Ledger:
    """A ledger with a hard token budget, a micros budget elsewhere, one captured and one live hold."""
    ledger.set_budget("tok", account_id=ACCOUNT, limit_tokens=10_000, period="day")
    ledger.set_budget("cash", account_id="acct-cash", limit_micros=5_000_000, period="month")
    done = ledger.reserve(ACCOUNT, estimate_tokens=500, reservation_id="r-done")
    ledger.capture(done.reservation_id, **_facts(400))
    ledger.reserve(ACCOUNT, estimate_tokens=300, reservation_id="r-live")
    ledger.grant_credits(ACCOUNT, 1_000, grant_id="g-1")
    return ledger


def _facts(tokens: int) -> dict[str, Any]:
    """Charge fields for a capture: the charge id comes from the reservation."""
    fields = tokens_charge("unused", tokens, occurred_at=datetime(2026, 1, 5, 12, tzinfo=UTC))
    fields.pop("charge_id")
    return fields


def _refused(
    ledger: Ledger, call: Callable[[], Any], error: type[Exception], field: str | None, case: str = ""
) -> Exception:
    """``call`` raises ``error`` (naming ``field`` if given); the store and the budget are as before."""
    before = stored_counts(ledger)
    status = ledger.budget_status("tok").to_dict()
    try:
        call()
    except error as exc:
        raised = exc
    else:
        pytest.fail(f"{case or call}: accepted, expected {error.__name__}")
    if field is not None:
        assert isinstance(raised, InvalidInput), case
        assert field in raised.errors, (case, raised.errors)
        assert raised.errors[field], case  # a reason, not just a name
    assert stored_counts(ledger) == before, case
    assert ledger.budget_status("tok").to_dict() == status, case
    return raised


#: (reserve's terms, the field its refusal must name)
BAD_RESERVATIONS: list[tuple[dict[str, Any], str]] = [
    ({"estimate_tokens": 0}, "estimate_tokens"),
    ({"estimate_tokens": -1}, "estimate_tokens"),
    ({"estimate_tokens": -(10**18)}, "estimate_tokens"),
    ({"estimate_tokens": 1.5}, "estimate_tokens"),
    ({"estimate_tokens": 100.0}, "estimate_tokens"),
    ({"estimate_tokens": "100"}, "estimate_tokens"),
    ({"estimate_tokens": True}, "estimate_tokens"),
    ({"estimate_tokens": Decimal(100)}, "estimate_tokens"),
    ({"estimate_tokens": 10**15}, "estimate_tokens"),
    ({"estimate_micros": 0}, "estimate_micros"),
    ({"estimate_micros": -5}, "estimate_micros"),
    ({"estimate_micros": 2.5}, "estimate_micros"),
    ({}, "estimate_micros"),
    ({"estimate_micros": 100}, "estimate_tokens"),  # the token budget needs a token estimate
    ({"estimate_tokens": 10, "ttl_seconds": 0}, "ttl_seconds"),
    ({"estimate_tokens": 10, "ttl_seconds": -1}, "ttl_seconds"),
    ({"estimate_tokens": 10, "ttl_seconds": 86_401}, "ttl_seconds"),
    ({"estimate_tokens": 10, "ttl_seconds": 10**9}, "ttl_seconds"),
    ({"estimate_tokens": 10, "ttl_seconds": 1.5}, "ttl_seconds"),
    ({"estimate_tokens": 10, "ttl_seconds": "60"}, "ttl_seconds"),
    ({"estimate_tokens": 10, "ttl_seconds": None}, "ttl_seconds"),
    ({"estimate_tokens": 10, "reservation_id": ""}, "reservation_id"),
    ({"estimate_tokens": 10, "reservation_id": 7}, "reservation_id"),
    ({"estimate_tokens": 10, "reservation_id": "x" * 257}, "reservation_id"),
    ({"estimate_tokens": 10, "user_id": ""}, "user_id"),
]


def test_a_bad_reservation_is_refused_naming_its_field(budgeted: Ledger) -> None:
    for terms, field in BAD_RESERVATIONS:
        _refused(budgeted, lambda t=terms: budgeted.reserve(ACCOUNT, **t), InvalidReservation, field, repr(terms))


def test_the_limits_of_ttl_are_accepted(budgeted: Ledger) -> None:
    """1 s and exactly a day are valid: the refusals above are at the edges, not inside."""
    short = budgeted.reserve(ACCOUNT, estimate_tokens=10, ttl_seconds=1)
    day = budgeted.reserve(ACCOUNT, estimate_tokens=10, ttl_seconds=86_400)
    assert timedelta(0) < short.expires_at - datetime.now(UTC) <= timedelta(seconds=1)
    assert timedelta(hours=23, minutes=59) < day.expires_at - datetime.now(UTC) <= timedelta(days=1)


def test_a_bad_account_is_refused_naming_it(budgeted: Ledger) -> None:
    for account in (None, "", 12, "a\x00b"):
        _refused(budgeted, lambda a=account: budgeted.reserve(a, estimate_tokens=1), InvalidReservation, "account_id")


def test_capturing_an_unknown_reservation_records_nothing(budgeted: Ledger) -> None:
    error = _refused(budgeted, lambda: budgeted.capture("r-never", **_facts(10)), UnknownReservation, None)
    assert "r-never" in str(error)
    _refused(budgeted, lambda: budgeted.capture("", **_facts(10)), InvalidReservation, "reservation_id")
    _refused(budgeted, lambda: budgeted.capture(None, **_facts(10)), InvalidReservation, "reservation_id")


def test_capturing_a_released_reservation_records_nothing(budgeted: Ledger) -> None:
    budgeted.release("r-live")
    assert budgeted.reservation_state("r-live") == "released"
    _refused(budgeted, lambda: budgeted.capture("r-live", **_facts(10)), ReservationConflict, None)
    _refused(budgeted, lambda: budgeted.capture("r-live", charge_id="other", **_facts(10)), ReservationConflict, None)
    assert budgeted.reservation_state("r-live") == "released"


def test_releasing_an_unknown_or_captured_reservation_is_refused(budgeted: Ledger) -> None:
    _refused(budgeted, lambda: budgeted.release("r-never"), UnknownReservation, None)
    _refused(budgeted, lambda: budgeted.release("r-done"), ReservationConflict, None)
    assert budgeted.reservation_state("r-done") == "captured"


def test_a_second_capture_with_other_facts_is_a_conflict(budgeted: Ledger) -> None:
    """Same charge id, other tokens: ChargeConflict naming the fields; another charge id: ReservationConflict."""
    error = _refused(budgeted, lambda: budgeted.capture("r-done", **_facts(401)), ChargeConflict, None)
    assert {"prompt_tokens", "completion_tokens", "total_tokens"} & set(error.fields)  # type: ignore[attr-defined]
    _refused(budgeted, lambda: budgeted.capture("r-done", charge_id="c-else", **_facts(400)),
             ReservationConflict, None)
    again = budgeted.capture("r-done", **_facts(400))  # the same facts again: a duplicate, not a conflict
    assert again.duplicate


def test_a_capture_for_another_account_or_user_is_refused(budgeted: Ledger) -> None:
    budgeted.reserve(ACCOUNT, user_id="alice", estimate_tokens=10, reservation_id="r-alice")
    _refused(budgeted, lambda: budgeted.capture("r-live", **{**_facts(10), "account_id": "acct-other"}),
             InvalidReservation, "account_id")
    _refused(budgeted, lambda: budgeted.capture("r-alice", **{**_facts(10), "user_id": "bob"}),
             InvalidReservation, "user_id")


def test_a_capture_with_a_bad_charge_is_refused_and_the_hold_stays(budgeted: Ledger) -> None:
    held = budgeted.budget_status("tok").held
    _refused(budgeted, lambda: budgeted.capture("r-live", **{**_facts(10), "prompt_tokens": -1}),
             InvalidInput, "prompt_tokens")
    assert budgeted.reservation_state("r-live") == "held"
    assert budgeted.budget_status("tok").held == held == 300


def test_reusing_a_reservation_id_with_other_terms_is_a_conflict(budgeted: Ledger) -> None:
    _refused(budgeted, lambda: budgeted.reserve(ACCOUNT, estimate_tokens=301, reservation_id="r-live"),
             ReservationConflict, None)
    same = budgeted.reserve(ACCOUNT, estimate_tokens=300, reservation_id="r-live")
    assert same.duplicate


#: (set_budget's fields, the field its refusal must name)
BAD_BUDGETS: list[tuple[dict[str, Any], str]] = [
    ({"limit_micros": 100, "limit_tokens": 100}, "limit_micros"),
    ({"limit_micros": 100, "limit": "credits"}, "limit_micros"),
    ({}, "limit_micros"),
    ({"limit_micros": 0}, "limit_micros"),
    ({"limit_micros": -100}, "limit_micros"),
    ({"limit_micros": 1.5}, "limit_micros"),
    ({"limit_tokens": "1000"}, "limit_tokens"),
    ({"limit": "cash"}, "limit"),
    ({"limit_micros": 100, "thresholds": [0]}, "thresholds"),
    ({"limit_micros": 100, "thresholds": [1001]}, "thresholds"),
    ({"limit_micros": 100, "thresholds": [-50]}, "thresholds"),
    ({"limit_micros": 100, "thresholds": [50.5]}, "thresholds"),
    ({"limit_micros": 100, "thresholds": [True]}, "thresholds"),
    ({"limit_micros": 100, "thresholds": "50,80"}, "thresholds"),
    ({"limit_micros": 100, "thresholds": 80}, "thresholds"),
    ({"limit_micros": 100, "thresholds": list(range(1, 23))}, "thresholds"),
    ({"limit": "credits", "period": "month"}, "period"),
    ({"limit": "credits", "period": "day"}, "period"),
    ({"limit_micros": 100, "period": "week"}, "period"),
    ({"limit_micros": 100, "mode": "strict"}, "mode"),
    ({"limit_micros": 100, "user_id": ""}, "user_id"),
]


def test_a_bad_budget_is_refused_naming_its_field(budgeted: Ledger) -> None:
    """Refused as a new budget and as a change to an existing one."""
    for fields, field in BAD_BUDGETS:
        for budget_id in ("new", "tok"):
            _refused(budgeted, lambda b=budget_id, f=fields: budgeted.set_budget(b, account_id=ACCOUNT, **f),
                     InvalidBudget, field, f"{budget_id}: {fields!r}")


def test_a_budget_moved_to_another_account_is_refused(budgeted: Ledger) -> None:
    _refused(budgeted, lambda: budgeted.set_budget("tok", account_id="acct-else", limit_tokens=10_000, period="day"),
             InvalidBudget, "account_id")


#: (amount, expires_at, the field the grant's refusal must name)
BAD_GRANTS: list[tuple[Any, Any, str]] = [
    (0, None, "amount_micros"),
    (-1, None, "amount_micros"),
    (1.5, None, "amount_micros"),
    (1000.0, None, "amount_micros"),
    ("1000", None, "amount_micros"),
    (None, None, "amount_micros"),
    (True, None, "amount_micros"),
    (10**15, None, "amount_micros"),
    (1000, datetime(2020, 1, 1, tzinfo=UTC), "expires_at"),
    (1000, "2020-01-01T00:00:00Z", "expires_at"),
    (1000, datetime(2099, 1, 1), "expires_at"),  # no offset
    (1000, "next tuesday", "expires_at"),
    (1000, 1_900_000_000, "expires_at"),
]


def test_a_bad_grant_is_refused_naming_its_field(budgeted: Ledger) -> None:
    balance = budgeted.balance(ACCOUNT).to_dict()
    for amount, expires_at, field in BAD_GRANTS:
        _refused(budgeted, lambda a=amount, e=expires_at: budgeted.grant_credits(ACCOUNT, a, expires_at=e),
                 InvalidCredit, field, f"amount {amount!r}, expires_at {expires_at!r}")
    assert budgeted.balance(ACCOUNT).to_dict() == balance


def test_a_grant_id_reused_with_other_terms_is_refused(budgeted: Ledger) -> None:
    _refused(budgeted, lambda: budgeted.grant_credits(ACCOUNT, 2_000, grant_id="g-1"), InvalidCredit, "grant_id")
    assert budgeted.grant_credits(ACCOUNT, 1_000, grant_id="g-1").duplicate
