"""Reliable delivery under SIGKILL: real consumers (``huey_consumer tests.faults.huey``), real stores.

Each test runs on the SQLite queue with a SQLite ledger and on the Redis
queue (``LEDGER_TEST_JOBS_REDIS_URL``, flushed first) with the PostgreSQL
ledger. Leases are short (``LEDGER_TASK_LEASE_SECONDS``) so a dead
consumer's tasks come back quickly. Nothing is mocked; waiting is polling
with a deadline, never a timed assertion; every trial stops by itself.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

import huey.bin.huey_consumer as huey_consumer_script
import pytest
import redis
import sqlalchemy as sa

from conftest import PG_URL, reset_postgres, wait_until
from faults import FaultPlan
from jobs import aggregate_daily_billing_records, create_charge, huey
from jobs.queue import queue_url as configured_queue_url
from jobs.queue import use_queue
from jobs.redis_queue import ReliableRedisStorage
from jobs.rejected import list_rejected
from ledger import Ledger, Settings
from ledger.store.schema import charge_index
from projections import Projector
from projections.reports import records

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("LEDGER_TEST_JOBS_REDIS_URL", "redis://127.0.0.1:6379/14")
DEADLINE = 120.0
KILLS = 22
WAVE = 232  # charges enqueued before each kill: 22 x 232 = 5,104
ACCOUNTS = [f"acct-{i}" for i in range(7)]


wait_for = partial(wait_until, timeout=DEADLINE, poll=0.02)


class Cluster:
    """Consumers on one ledger and one queue, started and killed by the test."""

    def __init__(self, tmp: Path, database_url: str, queue_url: str, lease: float, **env: str) -> None:
        self.tmp = tmp
        self.database_url = database_url
        self.faults = FaultPlan(tmp / "faults")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
        self.env.update(PYTHONPATH=str(ROOT), LEDGER_DATABASE_URL=database_url, LEDGER_HUEY_URL=queue_url,
                        LEDGER_TASK_LEASE_SECONDS=str(lease), LEDGER_TASK_RETRY_BASE_SECONDS="0.2",
                        LEDGER_JOBS_FAULTS=str(self.faults.directory), **env)
        self.processes: list[subprocess.Popen] = []
        self.ledgers: list[Ledger] = []

    def start(self, *options: str) -> subprocess.Popen:
        """``huey_consumer tests.faults.huey -w 2 -k thread`` with the periodic schedule off."""
        log = open(self.tmp / f"consumer-{len(self.processes)}.log", "w")
        command = [sys.executable, huey_consumer_script.__file__, "tests.faults.huey",
                   "-w", "2", "-k", "thread", "-m", "0.1", "-n", *options]
        process = subprocess.Popen(command, env=self.env, cwd=self.tmp, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(process)
        return process

    def kill(self, process: subprocess.Popen) -> None:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()

    def ledger(self) -> Ledger:
        ledger = Ledger(Settings(database_url=self.database_url))
        self.ledgers.append(ledger)
        return ledger

    def held_by(self, pid: int) -> int:
        """Tasks the consumer with this pid holds right now."""
        storage = huey.storage
        if isinstance(storage, ReliableRedisStorage):
            holds = [h for h in storage.conn.hkeys(storage.holds_key) if f":{pid}:".encode() in h]
            return sum(storage.conn.llen(h) for h in holds)
        return storage.sql("select count(*) from task_hold where queue = ? and consumer like ?",
                           (storage.name, f"%:{pid}:%"), results=True)[0][0]

    def drained(self) -> bool:
        return (huey.pending_count() == 0 and huey.scheduled_count() == 0
                and huey.storage.in_progress_count() == 0)

    def logs(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.tmp.glob("consumer-*.log")))

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        for ledger in self.ledgers:
            ledger.close()


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=[pytest.mark.redis, pytest.mark.postgres])])
def stores(request, tmp_path) -> Iterator[tuple[str, str]]:
    if request.param == "sqlite":
        urls = (f"sqlite:///{tmp_path / 'ledger.db'}", f"sqlite:///{tmp_path / 'queue.db'}")
    else:
        reset_postgres(PG_URL)
        redis.Redis.from_url(REDIS_URL).flushdb()  # our own db number only
        urls = (PG_URL, REDIS_URL)
    use_queue(huey, urls[1])
    try:
        yield urls
    finally:
        use_queue(huey, configured_queue_url())


@pytest.fixture
def cluster_of(stores, tmp_path) -> Iterator[Callable[..., Cluster]]:
    made: list[Cluster] = []

    def make(lease: float, **env: str) -> Cluster:
        made.append(Cluster(tmp_path, *stores, lease=lease, **env))
        return made[-1]

    yield make
    for cluster in made:
        cluster.close()
        print(cluster.logs()[-20000:])  # pytest shows it when the test failed


# -- SIGKILL trials ---------------------------------------------------------------------


class Workload:
    """Charges to enqueue, with what the ledger must hold afterwards."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.recorded: dict[str, tuple[str, int, int]] = {}  # charge id -> (account, prompt, completion)
        self.invalid: set[str] = set()  # task ids
        self.tasks = 0
        self.serial = 0

    def wave(self, count: int) -> list[Any]:
        """``count`` tasks: mostly valid, 1 in 25 invalid, 1 in 20 submitted twice, 1 in 10 seed-style."""
        made: list[Any] = []
        while len(made) < count:
            self.serial += 1
            n, rng = self.serial, self.rng
            prompt, completion = rng.randrange(0, 500), rng.randrange(0, 200)
            if n % 25 == 0:
                task = create_charge.s(account_id=rng.choice(ACCOUNTS), charge_type="lunch",
                                       prompt_tokens=prompt, charge_id=f"bad-{n}")
                self.invalid.add(task.id)
                made.append(task)
            elif n % 10 == 0:  # the seed's call: the task id is the charge id
                task = create_charge.s(user_profile_id=n % 3, charge_type="usage",
                                       prompt_tokens=prompt, completion_tokens=completion)
                self.recorded[task.id] = (f"profile-{n % 3}", prompt, completion)
                made.append(task)
            else:
                fields = dict(account_id=rng.choice(ACCOUNTS), user_id=f"u{n % 4}", charge_type="completion",
                              provider="openai", model="gpt-4o", prompt_tokens=prompt,
                              completion_tokens=completion, charge_id=f"c-{n}",
                              occurred_at="2026-05-01T12:00:00+00:00")
                self.recorded[fields["charge_id"]] = (fields["account_id"], prompt, completion)
                copies = 2 if n % 20 == 3 else 1  # a client retry: a second task, the same charge
                made.extend(create_charge.s(**fields) for _ in range(copies))
        self.tasks += len(made)
        return made

    def totals(self) -> dict[str, tuple[int, int, int]]:
        sums: dict[str, list[int]] = {}
        for account, prompt, completion in self.recorded.values():
            row = sums.setdefault(account, [0, 0, 0])
            row[0] += 1
            row[1] += prompt
            row[2] += completion
        return {account: (c, p, q) for account, (c, p, q) in sums.items()}


def _index_size(ledger: Ledger) -> int:
    engine = ledger.recorder.datastore.engine
    with engine.connect() as connection:
        count = connection.execute(sa.select(sa.func.count()).select_from(charge_index)).scalar_one()
        connection.rollback()
    return int(count)


def test_consumers_killed_at_random_lose_nothing_and_count_nothing_twice(cluster_of):
    seed = random.randrange(1 << 30)
    print(f"seed {seed}")
    rng = random.Random(seed)
    cluster = cluster_of(lease=1.0, LEDGER_TASK_BATCH_SIZE="25")
    workload = Workload(seed)
    ledger = cluster.ledger()
    live = [cluster.start(), cluster.start()]

    kills_holding = 0
    for _ in range(KILLS):
        tasks = workload.wave(WAVE)
        huey.storage.enqueue_many([huey.serialize_task(task) for task in tasks[1:]])
        huey.enqueue(tasks[0])  # and one through Huey's own enqueue
        time.sleep(rng.uniform(0.0, 0.2))
        # A random moment, preferably while the victim holds tasks (bounded wait).
        end = time.monotonic() + 4.0
        victim = None
        while victim is None and time.monotonic() < end:
            holding = [p for p in live if cluster.held_by(p.pid)]
            victim = rng.choice(holding) if holding else None
            time.sleep(0.005)
        kills_holding += victim is not None
        victim = victim or rng.choice(live)
        cluster.kill(victim)
        live[live.index(victim)] = cluster.start()

    expected = workload.totals()
    # Nothing queued, scheduled or held: every task reached a durable outcome.
    wait_for(cluster.drained, "the queue to drain after the kills")
    print(f"{workload.tasks} tasks, {KILLS} kills, {kills_holding} while the victim held tasks")

    assert workload.tasks >= 5000 and kills_holding >= 1
    assert _index_size(ledger) == len(workload.recorded)  # nothing lost, no stray charge
    for account, (charges, prompt, completion) in expected.items():
        totals = ledger.account_totals(account)
        assert (totals.charges, totals.prompt_tokens, totals.completion_tokens) == (charges, prompt, completion)
    missing = [cid for cid, (account, _, _) in workload.recorded.items()
               if ledger.store.find_charge(account, cid) is None]
    assert missing == []
    kept = list_rejected(ledger)
    assert Counter(k.task_id for k in kept) == Counter(workload.invalid)  # each invalid charge exactly once
    assert all(set(k.errors) == {"charge_type"} for k in kept)


# -- the aggregation lock ---------------------------------------------------------------


def test_a_worker_killed_holding_the_aggregation_lock_is_relieved_within_its_lease(cluster_of):
    cluster = cluster_of(lease=1.5, LEDGER_PROJECTOR_BATCH_SIZE="50")
    ledger = cluster.ledger()
    ledger.record_charges(
        dict(account_id=ACCOUNTS[i % 3], user_id=f"u{i % 2}", charge_id=f"agg-{i}", charge_type="tool",
             prompt_tokens=i % 13, completion_tokens=i % 5, occurred_at="2026-05-02T08:00:00+00:00")
        for i in range(300)
    )
    end = ledger.recorder.max_notification_id()
    cluster.faults.write(cluster.faults.directory,
                         {"aggregate": [{"pause": 120, "after_batches": 2, "marker": "paused"}]})
    doomed = cluster.start()
    run = aggregate_daily_billing_records()
    wait_for(lambda: (cluster.faults.directory / "paused").exists(), "the aggregation to pause holding the lock")
    cluster.kill(doomed)
    assert Projector(ledger).position() == 50  # batch 1 committed, batch 2 never will

    later = aggregate_daily_billing_records()  # the next run, enqueued while the dead worker's lock stands
    cluster.start()  # no -f: nothing flushes the lock, its lease runs out
    summaries = [run.get(blocking=True, timeout=DEADLINE), later.get(blocking=True, timeout=DEADLINE)]

    assert sum(s["projected"] for s in summaries) == end - 50  # every event projected exactly once
    assert [s["position"] for s in summaries] == [end, end]
    attempts = [a for a in cluster.faults.attempts() if a.get("task_id") == run.id and a["event"] == "attempt"]
    assert len(attempts) >= 2  # the killed run was taken again from the dead worker's hold
    rows = {row["account_id"]: row for row in records(ledger, group_by=["account"])}
    for account in ACCOUNTS[:3]:
        totals = ledger.account_totals(account)
        assert (rows[account]["charges"], rows[account]["prompt_tokens"], rows[account]["total_tokens"]) == (
            totals.charges, totals.prompt_tokens, totals.total_tokens)
    wait_for(cluster.drained, "nothing left held")
    assert not huey.is_locked("aggregate-daily-billing")


# -- a slow consumer keeps its tasks ----------------------------------------------------


def test_a_slow_but_alive_consumer_keeps_its_tasks_while_its_heartbeat_is_fresh(cluster_of):
    lease = 1.0
    cluster = cluster_of(lease=lease)
    ledger = cluster.ledger()
    cluster.faults.write(cluster.faults.directory,
                         {"create_charge": [{"pause": 5 * lease, "marker": "paused"}]})
    cluster.start()
    result = create_charge.delay(account_id="acme", charge_id="slow-1", charge_type="usage", prompt_tokens=9)
    wait_for(lambda: (cluster.faults.directory / "paused").exists(), "the slow attempt to start")
    cluster.start()  # a second consumer, recovering expired holds every heartbeat meanwhile

    wait_for(lambda: ledger.store.find_charge("acme", "slow-1"), "the slow charge to be recorded")
    wait_for(cluster.drained, "nothing left held")
    attempts = [a for a in cluster.faults.attempts() if a.get("task_id") == result.id and a["event"] == "attempt"]
    assert len(attempts) == 1  # never taken from its live consumer, never run twice
    assert ledger.account_totals("acme").charges == 1
