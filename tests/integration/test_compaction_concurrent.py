"""Compaction while other processes record charges: nothing is lost or counted twice.

Writer processes record late charges for already compacted days, charges for
today, duplicates of pruned charges and reversals, while the test process
compacts in a loop. Afterwards every account's totals (from a fresh ledger)
and the log folded from scratch equal what the writers' plans say.
"""

from __future__ import annotations

import multiprocessing as mp
import random
from datetime import date, datetime, timedelta, timezone

import pytest

from ledger import Ledger, Settings
from test_compaction import Model, check, run

UTC = timezone.utc
DAYS = [date(2026, 1, 1), date(2026, 1, 2), date(2026, 1, 3)]
ACCOUNTS = ["hot", "warm", "cold"]
SEED = 300
WRITERS = 3
PER_WRITER = 150


def item(n: int, rng: random.Random, today: bool = False) -> dict:
    day = datetime.now(UTC).date() if today else DAYS[n % len(DAYS)]
    moment = datetime.combine(day, datetime.min.time(), UTC) + timedelta(minutes=rng.randrange(0, 60))
    return dict(charge_id=f"c-{n}", account_id=ACCOUNTS[min(n % 5, 2)], user_id=f"u{n % 4}",
                charge_type="completion", provider="p", model=f"m{n % 2}",
                prompt_tokens=n % 89, completion_tokens=n % 7, occurred_at=moment.isoformat())


def plans() -> tuple[list[dict], list[list[tuple[str, object]]]]:
    """The seed, and per writer its operations: ("charge", fields) or ("reverse", id)."""
    rng = random.Random(11)
    seed = [item(n, rng) for n in range(SEED)]
    shares: list[list[tuple[str, object]]] = []
    for w in range(WRITERS):
        ops: list[tuple[str, object]] = []
        for k in range(PER_WRITER):
            n = SEED + w * PER_WRITER + k
            ops.append(("charge", item(n, rng, today=k % 4 == 0)))
            if k % 10 == 5:
                ops.append(("charge", dict(seed[rng.randrange(SEED)])))  # duplicate of a pruned one
            if k % 10 == 7:
                ops.append(("reverse", f"c-{n}"))
        shares.append(ops)
    return seed, shares


def _writer(url: str, ops: list[tuple[str, object]], out: mp.Queue) -> None:
    ledger = Ledger(Settings(database_url=url))
    try:
        duplicates = 0
        for kind, arg in ops:
            if kind == "charge":
                duplicates += ledger.record_charge(**arg).duplicate  # type: ignore[arg-type]
            else:
                ledger.reverse_charge(str(arg), "test")
        out.put(("ok", duplicates))
    except BaseException as exc:  # reported to the parent, which fails the test
        out.put(("error", repr(exc)))
    finally:
        ledger.close()


@pytest.mark.slow
def test_recording_while_compacting_loses_nothing(store_url):
    seed, shares = plans()
    ledger = Ledger(Settings(database_url=store_url))
    try:
        model = Model()
        outcomes = ledger.record_charges(seed)
        assert all(o.ok for o in outcomes)
        model.charges.update({c["charge_id"]: c for c in seed})
        assert run(ledger).days == 9  # 3 accounts x 3 days, before the writers start

        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        procs = [ctx.Process(target=_writer, args=(store_url, ops, out)) for ops in shares]
        for p in procs:
            p.start()
        results, runs, pruning_runs = [], 0, 0
        while len(results) < len(procs):
            result = run(ledger, before=date(2026, 2, 1), grace=timedelta(milliseconds=300))
            runs += 1
            pruning_runs += result.events_pruned > 0
            while not out.empty():
                results.append(out.get())
        for p in procs:
            p.join(timeout=60)
        errors = [r for r in results if r[0] != "ok"]
        assert not errors, errors

        for ops in shares:
            for kind, arg in ops:
                if kind == "charge":
                    model.charges.setdefault(arg["charge_id"], arg)  # type: ignore[index]
                else:
                    model.reversed.add(str(arg))
        assert sum(r[1] for r in results) == sum(
            1 for ops in shares for kind, arg in ops
            if kind == "charge" and int(arg["charge_id"][2:]) < SEED)  # type: ignore[index]
        assert pruning_runs >= 1, f"no run pruned anything while writers ran ({runs} runs)"

        run(ledger, grace=timedelta(0))  # writers are done: everything closed is due
        fresh = Ledger(Settings(database_url=store_url))
        try:
            check(ledger, model, fresh)
        finally:
            fresh.close()
    finally:
        ledger.close()
