"""Real crashes on PostgreSQL: projector and compaction processes die by SIGKILL while writers record.

Each trial forks writer processes (hot and cold accounts, 10% duplicate
submissions, a few reversals), a projector process and a compaction process
(projecting first, then compacting with no grace, so it prunes what was just projected). Both are killed with
SIGKILL: in half the trials by the test at a random moment, in the other half
by themselves at a random point inside a transaction (just before a
projector batch commits; after a random step of compaction's account
transaction). Then a "restart" - a new process - projects, compacts and
audits: totals exact, live records equal the model, audit clean. The database
carries over from trial to trial, so later trials run on compacted history.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import time
from collections import Counter
from datetime import date, timedelta
from typing import Any

import pytest

from ledger import AlreadyReversed, Ledger, Settings, Totals
from ledger.compaction import compact
from projections import Projector, audit
from rel_model import Observer, VALUES, unpriced_sums

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

TRIALS = int(os.environ.get("REL_CRASH_TRIALS", "50"))
WRITERS = 2
CHARGES_PER_WRITER = 120
ACCOUNTS = ["hot"] * 4 + [f"cold-{i}" for i in range(6)]
STEPS = ["rolled_up", "saved", "snapshotted", "pruned"]
BEFORE = date(2026, 1, 6)
FORK = mp.get_context("fork")


def plan(trial: int, writer: int) -> list[dict[str, Any]]:
    """A writer's charges: unique ids per trial and writer, closed days only."""
    rng = random.Random(trial * 100 + writer)
    return [
        dict(charge_id=f"t{trial}-w{writer}-{n}", account_id=rng.choice(ACCOUNTS), user_id=f"u{n % 3}",
             charge_type=("completion", "tool")[n % 2], provider=(None, "openai")[n % 2],
             model="m1", prompt_tokens=rng.randint(0, 100), completion_tokens=rng.randint(0, 50),
             occurred_at=f"2026-01-0{1 + rng.randrange(5)}T{rng.randrange(24):02d}:00:00Z")
        for n in range(CHARGES_PER_WRITER)
    ]


def _writer(url: str, trial: int, writer: int, out: Any) -> None:
    """Record the plan, resubmitting 10% of it, and reverse every 20th charge."""
    rng = random.Random(trial * 1000 + writer)
    ledger = Ledger(Settings(database_url=url))
    try:
        charges = plan(trial, writer)
        submissions = charges + rng.sample(charges, len(charges) // 10)
        position = 0
        while position < len(submissions):
            size = rng.choice([1, 1, 5, 10])
            chunk = submissions[position : position + size]
            position += size
            if size == 1:
                ledger.record_charge(**chunk[0])
            else:
                assert all(o.ok for o in ledger.record_charges(chunk))
        for item in charges[::20]:
            try:
                ledger.reverse_charge(item["charge_id"], "crash test")
            except AlreadyReversed:  # a rerun after this writer was killed
                pass
        out.put(("ok", writer))
    except BaseException as exc:  # reported to the parent, which fails the test
        out.put(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        ledger.close()


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _projector(url: str, seed: int, self_kill: bool, flag: Any) -> None:
    """Project forever in small random batches; optionally die just before the Nth commit."""
    rng = random.Random(seed)
    ledger = Ledger(Settings(database_url=url))
    kill_at = rng.randint(1, 20) if self_kill else None
    batches = [0]

    def before_commit(position: int) -> None:
        batches[0] += 1
        if batches[0] == kill_at:
            flag.value = batches[0]  # died inside its Nth batch transaction
            _die()

    while True:
        Projector(ledger, batch_size=rng.randint(5, 80), before_commit=before_commit).run()
        time.sleep(0.002)


def _compactor(url: str, seed: int, self_kill: bool, flag: Any) -> None:
    """Project and compact forever with no grace; optionally die after a random step of a random account."""
    rng = random.Random(seed)
    ledger = Ledger(Settings(database_url=url))
    step, nth = rng.choice(STEPS), rng.randint(0, 3)
    seen = Counter()

    def on_step(at: str, _aggregate_id: Any) -> None:
        if self_kill and at == step:
            seen[at] += 1
            if seen[at] > nth:
                flag.value = STEPS.index(at) + 1  # died after this step, before its commit
                _die()

    while True:  # as the daily job does: project, then compact what is projected
        projector = Projector(ledger, batch_size=rng.randint(20, 200))
        projector.run()
        position = projector.position()
        compact(ledger, before=BEFORE, projected_position=position, grace=timedelta(0), on_step=on_step)
        time.sleep(0.005)


def expected_totals(trials: int) -> dict[str, Totals]:
    totals: dict[str, Totals] = {}
    for trial in range(trials):
        for writer in range(WRITERS):
            charges = plan(trial, writer)
            reversed_ids = {c["charge_id"] for c in charges[::20]}
            for c in charges:
                if c["charge_id"] in reversed_ids:
                    continue
                p, q = c["prompt_tokens"], c["completion_tokens"]
                totals[c["account_id"]] = totals.get(c["account_id"], Totals()) + Totals.of_unpriced(1, p, q, p + q)
    return totals


def run_trial(url: str, trial: int, rng: random.Random) -> dict[str, Any]:
    self_kill = trial % 2 == 1
    out = FORK.Queue()
    writers = [FORK.Process(target=_writer, args=(url, trial, w, out)) for w in range(WRITERS)]
    flags = {"projector": FORK.Value("i", 0), "compactor": FORK.Value("i", 0)}
    projector = FORK.Process(target=_projector, args=(url, rng.randrange(2**32), self_kill, flags["projector"]))
    compactor = FORK.Process(target=_compactor, args=(url, rng.randrange(2**32), self_kill, flags["compactor"]))
    started = time.monotonic()
    for process in (*writers, projector, compactor):
        process.start()
    kills = {}
    if not self_kill:  # the test kills each (and a writer) at its own random moment
        victims = {"projector": projector, "compactor": compactor, "writer": writers[0]}
        for name, process in sorted(victims.items(), key=lambda _: rng.random()):
            time.sleep(rng.uniform(0.02, 0.4))
            os.kill(process.pid, signal.SIGKILL)
            kills[name] = round(time.monotonic() - started, 3)
    for process in writers:
        process.join(timeout=120)
    for process in (projector, compactor):  # a self-killer that never reached its point dies now
        if process.is_alive():
            os.kill(process.pid, signal.SIGKILL)
        process.join(timeout=30)
    assert projector.exitcode == compactor.exitcode == -signal.SIGKILL
    finished = {w for w, process in enumerate(writers) if process.exitcode == 0}
    if writers[0].exitcode != 0:  # the killed writer's process restarts and submits its plan again
        assert writers[0].exitcode == -signal.SIGKILL
        again = FORK.Process(target=_writer, args=(url, trial, 0, out))
        again.start()
        again.join(timeout=120)
        assert again.exitcode == 0
        finished.add(0)
        kills["writer"] = f"{kills['writer']} (mid-plan; rerun)"
    # Each finished writer reported "ok" (a writer killed just after reporting
    # may have reported twice: once before its kill, once from its rerun).
    reported: set[int] = set()
    while not finished <= reported:
        message = out.get(timeout=10)
        assert message[0] == "ok", message
        reported.add(message[1])
    if self_kill:
        kills = {
            "projector": f"in batch {flags['projector'].value}" if flags["projector"].value else "at the end",
            "compactor": f"after {STEPS[flags['compactor'].value - 1]}" if flags["compactor"].value
            else "at the end",
        }
    return {"self_kill": self_kill, "kills": kills}


def restart_and_check(url: str, trials_done: int) -> None:
    """A new process: project to the end, compact, audit; everything exact."""
    ledger = Ledger(Settings(database_url=url))
    try:
        projector = Projector(ledger)
        projector.run()
        compact(ledger, before=BEFORE, projected_position=projector.position(), grace=timedelta(0))
        result = audit(ledger)
        assert result.clean, result.to_dict()
        expected = expected_totals(trials_done)
        for account_id, totals in expected.items():
            assert ledger.account_totals(account_id) == totals, account_id
        sums = {name: sum(getattr(t, name) for t in expected.values()) for name in VALUES}
        assert result.conservation.records == unpriced_sums(sums)
        live = Observer(ledger).live()
        assert {name: sum(f[i] for f in live.values()) for i, name in enumerate(VALUES)} == sums
    finally:
        ledger.close()


def test_projector_and_compaction_killed_while_writers_record(postgres_url: str) -> None:
    seed = int(os.environ.get("REL_CRASH_SEED") or random.SystemRandom().randrange(2**32))
    print(f"crash seed: REL_CRASH_SEED={seed} ({TRIALS} trials)")
    rng = random.Random(seed)
    Ledger(Settings(database_url=postgres_url)).close()  # tables exist before processes race
    for trial in range(TRIALS):
        outcome = run_trial(postgres_url, trial, rng)
        print(f"trial {trial}: {outcome}")
        restart_and_check(postgres_url, trial + 1)
