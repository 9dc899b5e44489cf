"""Eight writer processes, a projector and compaction, all at once: exact totals.

One hot account takes half the charges, forty cold accounts the rest; 10% of
the submissions repeat a charge another writer also submits (concurrent
duplicates); every writer reverses a few of its charges. Meanwhile one
process projects in small batches and another projects and compacts closed
days with no grace. At the end, the stored totals, the live daily billing
records (key by key) and the audit all equal a plain model.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import time
from datetime import date, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from ledger import Ledger, Settings, Totals
from ledger.compaction import compact
from projections import Projector, audit
from rel_model import Model, Observer

pytestmark = pytest.mark.slow

WRITERS = 8
CHARGES = int(os.environ.get("REL_CONCURRENT_CHARGES", "2400"))
COLD = [f"cold-{i}" for i in range(40)]
FORK = mp.get_context("fork")


def charges(seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        dict(charge_id=f"c-{n}", account_id="hot" if n % 2 == 0 else rng.choice(COLD),
             user_id=f"u{rng.randrange(4)}", charge_type=rng.choice(["completion", "tool", "usage"]),
             provider=rng.choice([None, "openai", "anthropic"]), model=rng.choice([None, "m1", "m2"]),
             prompt_tokens=rng.randint(0, 500), completion_tokens=rng.randint(0, 200),
             occurred_at=f"2026-01-{1 + rng.randrange(6):02d}T{rng.randrange(24):02d}:{rng.randrange(60):02d}:00Z")
        for n in range(CHARGES)
    ]


def shares(items: list[dict[str, Any]], seed: int) -> list[list[dict[str, Any]]]:
    """Each charge to one writer, and 10% of them also to another: (submissions, reversals)."""
    rng = random.Random(seed)
    parts: list[list[dict[str, Any]]] = [[] for _ in range(WRITERS)]
    for i, item in enumerate(items):
        parts[i % WRITERS].append(item)
    for i in rng.sample(range(len(items)), len(items) // 10):
        parts[(i % WRITERS + rng.randint(1, WRITERS - 1)) % WRITERS].append(dict(items[i]))
    for part in parts:
        rng.shuffle(part)
    return parts


def reversed_ids(items: list[dict[str, Any]]) -> set[str]:
    return {item["charge_id"] for item in items[::25]}


def _writer(url: str, share: list[dict[str, Any]], reverse: list[str], seed: int, out: Any) -> None:
    rng = random.Random(seed)
    ledger = Ledger(Settings(database_url=url))
    try:
        duplicates, position = 0, 0
        while position < len(share):
            size = rng.choice([1, 1, 1, 4, 16])
            chunk = share[position : position + size]
            position += size
            if size == 1:
                duplicates += ledger.record_charge(**chunk[0]).duplicate
            else:
                outcomes = ledger.record_charges(chunk)
                assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok]
                duplicates += sum(o.receipt.duplicate for o in outcomes)
        for charge_id in reverse:
            ledger.reverse_charge(charge_id, "concurrency test")
        out.put(("ok", duplicates))
    except BaseException as exc:
        out.put(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        ledger.close()


def _projector(url: str, stop: Any, out: Any) -> None:
    ledger = Ledger(Settings(database_url=url))
    rng = random.Random(os.getpid())
    applied = 0
    try:
        while not stop.is_set():
            applied += Projector(ledger, batch_size=rng.randint(10, 200)).run()
            time.sleep(0.005)
        out.put(("projector", applied))
    except BaseException as exc:
        out.put(("error", f"projector {type(exc).__name__}: {exc}"))
    finally:
        ledger.close()


def _compactor(url: str, stop: Any, out: Any) -> None:
    ledger = Ledger(Settings(database_url=url))
    pruned = 0
    try:
        while not stop.is_set():
            projector = Projector(ledger, batch_size=500)
            projector.run()
            result = compact(ledger, before=date(2026, 1, 7), projected_position=projector.position(),
                             grace=timedelta(0))
            pruned += result.events_pruned
            time.sleep(0.01)
        out.put(("compactor", pruned))
    except BaseException as exc:
        out.put(("error", f"compactor {type(exc).__name__}: {exc}"))
    finally:
        ledger.close()


def run_everything(url: str, seed: int) -> dict[str, Any]:
    items = charges(seed)
    parts = shares(items, seed)
    to_reverse = reversed_ids(items)
    Ledger(Settings(database_url=url)).close()  # tables exist before the processes race
    out, stop = FORK.Queue(), FORK.Event()
    background = [FORK.Process(target=_projector, args=(url, stop, out)),
                  FORK.Process(target=_compactor, args=(url, stop, out))]
    writers = [
        FORK.Process(target=_writer, args=(
            url, part, [i["charge_id"] for i in part if i["charge_id"] in to_reverse and
                        int(i["charge_id"][2:]) % WRITERS == w], seed + w, out))
        for w, part in enumerate(parts)
    ]
    for process in background + writers:
        process.start()
    results = [out.get(timeout=300) for _ in writers]
    stop.set()
    results += [out.get(timeout=300) for _ in background]
    for process in background + writers:
        process.join(timeout=60)
    errors = [r for r in results if r[0] == "error"]
    assert not errors, errors
    figures = {"duplicates": sum(r[1] for r in results if r[0] == "ok")}
    figures.update({r[0]: r[1] for r in results if r[0] in ("projector", "compactor")})
    return {"items": items, "reversed": to_reverse, **figures}


def test_eight_writers_with_projector_and_compaction(store_url: str) -> None:
    seed = int(os.environ.get("REL_CONCURRENT_SEED") or random.SystemRandom().randrange(2**32))
    print(f"concurrency seed: REL_CONCURRENT_SEED={seed}")
    run = run_everything(store_url, seed)
    print({k: v for k, v in run.items() if k not in ("items", "reversed")})
    assert run["duplicates"] == CHARGES // 10  # every repeated id answered as a duplicate

    model = Model(ZoneInfo("UTC"))
    for item in run["items"]:
        model.accept(item, 0)
    for charge_id in run["reversed"]:
        model.reverse(charge_id, 0)
    ledger = Ledger(Settings(database_url=store_url))
    try:
        projector = Projector(ledger)
        projector.run()
        compact(ledger, before=date(2026, 1, 7), projected_position=projector.position(), grace=timedelta(0))
        for account_id, figures in model.account_totals().items():
            assert ledger.account_totals(account_id) == Totals.of_unpriced(*figures), account_id
        assert Observer(ledger).live() == model.records()
        result = audit(ledger)
        assert result.clean, result.to_dict()
        assert result.conservation.records == model.sums()
    finally:
        ledger.close()


def test_eight_threads_share_one_ledger_with_projector_and_compaction(store_url: str) -> None:
    """As a Huey thread worker runs: charge tasks, the projector and compaction share one ledger."""
    import threading

    seed = int(os.environ.get("REL_CONCURRENT_SEED") or random.SystemRandom().randrange(2**32))
    print(f"concurrency seed: REL_CONCURRENT_SEED={seed}")
    items = charges(seed)[: CHARGES // 2]
    parts = shares(items, seed)
    to_reverse = reversed_ids(items)
    ledger = Ledger(Settings(database_url=store_url))
    stop = threading.Event()
    errors: list[str] = []
    duplicates = [0]
    lock = threading.Lock()

    def writer(w: int, part: list[dict[str, Any]]) -> None:
        rng = random.Random(seed + w)
        try:
            position = 0
            while position < len(part):
                size = rng.choice([1, 1, 4])
                chunk = part[position : position + size]
                position += size
                if size == 1:
                    found = int(ledger.record_charge(**chunk[0]).duplicate)
                else:
                    outcomes = ledger.record_charges(chunk)
                    assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok]
                    found = sum(o.receipt.duplicate for o in outcomes)
                with lock:
                    duplicates[0] += found
            for item in part:
                if item["charge_id"] in to_reverse and int(item["charge_id"][2:]) % WRITERS == w:
                    ledger.reverse_charge(item["charge_id"])
        except BaseException as exc:
            errors.append(f"writer {w}: {type(exc).__name__}: {exc}")

    def background(kind: str) -> None:
        try:
            while not stop.is_set():
                projector = Projector(ledger, batch_size=random.randint(10, 200))
                projector.run()
                if kind == "compactor":
                    compact(ledger, before=date(2026, 1, 7), projected_position=projector.position(),
                            grace=timedelta(0))
                time.sleep(0.005)
        except BaseException as exc:
            errors.append(f"{kind}: {type(exc).__name__}: {exc}")

    try:
        threads = [threading.Thread(target=writer, args=(w, part)) for w, part in enumerate(parts)]
        helpers = [threading.Thread(target=background, args=(kind,)) for kind in ("projector", "compactor")]
        for thread in helpers + threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        stop.set()
        for thread in helpers:
            thread.join(timeout=300)
        assert errors == []
        assert duplicates[0] == len(items) // 10

        model = Model(ZoneInfo("UTC"))
        for item in items:
            model.accept(item, 0)
        for charge_id in to_reverse:
            model.reverse(charge_id, 0)
        projector = Projector(ledger)
        projector.run()
        for account_id, figures in model.account_totals().items():
            assert ledger.account_totals(account_id) == Totals.of_unpriced(*figures), account_id
        assert Observer(ledger).live() == model.records()
        result = audit(ledger)
        assert result.clean, result.to_dict()
        assert result.rollups_checked > 0  # compaction did run alongside
    finally:
        ledger.close()
