"""Threads in one server process: durable group commit on the real stores."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from ledger import Totals


def test_threads_share_transactions_and_count_exactly(ledger):
    def record(i: int):
        return ledger.record_charge(
            account_id=f"acct-{i % 3}", charge_id=f"c-{i % 1500}", charge_type="completion",
            prompt_tokens=i % 1500, completion_tokens=1, occurred_at="2026-04-01T00:00:00Z",
        )

    with ThreadPoolExecutor(16) as pool:
        receipts = list(pool.map(record, range(1650)))  # the last 150 repeat earlier ids
    new = [r for r in receipts if not r.duplicate]
    assert len(new) == 1500 and sum(r.duplicate for r in receipts) == 150
    totals = [ledger.account_totals(f"acct-{a}") for a in range(3)]
    assert sum((t for t in totals), Totals()) == Totals.of_unpriced(
        1500, sum(range(1500)), 1500, sum(range(1500)) + 1500
    )
    assert ledger.group_commit.items == 1650
    assert ledger.group_commit.transactions < 1650
