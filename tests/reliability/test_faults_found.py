"""One small test per fault the reliability tests found, on each store, so none comes back."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest

from jobs.rejected import jsonable, list_rejected, reject
from ledger import InvalidCharge, Ledger
from ledger.compaction import compact
from ledger.importer import import_file
from projections import Projector, audit

GOOD = {"account_id": "acme", "user_id": "ada", "charge_type": "completion", "prompt_tokens": 7,
        "completion_tokens": 3, "occurred_at": "2026-01-01T10:00:00Z"}


def test_the_audit_is_clean_right_after_compaction(ledger: Ledger) -> None:
    """Compaction pruned what live counts and appended rollups after the live position:
    the audit used to compare at that position and report every compacted day as lost."""
    for n in range(6):
        ledger.record_charge(**{**GOOD, "charge_id": f"c-{n}", "account_id": f"acct-{n % 2}",
                                "occurred_at": f"2026-01-0{1 + n % 3}T10:00:00Z"})
    projector = Projector(ledger)
    projector.run()
    before = audit(ledger)
    result = compact(ledger, before=date(2026, 1, 4), projected_position=projector.position(),
                     grace=timedelta(0))
    assert result.events_pruned == 6
    after = audit(ledger)  # the periodic job compacts after projecting: rollups are not applied yet
    assert before.clean and after.clean, after.to_dict()
    assert after.conservation.records == before.conservation.records


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"account_id": 10**5000}, "account_id"),  # str() of it raised ValueError
        ({"prompt_tokens": "--5"}, "prompt_tokens"),  # int('--5') raised ValueError
        ({"prompt_tokens": -(10**5000)}, "prompt_tokens"),  # the message formatted it
        ({"occurred_at": "9999-12-31T23:00:00-05:00"}, "occurred_at"),  # OverflowError in UTC
        ({"occurred_at": "0001-01-01T00:00:00+05:00"}, "occurred_at"),
        ({"account_id": None, "user_profile_id": 10**300}, "user_profile_id"),  # a 308-character account
        ({10**5000: 1}, "<int>"),  # a key whose str() raises
    ],
)
def test_hostile_values_are_invalid_charges_and_spare_their_batch(ledger: Ledger, bad, field) -> None:
    """Each used to escape validation as a bare exception (or, on PostgreSQL, fail the insert),
    failing the whole batch with it."""
    item = {**GOOD, "charge_id": "bad", **bad}
    outcomes = ledger.record_charges([{**GOOD, "charge_id": "before"}, item, {**GOOD, "charge_id": "after"}])
    assert [o.ok for o in outcomes] == [True, False, True]
    assert isinstance(outcomes[1].error, InvalidCharge) and field in outcomes[1].error.errors
    assert ledger.account_totals("acme").charges == 2


def test_a_huge_integer_line_is_rejected_and_the_import_goes_on(ledger: Ledger, tmp_path) -> None:
    source = tmp_path / "charges.jsonl"
    source.write_text("\n".join([
        json.dumps({**GOOD, "charge_id": "one"}),
        '{"account_id": "acme", "charge_type": "usage", "prompt_tokens": 1' + "0" * 5000 + "}",
        json.dumps({**GOOD, "charge_id": "two"}),
    ]) + "\n")
    result = import_file(ledger, source)
    assert (result.recorded, result.rejected) == (2, 1)
    assert result.sample[0]["line"] == 2 and "line" in result.sample[0]["errors"]


def test_a_rejected_charge_is_kept_whatever_its_values(ledger: Ledger) -> None:
    """jsonable() raised on an integer over 4,300 digits: the charge was lost with its rejection."""
    payload = {"prompt_tokens": 10**5000, "completion_tokens": float("nan"), "user_id": b"x"}
    kept = reject(ledger, payload, {"prompt_tokens": "too big"}, task_id="t-1")
    assert kept is not None
    [row] = list_rejected(ledger)
    assert row.payload["prompt_tokens"].startswith("<an integer of")
    assert row.payload["completion_tokens"] == "nan"
    assert jsonable({"n": 5, "when": None}) == {"n": 5, "when": None}
