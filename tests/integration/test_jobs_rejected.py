"""The rejected-charges store on both stores: keep, list, re-submit, dismiss."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from jobs.rejected import (
    AlreadyResolved,
    UnknownRejection,
    dismiss,
    errors_of,
    get_rejected,
    list_rejected,
    reject,
    resubmit,
)
from ledger import ChargeConflict, InvalidCharge


def _invalid(ledger, **fields):
    with pytest.raises(InvalidCharge) as caught:
        ledger.record_charge(**fields)
    return caught.value


def test_an_invalid_charge_is_kept_with_its_errors_and_resubmitted_corrected(ledger):
    fields = {"account_id": "acme", "charge_id": "c-1", "charge_type": "usage", "prompt_tokens": -5,
              "occurred_at": datetime(2026, 5, 1, 12, tzinfo=timezone.utc)}
    error = _invalid(ledger, **fields)
    kept_id = reject(ledger, fields, errors_of(error), task_id="task-1")

    [kept] = list_rejected(ledger)
    assert kept.id == kept_id and kept.task_id == "task-1" and not kept.resolved
    assert kept.payload["prompt_tokens"] == -5
    assert kept.payload["occurred_at"] == "2026-05-01T12:00:00+00:00"
    assert set(kept.errors) == {"prompt_tokens"} and ">= 0" in kept.errors["prompt_tokens"]
    assert kept.received_at.tzinfo is not None

    # The same input fails again: the row stays open, unchanged.
    with pytest.raises(InvalidCharge):
        resubmit(ledger, kept_id)
    assert not get_rejected(ledger, kept_id).resolved

    receipt = resubmit(ledger, kept_id, {"prompt_tokens": 5})
    assert receipt.charge_id == "c-1" and not receipt.duplicate
    assert ledger.account_totals("acme").prompt_tokens == 5
    assert list_rejected(ledger) == []
    [resolved] = list_rejected(ledger, include_resolved=True)
    assert resolved.resolution == "recorded as charge c-1" and resolved.resubmitted_at is not None

    with pytest.raises(AlreadyResolved):
        resubmit(ledger, kept_id, {"prompt_tokens": 5})
    assert ledger.account_totals("acme").charges == 1


def test_one_row_per_task_however_often_it_ran(ledger):
    fields = {"account_id": "acme", "charge_type": "bogus"}
    errors = errors_of(_invalid(ledger, **fields))
    first = reject(ledger, fields, errors, task_id="task-7")
    again = reject(ledger, fields, errors, task_id="task-7")
    other = reject(ledger, fields, errors)  # no task: the synchronous path may keep many
    assert first is not None and again is None and other is not None
    assert [r.id for r in list_rejected(ledger)] == [first, other]


def test_a_conflict_is_kept_naming_the_differences_and_a_late_duplicate_resolves(ledger):
    ledger.record_charge(account_id="acme", charge_id="c-9", charge_type="usage", prompt_tokens=10)
    with pytest.raises(ChargeConflict) as caught:
        ledger.record_charge(account_id="acme", charge_id="c-9", charge_type="usage", prompt_tokens=11)
    kept_id = reject(ledger, {"account_id": "acme", "charge_id": "c-9", "charge_type": "usage",
                              "prompt_tokens": 11}, errors_of(caught.value), task_id="t-9")
    kept = get_rejected(ledger, kept_id)
    assert set(kept.errors) >= {"prompt_tokens"} and "10" in kept.errors["prompt_tokens"]

    # Corrected to what was recorded: the ledger answers with the original receipt.
    receipt = resubmit(ledger, kept_id, {"prompt_tokens": 10})
    assert receipt.duplicate
    assert get_rejected(ledger, kept_id).resolution == "duplicate of the recorded charge c-9"
    assert ledger.account_totals("acme").charges == 1


def test_dismiss_and_unknown_ids(ledger):
    kept_id = reject(ledger, {"charge_type": "test"}, {"account_id": "required"})
    dismissed = dismiss(ledger, kept_id, "a smoke test call")
    assert dismissed.resolution == "dismissed: a smoke test call"
    with pytest.raises(AlreadyResolved):
        dismiss(ledger, kept_id, "again")
    with pytest.raises(UnknownRejection):
        resubmit(ledger, 999_999)
    assert list_rejected(ledger) == []


def test_odd_values_are_kept_as_text(ledger):
    class Odd:
        def __str__(self) -> str:
            return "odd value"

    kept_id = reject(ledger, {"reference": Odd(), "prompt_tokens": 1.5}, {"reference": "bad"})
    assert get_rejected(ledger, kept_id).payload == {"reference": "odd value", "prompt_tokens": 1.5}
