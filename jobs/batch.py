"""The ledger's consumer: workers take tasks in batches and acknowledge them when done.

A worker thread takes up to ``task_batch_size`` tasks at once (they stay in
its hold, see :mod:`jobs.delivery`). Tasks of a class with a *batch handler*
(a ``batch_handler`` attribute; create_charge's is
:func:`jobs.charge_batch.record_batch`) are handed to it together:
it records their charges in one ``record_charges`` call, one transaction.
Tasks it recorded are complete; each of the others (invalid, conflicting,
a transient error) then runs through Huey's own ``execute`` with its prepared
outcome, so retries, backoff and the rejected store stay per task. Every
other task runs through ``execute`` as usual. Only when all of them reached
a durable outcome is the hold acknowledged.

``huey_consumer jobs.huey`` and ``ledger worker`` both get this consumer,
because the ledger's Huey classes build it in ``create_consumer``. Running a
batch outside ``Huey.execute`` needs some of Huey's internals: they are
named in :class:`jobs.huey_internals.BatchingHuey`, used here only. The
worker and consumer subclasses override Huey 3.5's ``Worker.loop`` and
``Consumer._create_worker`` (tested by ``tests/unit/test_huey_internals.py``).
"""

from __future__ import annotations

import datetime
import logging
from typing import Any, Callable, Sequence

from huey.api import Huey, Task
from huey.consumer import Consumer, Worker, WorkerRecycle
from huey.constants import EmptyData

from jobs.delivery import Delivery, ReliableStorage
from jobs.huey_internals import BatchingHuey

log = logging.getLogger("jobs.batch")

#: Records a batch of tasks; per task None (done, durable) or the outcome to replay.
BatchHandler = Callable[[Sequence[Task]], list[BaseException | None]]


class BatchWorker(Worker):
    """Huey's worker, taking a batch per loop from a reliable storage."""

    def __init__(self, *args: Any, batch_size: int = 1, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batch_size = batch_size

    def loop(self, now: datetime.datetime | None = None) -> None:
        storage = self.huey.storage
        if not isinstance(storage, ReliableStorage):
            return super().loop(now)  # memory://: Huey's own loop
        try:
            deliveries = storage.take(self.batch_size)
        except Exception:
            self._logger.exception("Error reading from queue")
            self.sleep()
            return
        if not deliveries:
            if not storage.blocking:
                self.sleep()
            return
        self.delay = self.default_delay
        tasks = decode(self.huey, deliveries)
        try:
            assert isinstance(self.huey, BatchingHuey)  # a reliable storage belongs to the ledger's Huey
            run_batch(self.huey, tasks, now)
            storage.ack()
        except Exception:
            self._logger.exception("A batch of %d task(s) did not reach durable outcomes; "
                                   "it goes back on the queue", len(tasks))
        self.task_count += len(deliveries)
        if self.max_tasks and self.task_count >= self.max_tasks:
            self._logger.info("Worker reached max tasks (%d), exiting.", self.max_tasks)
            raise WorkerRecycle()


class LedgerConsumer(Consumer):
    """Huey's consumer with batch workers."""

    worker_class = BatchWorker

    def __init__(self, huey: Huey, *args: Any, batch_size: int | None = None, **kwargs: Any) -> None:
        storage = huey.storage
        delivery = getattr(storage, "delivery", None)
        self.batch_size = batch_size or (delivery.task_batch_size if delivery is not None else 1)
        super().__init__(huey, *args, **kwargs)

    def _create_worker(self) -> BatchWorker:
        return self.worker_class(
            huey=self.huey,
            stop_flag=self.stop_flag,
            default_delay=self.default_delay,
            max_delay=self.max_delay,
            backoff=self.backoff,
            max_tasks=self.max_tasks,
            batch_size=self.batch_size,
        )


def decode(huey: Huey, deliveries: Sequence[Delivery]) -> list[Task]:
    """The tasks of a batch; each remembers its delivery (to be released on interruption)."""
    tasks = []
    for delivery in deliveries:
        try:
            task = huey.deserialize_task(delivery.data)
        except Exception:  # it can never run: keeping it would block the queue forever
            log.exception("dropping a task that cannot be read (%d bytes)", len(delivery.data))
            continue
        task.delivery = delivery
        tasks.append(task)
    return tasks


def batch_handler(task: Task) -> BatchHandler | None:
    """The function that records a batch of tasks of this one's class, if the class has one."""
    handler: BatchHandler | None = getattr(type(task), "batch_handler", None)
    return handler


def run_batch(huey: BatchingHuey, tasks: Sequence[Task], timestamp: datetime.datetime | None = None) -> None:
    """Run every task of a batch to a durable outcome (raises if one could not get there)."""
    timestamp = timestamp or huey.now()
    groups: dict[type, list[Task]] = {}
    singles: list[Task] = []
    for task in tasks:
        if batch_handler(task) is not None and _plain(huey, task, timestamp):
            groups.setdefault(type(task), []).append(task)
        else:
            singles.append(task)
    for group in groups.values():
        group = _not_revoked(huey, group, singles)
        handler = batch_handler(group[0]) if group else None
        if handler is not None:
            singles.extend(_run_handler(huey, handler, group))
    for task in singles:
        huey.execute(task, timestamp)


def _plain(huey: Huey, task: Task, timestamp: datetime.datetime) -> bool:
    """Due, unexpired, and without pipelines, chords or timeouts: safe to record in a batch."""
    return (huey.ready_to_run(task, timestamp)
            and not (task.expires_resolved and task.expires_resolved < timestamp)
            and task.on_complete is None and task.on_error is None
            and task.chord_config is None and not task.timeout)


def _not_revoked(huey: BatchingHuey, group: list[Task], singles: list[Task]) -> list[Task]:
    """The tasks with no revocation data (one lookup); the others go to ``execute``."""
    keys = {key for task in group for key in huey.revoke_keys(task)}
    found = huey.storage.peek_many(sorted(keys)) if keys else {}
    if not found:
        return group
    clear = []
    for task in group:
        if any(found.get(key, EmptyData) is not EmptyData for key in huey.revoke_keys(task)):
            singles.append(task)
        else:
            clear.append(task)
    return clear


def _run_handler(huey: BatchingHuey, handler: BatchHandler, group: list[Task]) -> list[Task]:
    """Record a group with its handler; complete the done ones, return the others to replay."""
    huey.batch_started(group)
    try:
        outcomes = handler(group)
    finally:
        huey.batch_ended(group)
    replay = []
    for task, outcome in zip(group, outcomes):
        if outcome is None:
            huey.completed(task)
        else:
            replay.append(task)
    if log.isEnabledFor(logging.INFO):
        log.info("%s: %d recorded in one transaction, %d to retry or keep as rejected",
                 type(group[0]).__name__, len(group) - len(replay), len(replay))
    return replay
