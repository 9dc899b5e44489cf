"""The task path: a backlog of ``create_charge`` tasks drained by a worker, against ``record_charges``.

A ``ledger worker`` process (2 threads, batches of ``LEDGER_TASK_BATCH_SIZE``,
reliable delivery on) runs on a fresh store and queue: SQLite ledger with
the SQLite queue file beside it, or PostgreSQL with Redis
(``LEDGER_BENCH_REDIS_URL``, default ``redis://127.0.0.1:6379/9``; the
benchmark deletes the ledger queue's keys there, nothing else). The whole
backlog is enqueued at once and the clock runs from the start of that
enqueue until nothing is queued or held. On the same store, in the same
scenario, ``record_charges`` records the same number of charges
(``batch_size`` per call) in two halves, one before and one after the
drain, so drift in the machine's speed hits both sides alike.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import sqlalchemy as sa

from bench.checks import check_recorded
from bench.context import Context
from bench.processes import Forked, Process, hang_up, in_child, stop
from bench.recording import BATCH, open_accounts
from bench.rows import POSTGRESQL, SQLITE, Inconsistent, Row, at_least
from bench.workload import account_ids, charges, tally_of
from ledger import Ledger
from ledger.store.schema import charge_index

REDIS_ENV = "LEDGER_BENCH_REDIS_URL"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/9"
TASK_PATH = "ledger-task-path"
TARGET = at_least(0.50, "≥ 50% of record_charges batched", (POSTGRESQL, SQLITE))
ROOT = Path(__file__).resolve().parents[1]
#: Seconds a drain may take per 1,000 charges before the scenario gives up.
PATIENCE_PER_1000 = 5.0


def task_path(ctx: Context) -> list[Row]:
    """Drain a backlog of ``batch`` create_charge tasks; record as many with ``record_charges``."""
    from jobs import create_charge
    from jobs import huey as instance
    from jobs.queue import queue_url, use_queue

    sizes = ctx.sizes
    accounts = account_ids(sizes.accounts)
    direct = list(charges("tp-direct", sizes.batch, accounts))
    queued = list(charges("tp-queued", sizes.batch, accounts))
    half = len(direct) // 2
    with ctx.fresh("taskpath") as url, _queue(ctx, url) as queue:
        use_queue(instance, queue)
        try:
            with _worker(url, queue, ctx) as ready:  # it starts up while the accounts are opened
                expected = open_accounts(url, accounts, "taskpath")
                ledger = Ledger.from_url(url)
                try:
                    consumer = ready()
                    for account in accounts:
                        ledger.account_totals(account)
                    first = _record(ledger, direct[:half], sizes.batch_size)
                    backlog = [instance.serialize_task(create_charge.s(**item)) for item in queued]
                    drain_seconds = _drain(instance, backlog, consumer)
                    retried = instance.storage.result_store_size()  # tasks that met an error (then retried)
                    second = _record(ledger, direct[half:], sizes.batch_size)
                    hang_up(consumer)  # drained and idle: it exits while the results are checked
                finally:
                    ledger.close()
                expected.merge(tally_of(direct))
                expected.merge(tally_of(queued))
                check_recorded(url, accounts, expected)
                commits = _commits(url, "tp-queued-")
        finally:
            use_queue(instance, queue_url())
    raw = Row(f"record_charges, {sizes.batch_size:,}/call, around the drain", ctx.kind, len(direct),
              first + second, key=f"{TASK_PATH}-direct")
    note = (f"{commits:,} transactions, {len(queued) / max(commits, 1):.0f} charges per commit, "
            f"{retried:,} tasks retried; backlog enqueued at once, timed until nothing queued or held")
    batch = ctx.baseline(BATCH)
    if batch is not None and batch.rate:
        note += f"; {len(queued) / drain_seconds / batch.rate:.2f}x of the batch scenario's record_charges"
    row = Row(f"task path: {len(queued):,} queued create_charge drained by ledger worker (2 threads)",
              ctx.kind, len(queued), drain_seconds, target=TARGET, note=note, key=TASK_PATH)
    return [raw, row.against(raw)]


def _record(ledger: Ledger, items: Sequence[Mapping[str, Any]], size: int) -> float:
    began = time.perf_counter()
    for start in range(0, len(items), size):
        outcomes = ledger.record_charges(items[start : start + size])
        failed = [o for o in outcomes if not o.ok]
        if failed:
            raise RuntimeError(f"record_charges rejected {len(failed)} charges: {failed[0].error}")
    return time.perf_counter() - began


def _drain(instance: Any, backlog: list[bytes], consumer: Process) -> float:
    """Seconds from enqueuing the backlog until nothing is queued, held or scheduled for a retry."""
    storage = instance.storage
    patience = max(60.0, PATIENCE_PER_1000 * len(backlog) / 1000)
    began = time.perf_counter()
    storage.enqueue_many(backlog)
    while storage.queue_size() or storage.in_progress_count() or storage.schedule_size():
        if consumer.poll() is not None:
            raise RuntimeError(f"the worker exited with {consumer.returncode} while draining")
        if time.perf_counter() - began > patience:
            raise Inconsistent(f"the task path did not drain {len(backlog):,} tasks in {patience:.0f} s")
        time.sleep(0.005)
    return time.perf_counter() - began


@contextmanager
def _queue(ctx: Context, url: str) -> Iterator[str]:
    """An empty queue: a SQLite file beside a SQLite store, else the bench's Redis database."""
    from jobs.queue import make_huey

    if ctx.kind == SQLITE:
        folder = Path(sa.engine.make_url(url).database or "").resolve().parent
        yield f"sqlite:///{folder / 'queue.db'}"
        return
    redis_url = os.environ.get(REDIS_ENV, DEFAULT_REDIS_URL)
    instance = make_huey(redis_url)
    instance.storage.flush_all()
    try:
        yield redis_url
    finally:
        instance.storage.flush_all()


#: The worker, as ``ledger worker`` runs it. SIGTERM stops it at once (SIGINT would be the graceful stop):
#: by then the backlog has drained and nothing is held, so a graceful stop would only wait out a worker
#: thread's blocking read (up to 1 s).
WORKER_OPTIONS: dict[str, Any] = {"workers": 2, "periodic": False, "max_delay": 0.02, "graceful_signal": "INT"}
WORKER_CODE = f"from jobs.worker import run_worker; run_worker(**{WORKER_OPTIONS!r})"


def _run_worker(env: dict[str, str], log: str) -> None:
    """What :data:`WORKER_CODE` runs, in a forked child, in a session of its own as the subprocess would be."""
    in_child(env, log)
    os.setsid()
    from jobs.worker import run_worker

    run_worker(**WORKER_OPTIONS)


@contextmanager
def _worker(url: str, queue: str, ctx: Context) -> Iterator[Callable[[], Process]]:
    """``run_worker(workers=2, periodic=False)`` in a process of its own, started when it yields.

    What it yields waits until the worker polls the queue, and returns its process.
    """
    from jobs import huey as instance

    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_") or k == "LEDGER_TASK_BATCH_SIZE"}
    env.update(PYTHONPATH=str(ROOT), LEDGER_DATABASE_URL=url, LEDGER_HUEY_URL=queue)
    log_path = os.environ.get("LEDGER_BENCH_WORKER_LOG", os.devnull)
    log = open(log_path, "a")
    process: Process
    if ctx.sizes.fork_starts:  # the same call, from the fork server that imported the ledger already
        process = Forked(_run_worker, (env, log_path))
    else:
        process = subprocess.Popen([sys.executable, "-c", WORKER_CODE], env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60

    def ready() -> Process:
        while not instance.storage.consumers():  # its first poll renews its lease
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the benchmark's worker did not start")
            time.sleep(0.02)
        ctx.log(f"worker {process.pid} ready on {queue.split('?')[0]}")
        return process

    try:
        yield ready
    finally:
        stop(process)
        log.close()


def _commits(url: str, prefix: str) -> int:
    """Transactions that stored the queued charges (one ``recorded_at`` each)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(
                sa.select(sa.func.count(sa.distinct(charge_index.c.recorded_at)))
                .where(charge_index.c.charge_id.startswith(prefix))
            ).scalar_one())
    finally:
        engine.dispose()
