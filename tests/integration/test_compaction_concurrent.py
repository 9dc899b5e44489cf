"""Compaction while other processes record charges and project: nothing lost or counted twice.

Writer processes record late charges for already compacted days, charges for
today, duplicates of pruned charges and reversals, and a projector process
keeps the daily records up to date, while the test process compacts in a loop
up to the projector's position. Afterwards every account's totals (from a
fresh ledger), the live records and the log folded from scratch equal what
the writers' plans say, and the audit is clean.
"""

from __future__ import annotations

import time

import multiprocessing as mp
import random
from datetime import date, datetime, timedelta, timezone

import pytest

from ledger import Ledger, Settings
from projections import Projector, audit
from test_compaction import Model, check, run
from test_compaction_projections import live

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


def _projector(url: str, stop: mp.Event, out: mp.Queue) -> None:
    ledger = Ledger(Settings(database_url=url))
    try:
        projector = Projector(ledger, batch_size=50)
        while not stop.is_set():
            projector.run()
        out.put(("ok", 0))
    except BaseException as exc:
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
        out, projected, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
        procs = [ctx.Process(target=_writer, args=(store_url, ops, out)) for ops in shares]
        projecting = ctx.Process(target=_projector, args=(store_url, stop, projected))
        for p in [*procs, projecting]:
            p.start()
        projector = Projector(ledger)
        results, runs, pruning_runs = [], 0, 0
        while len(results) < len(procs):
            result = run(ledger, before=date(2026, 2, 1), position=projector.position(),
                         grace=timedelta(milliseconds=300))
            runs += 1
            pruning_runs += result.events_pruned > 0
            while not out.empty():
                results.append(out.get())
        deadline = time.monotonic() + 20  # writers may finish before a day is due: keep the
        while not pruning_runs and time.monotonic() < deadline:  # projector running until one is
            result = run(ledger, before=date(2026, 2, 1), position=projector.position(),
                         grace=timedelta(milliseconds=300))
            runs += 1
            pruning_runs += result.events_pruned > 0
            time.sleep(0.05)
        stop.set()
        results.append(projected.get(timeout=60))
        for p in [*procs, projecting]:
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
        assert pruning_runs >= 1, f"no run pruned anything ({runs} runs)"

        projector.run()
        run(ledger, position=projector.position(), grace=timedelta(0))  # all closed days are due
        projector.run()
        fresh = Ledger(Settings(database_url=store_url))
        try:
            check(ledger, model, fresh)
        finally:
            fresh.close()
        assert live(ledger) == model.records()
        report = audit(ledger)
        assert report.clean, report.to_dict()
    finally:
        ledger.close()
