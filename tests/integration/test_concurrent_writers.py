"""Concurrent writers on PostgreSQL: 8 processes, hot accounts, duplicate submissions.

Each process records its share of charges one call at a time; 10% of the
submissions repeat an id another process also submits. The stored totals
must be exact: every id counted once, none lost.
"""

from __future__ import annotations

import multiprocessing as mp
import random

import pytest

from ledger import Ledger, Settings, Totals

pytestmark = pytest.mark.postgres

WORKERS = 8
CHARGES = int(__import__("os").environ.get("TEST_CHARGES", "5000"))


def plan(accounts: list[str], seed: int = 7) -> list[list[dict]]:
    """Per-worker submissions: every charge once, plus 10% duplicates across workers."""
    rng = random.Random(seed)
    charges = [
        dict(account_id=accounts[i % len(accounts)], charge_id=f"c-{i}", user_id=f"u{i % 3}",
             charge_type="completion", prompt_tokens=i % 97, completion_tokens=i % 13,
             occurred_at="2026-05-01T10:00:00+00:00")
        for i in range(CHARGES)
    ]
    shares: list[list[dict]] = [[] for _ in range(WORKERS)]
    for i, item in enumerate(charges):
        shares[i % WORKERS].append(item)
    for item in rng.sample(charges, CHARGES // 10):
        shares[rng.randrange(WORKERS)].append(dict(item))
    for share in shares:
        rng.shuffle(share)
    return shares


def _worker(url: str, share: list[dict], batch: int, out: mp.Queue) -> None:
    ledger = Ledger(Settings(database_url=url))
    duplicates = 0
    try:
        if batch == 1:
            for item in share:
                duplicates += ledger.record_charge(**item).duplicate
        else:
            for start in range(0, len(share), batch):
                outcomes = ledger.record_charges(share[start : start + batch])
                assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok]
                duplicates += sum(o.receipt.duplicate for o in outcomes)
        out.put(("ok", duplicates))
    except BaseException as exc:  # reported to the parent, which fails the test
        out.put(("error", repr(exc)))
    finally:
        ledger.close()


def run_workers(url: str, accounts: list[str], batch: int = 1) -> int:
    shares = plan(accounts)
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(url, share, batch, out)) for share in shares]
    for p in procs:
        p.start()
    results = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    errors = [r for r in results if r[0] != "ok"]
    assert not errors, errors
    return sum(r[1] for r in results)


def expected(accounts: list[str]) -> dict[str, Totals]:
    totals = {a: Totals() for a in accounts}
    for i in range(CHARGES):
        a = accounts[i % len(accounts)]
        totals[a] = totals[a] + Totals.of_unpriced(1, i % 97, i % 13, i % 97 + i % 13)
    return totals


@pytest.mark.slow
@pytest.mark.parametrize("accounts", [["hot"], ["hot-a", "hot-b"]], ids=["one-account", "two-accounts"])
def test_eight_processes_one_call_each(postgres_url, accounts):
    duplicates = run_workers(postgres_url, accounts)
    assert duplicates == CHARGES // 10
    ledger = Ledger(Settings(database_url=postgres_url))
    try:
        for account, totals in expected(accounts).items():
            assert ledger.account_totals(account) == totals
        events = ledger.recorder.select_notifications(start=1, limit=10 * CHARGES)
        recorded = [n for n in events if n.topic.endswith("ChargeRecorded")]
        assert len(recorded) == CHARGES
    finally:
        ledger.close()


@pytest.mark.slow
def test_eight_processes_in_batches(postgres_url):
    run_workers(postgres_url, ["hot-a", "hot-b"], batch=50)
    ledger = Ledger(Settings(database_url=postgres_url))
    try:
        for account, totals in expected(["hot-a", "hot-b"]).items():
            assert ledger.account_totals(account) == totals
    finally:
        ledger.close()
