"""The jobs against a real consumer: ``huey_consumer tests.faults.huey -w 2 -k thread`` in a subprocess.

Each test runs twice: SqliteHuey with a SQLite ledger (the embedded default),
and RedisHuey (db 14, flushed first) with the PostgreSQL ledger. Faults come
from ``tests/faults.py`` (a plan file the consumer reads; ``tests.faults.huey``
is the jobs' Huey with that plan installed through the jobs' hooks); nothing is mocked.
Waiting is polling with a generous deadline, never a timed assertion.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Iterator

import huey.bin.huey_consumer as huey_consumer_script
import pytest
import redis
from huey.exceptions import TaskException

from jobs import aggregate_charges, aggregate_daily_billing_records, create_charge, huey
from jobs.queue import queue_url as configured_queue_url
from jobs.queue import use_queue
from jobs.rejected import list_rejected, resubmit
from jobs.tasks import AGGREGATION_LOCK
from ledger import Ledger, Settings
from projections import Projector
from projections.reports import records
from conftest import PG_URL, reset_postgres, wait_until
from faults import FaultPlan

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("LEDGER_TEST_JOBS_REDIS_URL", "redis://127.0.0.1:6379/14")
DEADLINE = 45.0
RETRY_BASE = 0.3


wait_for = partial(wait_until, timeout=DEADLINE)


class Rig:
    """A ledger database, a queue, a fault directory, and the consumers started on them."""

    def __init__(self, tmp: Path, database_url: str, queue_url: str) -> None:
        self.tmp = tmp
        self.database_url = database_url
        self.queue_url = queue_url
        self.faults = FaultPlan(tmp / "faults")
        self.consumers: list[subprocess.Popen] = []
        self._ledgers: list[Ledger] = []
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
        self.env.update(
            PYTHONPATH=str(ROOT),
            LEDGER_DATABASE_URL=database_url,
            LEDGER_HUEY_URL=queue_url,
            LEDGER_JOBS_FAULTS=str(self.faults.directory),
            LEDGER_TASK_RETRY_BASE_SECONDS=str(RETRY_BASE),
            LEDGER_PROJECTOR_BATCH_SIZE="50",
            LEDGER_BUDGET_CHECK_SECONDS="0",  # only the tasks each test counts
        )

    def start(self, *options: str) -> subprocess.Popen:
        """``huey_consumer tests.faults.huey -w 2 -k thread`` (polling the queue at least every 0.2 s)."""
        log = open(self.tmp / f"consumer-{len(self.consumers)}.log", "w")
        command = [sys.executable, huey_consumer_script.__file__, "tests.faults.huey",
                   "-w", "2", "-k", "thread", "-m", "0.2", *options]
        process = subprocess.Popen(command, env=self.env, cwd=self.tmp, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        self.consumers.append(process)
        return process

    def logs(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.tmp.glob("consumer-*.log")))

    def ledger(self) -> Ledger:
        ledger = Ledger(Settings(database_url=self.database_url))
        self._ledgers.append(ledger)
        return ledger

    def attempts(self, task_id: str | None = None, event: str | None = None) -> list[dict]:
        return [a for a in self.faults.attempts()
                if (task_id is None or a.get("task_id") == task_id)
                and (event is None or a.get("event") == event)]

    def idle(self) -> bool:
        """Nothing queued, scheduled or locked: every task reached its end."""
        return (huey.pending_count() == 0 and huey.scheduled_count() == 0
                and not huey.is_locked(AGGREGATION_LOCK))

    def close(self) -> None:
        for process in self.consumers:
            if process.poll() is None:
                process.kill()  # the test is over: nothing left to finish
                process.wait()
        for ledger in self._ledgers:
            ledger.close()


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=[pytest.mark.redis, pytest.mark.postgres])])
def rig(request, tmp_path) -> Iterator[Rig]:
    if request.param == "sqlite":
        database_url = f"sqlite:///{tmp_path / 'ledger.db'}"
        queue_url = f"sqlite:///{tmp_path / 'queue.db'}"
    else:
        reset_postgres(PG_URL)
        database_url = PG_URL
        queue_url = REDIS_URL
        redis.Redis.from_url(REDIS_URL).flushdb()  # our own db number only
    use_queue(huey, queue_url)
    rig = Rig(tmp_path, database_url, queue_url)
    try:
        yield rig
    finally:
        rig.close()
        use_queue(huey, configured_queue_url())  # as configured again
        print(rig.logs())  # pytest shows it when the test failed


def _exact(ledger: Ledger, accounts: list[str]) -> None:
    """Daily billing records sum to the ledger's own totals, account by account."""
    rows = records(ledger, group_by=["account"])
    by_account = {row["account_id"]: row for row in rows}
    assert sorted(by_account) == sorted(accounts)
    for account in accounts:
        totals = ledger.account_totals(account)
        row = by_account[account]
        assert (row["charges"], row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (
            totals.charges, totals.prompt_tokens, totals.completion_tokens, totals.total_tokens
        )


def _record_directly(ledger: Ledger, count: int, accounts: list[str]) -> None:
    ledger.record_charges(
        dict(account_id=accounts[i % len(accounts)], user_id=f"u{i % 3}", charge_id=f"direct-{i}",
             charge_type="completion", prompt_tokens=i % 17, completion_tokens=i % 5,
             occurred_at=f"2026-05-0{1 + i % 3}T12:00:00+00:00")
        for i in range(count)
    )


def test_seed_examples_work_verbatim_and_an_enqueued_charge_is_recorded_once(rig):
    rig.start()
    ledger = rig.ledger()

    # The seed's documented calls, as written.
    result = create_charge.delay(user_profile_id=123, charge_type="usage", prompt_tokens=100, completion_tokens=50)
    # Calling the task enqueues too; a client retry with the same charge id counts once.
    again = [create_charge(account_id="acme", charge_id="call-1", charge_type="completion",
                           provider="openai", model="gpt-4o", prompt_tokens=10, completion_tokens=5,
                           occurred_at="2026-05-01T12:00:00Z") for _ in range(2)]
    assert result.id != again[0].id
    wait_for(lambda: ledger.store.find_charge("profile-123", result.id) and ledger.store.find_charge("acme", "call-1"),
             "both charges to be recorded")

    aggregate_charges.delay()
    run = aggregate_daily_billing_records.delay()
    summary = run.get(blocking=True, timeout=DEADLINE)
    assert set(summary) == {"projected", "position", "compaction"}
    wait_for(rig.idle, "both aggregations to finish")

    assert ledger.account_totals("profile-123").total_tokens == 150
    assert ledger.account_totals("acme").charges == 1
    _exact(ledger, ["acme", "profile-123"])
    [seed_row] = records(ledger, account_id="profile-123")
    assert (seed_row["user_id"], seed_row["charge_type"], seed_row["prompt_tokens"]) == ("123", "usage", 100)
    assert list_rejected(ledger) == []


def test_a_transient_fault_twice_is_retried_with_growing_delays_and_recorded_once(rig):
    rig.faults.write(rig.faults.directory, {"create_charge": [{"raise": "operational"}, {"raise": "busy"}]})
    rig.start()
    ledger = rig.ledger()

    result = create_charge.delay(account_id="acme", charge_type="completion", prompt_tokens=7, completion_tokens=3)
    wait_for(lambda: ledger.store.find_charge("acme", result.id), "the charge to be recorded")
    wait_for(rig.idle, "the task to finish")

    tries = rig.attempts(result.id, "attempt")
    retries = rig.attempts(result.id, "retry")
    assert len(tries) == 3
    delays = [r["delay"] for r in retries]
    assert delays == [RETRY_BASE, 2 * RETRY_BASE]  # exponential: base, then twice the base
    for before, after, delay in zip(tries, tries[1:], delays):
        assert after["at"] - before["at"] >= delay  # no retry ran before its delay
    budget = tries[0]["retries"]
    assert [t["retries"] for t in tries] == [budget, budget - 1, budget - 2]  # one spent per retry
    assert ledger.account_totals("acme").charges == 1
    assert ledger.account_totals("acme").total_tokens == 10
    assert list_rejected(ledger) == []


def test_an_invalid_charge_lands_in_the_rejected_store_after_one_attempt(rig):
    rig.start()
    ledger = rig.ledger()

    result = create_charge.delay(account_id="acme", charge_type="lunch", prompt_tokens=-1)
    with pytest.raises(TaskException) as caught:
        result.get(blocking=True, timeout=DEADLINE)
    assert "invalid charge" in str(caught.value) and "rejected charge #" in str(caught.value)
    wait_for(rig.idle, "nothing left to retry")

    assert len(rig.attempts(result.id, "attempt")) == 1
    [kept] = list_rejected(ledger)
    assert kept.task_id == result.id
    assert set(kept.errors) == {"charge_type", "prompt_tokens"}
    assert kept.payload["charge_id"] == result.id  # fixed before the first attempt
    assert kept.payload["occurred_at"].endswith("+00:00")

    receipt = resubmit(ledger, kept.id, {"charge_type": "completion", "prompt_tokens": 1})
    assert receipt.charge_id == result.id
    assert ledger.account_totals("acme").charges == 1
    assert list_rejected(ledger) == []


def test_two_aggregation_runs_started_together_give_exact_totals(rig):
    accounts = ["acme", "globex", "initech"]
    ledger = rig.ledger()
    _record_directly(ledger, 240, accounts)
    # One of the runs pauses inside its first batch, holding the lock meanwhile.
    rig.faults.write(rig.faults.directory, {"aggregate": [{"pause": 1.5, "after_batches": 1, "marker": "paused"}]})
    rig.start()

    # The second run is enqueued while the first holds the lock (enqueued together,
    # one worker could take both in one batch and run them one after the other).
    first = aggregate_daily_billing_records()
    wait_for(lambda: (rig.faults.directory / "paused").exists(), "the first run to hold the lock")
    second = aggregate_daily_billing_records()
    summaries = [first.get(blocking=True, timeout=DEADLINE), second.get(blocking=True, timeout=DEADLINE)]

    end = ledger.recorder.max_notification_id()
    assert sum(s["projected"] for s in summaries) == end  # every event projected by exactly one run
    assert [s["position"] for s in summaries] == [end, end]
    assert rig.attempts(event="TaskLockedException"), "the runs were meant to overlap"
    _exact(ledger, accounts)


def test_a_consumer_killed_mid_aggregation_and_restarted_gives_exact_totals(rig):
    accounts = ["acme", "globex"]
    ledger = rig.ledger()
    _record_directly(ledger, 300, accounts)
    end = ledger.recorder.max_notification_id()
    rig.faults.write(rig.faults.directory,
                     {"aggregate": [{"pause": 120, "after_batches": 3, "marker": "paused"}]})
    doomed = rig.start()

    aggregate_daily_billing_records()
    wait_for(lambda: (rig.faults.directory / "paused").exists(), "the aggregation to reach batch 3")
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.wait()

    assert Projector(ledger).position() == 100  # two batches of 50 committed, the third rolled back
    assert huey.is_locked(AGGREGATION_LOCK)  # SIGKILL left the lock behind (until its lease runs out)...
    assert huey.pending_count() == 0 and huey.storage.in_progress_count() == 1  # ...and its task, held

    rig.start("-f")  # flush stale locks at start, as ledger worker does
    summary = aggregate_daily_billing_records().get(blocking=True, timeout=DEADLINE)
    assert summary["projected"] == end - 100 and summary["position"] == end
    _exact(ledger, accounts)


def test_a_task_interrupted_by_sigterm_goes_back_on_the_queue(rig):
    rig.faults.write(rig.faults.directory, {"create_charge": [{"pause": 120, "marker": "paused"}]})
    interrupted = rig.start()  # huey_consumer's default: SIGTERM interrupts running tasks
    ledger = rig.ledger()

    result = create_charge.delay(account_id="acme", charge_type="tool", prompt_tokens=3)
    wait_for(lambda: (rig.faults.directory / "paused").exists(), "the task to start")
    interrupted.send_signal(signal.SIGTERM)
    assert interrupted.wait(timeout=DEADLINE) == 0

    assert [task.id for task in huey.scheduled()] == [result.id]  # back, due again shortly
    assert ledger.store.find_charge("acme", result.id) is None

    rig.start()
    wait_for(lambda: ledger.store.find_charge("acme", result.id), "the re-queued charge to be recorded")
    wait_for(rig.idle, "the queue to drain")
    assert len(rig.attempts(result.id, "attempt")) == 2
    assert ledger.account_totals("acme").charges == 1
