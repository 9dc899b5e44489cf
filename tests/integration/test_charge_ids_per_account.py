"""Invariant 3, per account: a charge id counts once within its account, and only there.

Another account's use of the same id is another charge, on every path of
the write side (one charge, a batch through the intake, a batch large
enough to append under the log's lock, concurrent writers), and nothing
about it is shown to the first account.
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone

import pytest

from ledger import AlreadyReversed, AmbiguousCharge, ChargeConflict, Totals, UnknownCharge

T0 = datetime(2026, 2, 1, 12, tzinfo=timezone.utc)


def charge(account: str, charge_id: str, prompt: int = 10, **more) -> dict:
    return dict(account_id=account, charge_id=charge_id, user_id=f"{account}-user", charge_type="completion",
                model=f"model-{account}", prompt_tokens=prompt, completion_tokens=1, occurred_at=T0.isoformat(),
                **more)


def test_the_same_id_in_two_accounts_is_two_charges(ledger):
    first = ledger.record_charge(**charge("acme", "call-1", 10))
    second = ledger.record_charge(**charge("beta", "call-1", 20))
    assert not first.duplicate and not second.duplicate and second.account_id == "beta"
    assert ledger.record_charge(**charge("beta", "call-1", 20)).duplicate
    with pytest.raises(ChargeConflict) as caught:
        ledger.record_charge(**charge("acme", "call-1", 30))
    # The conflict compares with acme's own charge: beta's 20 tokens appear nowhere.
    assert caught.value.differences["prompt_tokens"] == (10, 30) and "20" not in str(caught.value)
    assert ledger.account_totals("acme") == Totals.of_unpriced(1, 10, 1, 11)
    assert ledger.account_totals("beta") == Totals.of_unpriced(1, 20, 1, 21)


@pytest.mark.parametrize("size", [6, 300], ids=["intake", "locked"])
def test_a_batch_keys_ids_by_account(make_ledger, size):
    """Both the intake (small batches) and the locked append (large ones) key by (account, id)."""
    ledger = make_ledger(direct_batch_min=200)
    items = [charge(("acme", "beta")[n % 2], f"k-{n // 2 % (size // 3)}", 1 + n % 2) for n in range(size)]
    outcomes = ledger.record_charges(items)
    fresh = [o for o in outcomes if o.ok and not o.receipt.duplicate]
    repeats = [o for o in outcomes if o.ok and o.receipt.duplicate]
    assert len(fresh) == 2 * (size // 3) and len(repeats) == size - len(fresh)
    assert {o.receipt.account_id for o in fresh} == {"acme", "beta"}
    again = ledger.record_charges(items)
    assert all(o.ok and o.receipt.duplicate for o in again)
    assert ledger.account_totals("acme").charges == ledger.account_totals("beta").charges == size // 3


def test_concurrent_writers_sharing_ids_across_accounts_count_each_once_per_account(make_ledger):
    ledgers = [make_ledger() for _ in range(4)]
    ids = [f"c-{n}" for n in range(60)]
    errors: list[BaseException] = []

    def write(ledger, account: str) -> None:
        try:
            for n, charge_id in enumerate(ids):
                if n % 3 == 0:
                    ledger.record_charges([charge(account, i) for i in ids[n:n + 3]])
                else:
                    ledger.record_charge(**charge(account, charge_id))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(ledgers[n % 4], ("acme", "beta")[n % 2])) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    for account in ("acme", "beta"):
        assert ledgers[0].account_totals(account) == Totals.of_unpriced(len(ids), 10 * len(ids), len(ids),
                                                                       11 * len(ids))


def test_a_reversal_names_its_account(ledger):
    for account in ("acme", "beta"):
        ledger.record_charge(**charge(account, "shared"))
    ledger.record_charge(**charge("acme", "only-acme"))
    with pytest.raises(UnknownCharge) as unknown:
        ledger.reverse_charge("only-acme", account_id="beta")
    assert "beta" in str(unknown.value)
    receipt = ledger.reverse_charge("shared", "refund", account_id="beta")
    assert receipt.account_id == "beta"
    with pytest.raises(AlreadyReversed):
        ledger.reverse_charge("shared", account_id="beta")
    assert ledger.account_totals("beta").charges == 0 and ledger.account_totals("acme").charges == 2
    # Without the account (deprecated): the one account that used the id, or an error naming the ambiguity.
    with pytest.warns(DeprecationWarning):
        assert ledger.reverse_charge("only-acme").account_id == "acme"
    with pytest.warns(DeprecationWarning), pytest.raises(AmbiguousCharge):
        ledger.reverse_charge("shared")
    assert ledger.account_of_charge("only-acme") == "acme"
    with pytest.raises(AmbiguousCharge):
        ledger.account_of_charge("shared")
