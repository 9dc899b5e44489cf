"""The Huey internals the batch consumer relies on, against the installed Huey.

:class:`jobs.huey_internals.BatchingHuey` and :mod:`jobs.batch` were written
against Huey 3.5; each test here fails loudly when a release changes one of
the private names or behaviours they use.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import huey
from huey import signals as S
from huey.constants import EmptyData
from huey.consumer import Consumer, Worker
from huey.storage import MemoryStorage

from jobs.batch import BatchWorker, LedgerConsumer
from jobs.huey_internals import HUEY_SERIES, BatchingHuey


def probe() -> tuple[BatchingHuey, list[tuple[str, str]], object]:
    instance = BatchingHuey("probe", storage_class=MemoryStorage, utc=True)
    seen: list[tuple[str, str]] = []

    @instance.signal()
    def _record(signal: str, task: huey.api.Task, *args: object) -> None:
        seen.append((signal, task.id))

    @instance.task()
    def noop() -> None:
        return None

    return instance, seen, noop


def test_the_installed_huey_is_the_series_the_internals_were_written_against():
    assert huey.__version__.startswith(HUEY_SERIES + "."), huey.__version__


def test_a_batch_is_executing_and_in_flight_until_it_ends():
    instance, seen, noop = probe()
    task = noop.s()
    instance.batch_started([task])
    assert seen == [(S.SIGNAL_EXECUTING, task.id)]
    instance.notify_interrupted_tasks()  # what a consumer's shutdown does with tasks in flight
    assert seen[-1] == (S.SIGNAL_INTERRUPTED, task.id)
    again = noop.s()
    instance.batch_started([again])
    instance.batch_ended([again])
    seen.clear()
    instance.notify_interrupted_tasks()
    assert seen == []  # ended: no longer in flight


def test_a_completed_task_runs_the_post_execute_callbacks_then_signals():
    instance, seen, noop = probe()
    after: list[tuple[str, object, object]] = []

    @instance.post_execute()
    def _after(task: huey.api.Task, value: object, exc: object) -> None:
        after.append((task.id, value, exc))

    task = noop.s()
    instance.completed(task)
    assert after == [(task.id, None, None)]
    assert seen == [(S.SIGNAL_COMPLETE, task.id)]


def test_revoke_keys_are_where_a_revocation_is_stored():
    instance, _, noop = probe()
    task = noop.s()
    assert all(instance.storage.peek_data(key) is EmptyData for key in instance.revoke_keys(task))
    noop.revoke()
    assert any(instance.storage.peek_data(key) is not EmptyData for key in instance.revoke_keys(task))
    assert instance.is_revoked(task)


def test_now_is_hueys_naive_utc_clock():
    instance, _, _ = probe()
    now = instance.now()
    assert now.tzinfo is None
    assert abs(now - datetime.utcnow()) < timedelta(seconds=5)  # noqa: DTZ003 - Huey's own convention


def test_the_consumer_and_worker_hooks_the_batch_worker_overrides_exist():
    assert callable(getattr(Worker, "loop", None)) and callable(getattr(Worker, "sleep", None))
    assert callable(getattr(Consumer, "_create_worker", None))
    instance, _, _ = probe()
    consumer = LedgerConsumer(instance, workers=1, batch_size=7)
    worker = consumer._create_worker()
    assert isinstance(worker, BatchWorker) and worker.batch_size == 7
    for name in ("_logger", "delay", "default_delay", "task_count", "max_tasks", "huey"):
        assert hasattr(worker, name), name
