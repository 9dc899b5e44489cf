"""Writers that commit concurrently on PostgreSQL, and what must still hold.

Charges are acknowledged from a durable intake that writers commit at the
same time, and sequenced into the log in batches under the events table's
lock (see ``ledger/intake.sql``); large batches go straight into the log
under that lock, beside them. These tests drive that path the way a
platform does: many processes, one hot account, duplicates and conflicts, a
projector following along, a transaction held open on purpose, and writers
killed with SIGKILL. Afterwards every account's totals are exact, no charge
id is counted twice, each stream's versions run 1, 2, 3, … without a gap,
and the audit is clean.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import wait_until

from ledger import ChargeConflict, Ledger, Settings, Totals
from projections import Projector, audit

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

FORK = mp.get_context("fork")
WRITERS = 8
ACCOUNTS = [f"acct-{i}" for i in range(100)]
HOT = "hot"


def charge(n: int, account: str, prefix: str = "c") -> dict[str, Any]:
    return dict(charge_id=f"{prefix}-{n}", account_id=account, user_id=f"u{n % 3}",
                charge_type=("completion", "tool")[n % 2], model="m1",
                prompt_tokens=n % 97, completion_tokens=n % 13,
                occurred_at=f"2026-05-0{1 + n % 5}T10:00:00+00:00")


def planned(count: int, prefix: str = "c") -> list[dict[str, Any]]:
    """Charges over 100 accounts with 40% of them on one hot account."""
    rng = random.Random(count)
    return [charge(n, HOT if rng.random() < 0.4 else rng.choice(ACCOUNTS), prefix) for n in range(count)]


def totals_of(items: list[dict[str, Any]]) -> dict[str, Totals]:
    totals: dict[str, Totals] = {}
    for c in items:
        p, q = c["prompt_tokens"], c["completion_tokens"]
        totals[c["account_id"]] = totals.get(c["account_id"], Totals()) + Totals.of_unpriced(1, p, q, p + q)
    return totals


def check_store(url: str, items: list[dict[str, Any]]) -> None:
    """Exact totals, one event per charge id, contiguous versions, a clean audit."""
    ledger = Ledger(Settings(database_url=url))
    try:
        ledger.sequence()
        for account, totals in totals_of(items).items():
            assert ledger.account_totals(account) == totals, account
        engine = ledger.recorder.datastore.engine
        with engine.connect() as connection:
            doubled = connection.execute(sa.text(
                "SELECT convert_from(state, 'UTF8')::json->>'charge_id' AS id, count(*) FROM ledger_events "
                "WHERE topic LIKE '%ChargeRecorded' GROUP BY 1 HAVING count(*) > 1"
            )).fetchall()
            recorded = connection.execute(sa.text(
                "SELECT count(*) FROM ledger_events WHERE topic LIKE '%ChargeRecorded'"
            )).scalar_one()
            indexed = connection.execute(sa.text("SELECT count(*) FROM ledger_charge_index")).scalar_one()
            gaps = connection.execute(sa.text(
                "SELECT originator_id, min(originator_version), max(originator_version), count(*) "
                "FROM ledger_events GROUP BY originator_id "
                "HAVING min(originator_version) <> 1 OR max(originator_version) <> count(*)"
            )).fetchall()
            pending = connection.execute(sa.text("SELECT count(*) FROM ledger_intake")).scalar_one()
        assert doubled == [], doubled
        assert recorded == indexed == len({c["charge_id"] for c in items})
        assert gaps == [], gaps
        assert pending == 0
        result = audit(ledger, catch_up=True)
        assert result.clean, result.to_dict()
        assert result.conservation.records["charges"] == len(items)
    finally:
        ledger.close()


# -- many processes, a hot account, duplicates, conflicts, a projector --------------


def _writer(url: str, share: list[dict[str, Any]], conflicts: set[str], out: Any) -> None:
    ledger = Ledger(Settings(database_url=url))
    counts: Counter[str] = Counter()
    try:
        rng = random.Random(len(share))
        position = 0
        while position < len(share):
            chunk = share[position : position + rng.choice([1, 1, 1, 8, 1, 1, 1, 250])]  # 250: straight into the log
            position += len(chunk)
            outcomes = ledger.record_charges(chunk)
            for item, outcome in zip(chunk, outcomes):
                assert outcome.ok, outcome.error
                counts["duplicate" if outcome.receipt.duplicate else "new"] += 1
                if item["charge_id"] in conflicts:  # the same id again, with other facts
                    changed = {**item, "prompt_tokens": item["prompt_tokens"] + 1}
                    try:
                        ledger.record_charge(**changed)
                    except ChargeConflict as exc:
                        assert "prompt_tokens" in exc.differences
                        counts["conflict"] += 1
        out.put(("ok", dict(counts)))
    except BaseException as exc:  # reported to the parent, which fails the test
        out.put(("error", repr(exc)))
    finally:
        ledger.close()


def _follow(url: str, stop: Any, out: Any) -> None:
    """A projector following the log until told to stop."""
    ledger = Ledger(Settings(database_url=url))
    runs = 0
    try:
        projector = Projector(ledger)
        while True:  # at least one run, and one more after the writers are done
            done = stop.is_set()
            projector.run()
            runs += 1
            if done:
                break
            time.sleep(0.01)
        out.put(("projector", runs))
    finally:
        ledger.close()


def test_eight_processes_hot_account_duplicates_conflicts_and_a_projector(postgres_url):
    items = planned(4_000)
    rng = random.Random(15)
    shares: list[list[dict[str, Any]]] = [items[w::WRITERS] for w in range(WRITERS)]
    for item in rng.sample(items, len(items) // 10):  # resubmitted by another process, same facts
        shares[rng.randrange(WRITERS)].append(dict(item))
    for share in shares:
        rng.shuffle(share)
    conflicts = {c["charge_id"] for c in rng.sample(items, 40)}
    Ledger(Settings(database_url=postgres_url)).close()  # tables exist before processes race
    out, stop = FORK.Queue(), FORK.Event()
    follower = FORK.Process(target=_follow, args=(postgres_url, stop, out))
    follower.start()
    procs = [FORK.Process(target=_writer, args=(postgres_url, s, conflicts, out)) for s in shares]
    for p in procs:
        p.start()
    results = [out.get(timeout=300) for _ in procs]
    stop.set()
    projector_runs = out.get(timeout=60)
    for p in (*procs, follower):
        p.join(timeout=60)
    assert all(r[0] == "ok" for r in results), results
    counts = sum((Counter(r[1]) for r in results), Counter())
    # Every conflicting resubmission was refused (each follows an acknowledged original).
    assert counts["conflict"] == sum(c["charge_id"] in conflicts for share in shares for c in share)
    assert counts["new"] == len(items) and counts["duplicate"] == len(items) // 10
    assert projector_runs[0] == "projector" and projector_runs[1] >= 1
    check_store(postgres_url, items)


# -- a transaction held open while later ones commit ---------------------------------


def held_open(ledger: Ledger, item: dict[str, Any]) -> tuple[threading.Thread, threading.Event]:
    """``item`` recorded by ``ledger`` in a transaction that stays open until the returned event is set."""
    recorded, release = threading.Event(), threading.Event()

    def hold() -> None:
        with ledger.recorder.transaction(commit=True):
            ledger.record_charge(**item)
            recorded.set()
            release.wait(60)

    thread = threading.Thread(target=hold)
    thread.start()
    assert recorded.wait(30)
    return thread, release


def test_a_transaction_held_open_is_neither_skipped_nor_counted_twice(postgres_url):
    writer, holder = (Ledger(Settings(database_url=postgres_url)) for _ in range(2))
    try:
        before = [charge(n, "acme") for n in range(5)]
        for item in before:
            writer.record_charge(**item)
        projector = Projector(writer)
        projector.run()
        held = charge(100, "acme")
        thread, release = held_open(holder, held)
        after = [charge(n, "acme") for n in range(5, 10)]
        for item in after:  # later writers commit while the held one is open
            writer.record_charge(**item)
        projector.run()
        first = projector.position()
        assert _projected_charges(writer) == 10  # the later ones, not the held one
        release.set()
        thread.join(30)
        projector.run()
        assert projector.position() > first
        assert _projected_charges(writer) == 11
        projector.run()
        assert _projected_charges(writer) == 11
    finally:
        writer.close()
        holder.close()
    check_store(postgres_url, [*before, *after, held])


def test_two_writers_racing_with_one_new_id_store_it_once(postgres_url):
    """Both look the id up before either commits: the second one's insert waits on the key, fails when the
    first commits (nothing of its call stored), and its retry answers the first one's receipt."""
    first, second = (Ledger(Settings(database_url=postgres_url)) for _ in range(2))
    engine = sa.create_engine(postgres_url)
    try:
        item = charge(1, "acme")
        holder, release = held_open(first, item)
        receipts: list[Any] = []
        racer = threading.Thread(target=lambda: receipts.append(second.record_charge(**item)))
        racer.start()
        with engine.connect() as watcher:
            wait_until(lambda: watcher.execute(sa.text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'transactionid' AND NOT granted "
                "AND pid IN (SELECT pid FROM pg_stat_activity WHERE datname = current_database())"
            )).scalar(), "the second writer to wait on the first one's key", timeout=30, poll=0.01)
        assert receipts == []
        release.set()
        holder.join(30)
        racer.join(30)
        (receipt,) = receipts
        assert receipt.duplicate and receipt.charge_id == item["charge_id"]
    finally:
        engine.dispose()
        first.close()
        second.close()
    check_store(postgres_url, [item])


def test_writers_do_not_wait_for_the_log_lock(postgres_url):
    """No lock every writer needs is held across COMMIT: with the events table locked, charges are still taken."""
    Ledger(Settings(database_url=postgres_url)).close()
    engine = sa.create_engine(postgres_url)
    done = threading.Event()
    items = [charge(n, HOT) for n in range(20)]

    def record() -> None:
        ledger = Ledger(Settings(database_url=postgres_url))
        try:
            for item in items:
                ledger.record_charge(**item)
            done.set()
        finally:
            ledger.close()

    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("LOCK TABLE ledger_events IN EXCLUSIVE MODE")
            thread = threading.Thread(target=record)
            thread.start()
            assert done.wait(30), "a writer waited for the events table's lock"
        thread.join(30)
    finally:
        engine.dispose()
    check_store(postgres_url, items)


def _projected_charges(ledger: Ledger) -> int:
    with ledger.recorder.transaction(commit=False) as session:
        return int(session.execute(sa.text("SELECT coalesce(sum(charges), 0) FROM daily_billing_records")).scalar())


# -- writers killed at random moments ------------------------------------------------


def _acking_writer(url: str, share: list[dict[str, Any]], acks: str, seed: int) -> None:
    """Record the share (single calls and batches); note each acknowledged id after its receipt."""
    ledger = Ledger(Settings(database_url=url))
    rng = random.Random(seed)
    with open(acks, "a", buffering=1) as log:
        position = 0
        while position < len(share):
            chunk = share[position : position + rng.choice([1, 1, 4, 16, 1, 1, 4, 16, 200])]
            position += len(chunk)
            if len(chunk) == 1:
                ledger.record_charge(**chunk[0])
            else:
                assert all(o.ok for o in ledger.record_charges(chunk))
            log.write("".join(f"{c['charge_id']}\n" for c in chunk))
    ledger.close()
    os._exit(0)


def test_writers_killed_at_random_moments_lose_and_double_nothing(postgres_url, tmp_path: Path):
    """Rounds of 8 writers, SIGKILLed at random and restarted, until 12 kills landed (bounded in time)."""
    seed = int(os.environ.get("REL_KILL_SEED") or random.SystemRandom().randrange(2**32))
    print(f"kill seed: REL_KILL_SEED={seed}")
    rng = random.Random(seed)
    Ledger(Settings(database_url=postgres_url)).close()
    engine = sa.create_engine(postgres_url)
    everything: list[dict[str, Any]] = []
    kills, checked, rounds = 0, 0, 0
    deadline = time.monotonic() + 150
    try:
        while kills < 12 and time.monotonic() < deadline:
            items = planned(3_000, prefix=f"k{rounds}")
            everything += items
            kills, checked = _killing_round(postgres_url, engine, items, tmp_path / f"round-{rounds}", rng,
                                            kills, checked, deadline)
            rounds += 1
    finally:
        engine.dispose()
    assert kills >= 12, f"only {kills} kills in {rounds} rounds before the deadline"
    assert checked > 0
    check_store(postgres_url, everything)


def _killing_round(
    url: str, engine: sa.engine.Engine, items: list[dict[str, Any]], folder: Path, rng: random.Random,
    kills: int, checked: int, deadline: float,
) -> tuple[int, int]:
    """8 writers record ``items`` (10% resubmitted by another writer) while some are killed and restarted."""
    folder.mkdir()
    shares = [items[w::WRITERS] for w in range(WRITERS)]
    for item in rng.sample(items, len(items) // 10):
        shares[rng.randrange(WRITERS)].append(dict(item))
    acks = [str(folder / f"acks-{w}") for w in range(WRITERS)]

    def start(w: int) -> Any:
        process = FORK.Process(target=_acking_writer, args=(url, shares[w], acks[w], rng.random()))
        process.start()
        return process

    procs = [start(w) for w in range(WRITERS)]
    try:
        # Kills start once writers are acknowledging (on a loaded machine they may take a while to
        # start): a victim killed later has acknowledgements to check.
        while not any(_acknowledged(path) for path in acks) and time.monotonic() < deadline:
            time.sleep(0.02)
        while kills < 12 and time.monotonic() < deadline:
            time.sleep(rng.uniform(0.02, 0.25))
            alive = [w for w, p in enumerate(procs) if p.is_alive()]
            if not alive:
                break
            victim = rng.choice(alive)
            os.kill(procs[victim].pid, signal.SIGKILL)
            procs[victim].join(10)
            kills += 1
            # Before it restarts (and submits its whole share again), everything
            # it was told is stored must be: committed in the index, and in the
            # log once sequenced.
            checked += _all_stored(engine, _acknowledged(acks[victim]))
            procs[victim] = start(victim)
        for p in procs:
            p.join(timeout=max(1.0, deadline - time.monotonic() + 60))
            assert p.exitcode == 0, p.exitcode
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
    return kills, checked


def _acknowledged(path: str) -> set[str]:
    try:
        with open(path) as lines:
            return {line.strip() for line in lines if line.endswith("\n")}
    except FileNotFoundError:
        return set()


def _all_stored(engine: sa.engine.Engine, ids: set[str]) -> int:
    """How many of ``ids`` are stored; fails if any acknowledged id is missing."""
    with engine.connect() as connection:
        found = {
            row[0]
            for row in connection.execute(
                sa.text("SELECT charge_id FROM ledger_charge_index WHERE charge_id = ANY(:ids)"), {"ids": list(ids)}
            )
        }
    assert ids <= found, sorted(ids - found)[:10]
    return len(ids)
