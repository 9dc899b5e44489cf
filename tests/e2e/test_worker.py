"""``jobs.worker.run_worker`` end to end: a worker process, SIGTERM, stale locks, the banner.

The worker runs in a subprocess on a SQLite ledger and a SQLite queue (the
embedded default), exactly as ``ledger worker`` starts it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any, Iterator

import pytest
import redis

from jobs import aggregate_daily_billing_records, create_charge, huey
from jobs.queue import DEFAULT_QUEUE_FILE, queue_url, use_queue
from jobs.tasks import AGGREGATION_LOCK, aggregation_lock
from ledger import Ledger, Settings
from projections import Projector
from projections.reports import records
from conftest import wait_until
from faults import FaultPlan

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 45.0


wait_for = partial(wait_until, timeout=DEADLINE)


class Worker:
    """Start ``run_worker(...)`` processes on one temporary ledger and queue."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.faults = FaultPlan(tmp / "faults")
        self.database_url = f"sqlite:///{tmp / 'ledger.db'}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
        # No LEDGER_HUEY_URL: the queue is the default file beside the ledger.
        self.env.update(PYTHONPATH=str(ROOT), LEDGER_DATABASE_URL=self.database_url,
                        LEDGER_JOBS_FAULTS=str(self.faults.directory),
                        LEDGER_TASK_RETRY_BASE_SECONDS="0.3", LEDGER_PROJECTOR_BATCH_SIZE="50")
        self.processes: list[subprocess.Popen] = []
        self.ledgers: list[Ledger] = []

    def start(self, **options: Any) -> subprocess.Popen:
        options.setdefault("max_delay", 0.2)
        arguments = ", ".join(f"{k}={v!r}" for k, v in options.items())
        code = ("from tests.faults import install_from_environment; install_from_environment(); "
                f"from jobs.worker import run_worker; run_worker({arguments})")
        log = open(self.tmp / f"worker-{len(self.processes)}.log", "w")
        process = subprocess.Popen([sys.executable, "-c", code], env=self.env, cwd=self.tmp,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(process)
        return process

    def start_command(self, *arguments: str) -> subprocess.Popen:
        """``ledger worker ...``, the command line's way in."""
        log = open(self.tmp / f"worker-{len(self.processes)}.log", "w")
        process = subprocess.Popen([sys.executable, "-m", "ledger_service.cli", "worker", *arguments],
                                   env=self.env, cwd=self.tmp, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(process)
        return process

    def ledger(self) -> Ledger:
        ledger = Ledger(Settings(database_url=self.database_url))
        self.ledgers.append(ledger)
        return ledger

    def logs(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.tmp.glob("worker-*.log")))

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        for ledger in self.ledgers:
            ledger.close()


@pytest.fixture
def worker(tmp_path) -> Iterator[Worker]:
    use_queue(huey, f"sqlite:///{tmp_path / DEFAULT_QUEUE_FILE}")
    rig = Worker(tmp_path)
    try:
        yield rig
    finally:
        rig.close()
        use_queue(huey, queue_url())  # as configured again
        print(rig.logs())


def test_sigterm_lets_a_running_charge_finish_before_the_worker_exits(worker):
    worker.faults.write(worker.faults.directory, {"create_charge": [{"pause": 0.5, "marker": "paused"}]})
    process = worker.start()
    ledger = worker.ledger()

    result = create_charge.delay(user_profile_id=123, charge_type="usage", prompt_tokens=100, completion_tokens=50)
    wait_for(lambda: (worker.faults.directory / "paused").exists(), "the task to start")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=DEADLINE) == 0

    # Graceful: the task finished before the exit; nothing is left on the queue.
    assert ledger.store.find_charge("profile-123", result.id) is not None
    assert huey.pending_count() == 0 and huey.scheduled_count() == 0
    assert "All workers have stopped" in worker.logs()


def test_an_aggregation_interrupted_at_the_shutdown_timeout_is_requeued_and_completed(worker):
    ledger = worker.ledger()
    ledger.record_charges(
        dict(account_id=f"a{i % 4}", charge_id=f"c{i}", charge_type="plugin", prompt_tokens=i,
             occurred_at="2026-05-01T23:30:00+00:00")
        for i in range(200)
    )
    end = ledger.recorder.max_notification_id()
    worker.faults.write(worker.faults.directory,
                        {"aggregate": [{"pause": 120, "after_batches": 2, "marker": "paused"}]})
    process = worker.start(shutdown_timeout=0.3)

    run = aggregate_daily_billing_records()
    wait_for(lambda: (worker.faults.directory / "paused").exists(), "the aggregation to pause")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=DEADLINE) == 0

    assert [task.id for task in huey.scheduled()] == [run.id]  # back on the queue
    assert not huey.is_locked(AGGREGATION_LOCK)  # released for the interrupted thread
    assert Projector(ledger).position() == 50  # batch 1 committed, batch 2 never did

    aggregation_lock.acquire()  # and should a lock be left behind (SIGKILL), the start flushes it
    worker.start()
    summary = run.get(blocking=True, timeout=DEADLINE)
    assert summary["projected"] == end - 50 and summary["position"] == end
    rows = records(ledger, group_by=["account"])
    assert sum(r["prompt_tokens"] for r in rows) == sum(range(200))
    for row in rows:
        assert row["prompt_tokens"] == ledger.account_totals(row["account_id"]).prompt_tokens


def test_the_banner_says_where_the_queue_lives_and_when_the_daily_job_runs(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env.update(PYTHONPATH=str(ROOT), LEDGER_DATABASE_URL=f"sqlite:///{tmp_path / 'db' / 'ledger.db'}",
               LEDGER_BILLING_TZ="America/New_York", LEDGER_AGGREGATE_SCHEDULE="15 0 * * *")
    done = subprocess.run([sys.executable, "-c", "from jobs.worker import banner; print(banner())"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"SQLite file {tmp_path / 'db' / DEFAULT_QUEUE_FILE}" in done.stdout
    assert "'15 0 * * *' in America/New_York, next " in done.stdout
    assert "T00:15:00-0" in done.stdout  # 00:15 local, EST or EDT


def test_ledger_worker_prints_where_its_queue_lives_records_and_stops_on_sigterm(worker):
    process = worker.start_command("--workers", "2")
    ledger = worker.ledger()

    result = create_charge.delay(user_profile_id=7, charge_type="completion", prompt_tokens=1)
    wait_for(lambda: ledger.store.find_charge("profile-7", result.id), "the charge to be recorded")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=DEADLINE) == 0

    logs = worker.logs()
    assert f"SQLite file {worker.tmp / DEFAULT_QUEUE_FILE}" in logs
    assert "Huey consumer started with 2 thread" in logs and "Periodic tasks are enabled" in logs
    assert "All workers have stopped" in logs  # SIGTERM was the graceful signal


@pytest.mark.redis
def test_ledger_worker_warns_at_start_when_its_redis_keeps_nothing_on_disk(tmp_path):
    redis_url = os.environ.get("LEDGER_TEST_JOBS_REDIS_URL", "redis://127.0.0.1:6379/14")
    server = redis.Redis.from_url(redis_url, decode_responses=True)
    appendonly, save = server.config_get("appendonly")["appendonly"], server.config_get("save")["save"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env.update(PYTHONPATH=str(ROOT), LEDGER_DATABASE_URL=f"sqlite:///{tmp_path / 'ledger.db'}",
               LEDGER_HUEY_URL=redis_url)
    log = tmp_path / "worker.log"
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "ledger_service.cli", "worker", "--no-periodic"], env=env,
                                   cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: "Huey consumer started" in log.read_text(), "the worker to start")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=DEADLINE)
    text = log.read_text()
    if appendonly == "yes":
        assert "WARNING: Redis" not in text
    elif not save.strip():
        assert "WARNING: Redis keeps NOTHING on disk (appendonly no, save '')" in text
    else:
        assert "WARNING: Redis keeps only RDB snapshots" in text
    if "WARNING" in text:
        assert text.index("WARNING") < text.index("Huey consumer started")  # said at start
