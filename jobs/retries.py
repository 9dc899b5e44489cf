"""What is worth retrying, and how long a task waits before its next attempt."""

from __future__ import annotations

import logging
import random

from eventsourcing import persistence as es
from huey.api import Task
from huey.exceptions import RetryTask

from jobs import hooks, runtime
from ledger.errors import BusyAccount
from ledger.store.engine import (
    SQLALCHEMY_DATABASE_ERROR,
    SQLALCHEMY_UNAVAILABLE,
    connection_invalidated,
)

log = logging.getLogger("jobs")

_TRANSIENT: tuple[type[BaseException], ...] = (
    es.OperationalError,  # connection lost, server restarting, lock timeout, serialization failure
    es.InterfaceError,
    es.InternalError,
    BusyAccount,
    *SQLALCHEMY_UNAVAILABLE,
    ConnectionError,
    TimeoutError,
)


def is_transient(exc: BaseException) -> bool:
    """Would the same attempt succeed later? Database outages and lost races, yes;
    invalid input, conflicts and bugs, no."""
    if isinstance(exc, _TRANSIENT):
        return True
    if type(exc) in (es.DatabaseError, SQLALCHEMY_DATABASE_ERROR):
        return True  # the driver's unclassified error (e.g. the server went away)
    return connection_invalidated(exc)


def retry_later(task: Task, exc: BaseException) -> RetryTask:
    """Spend one retry with exponential backoff.

    The first retry waits ``task_retry_base_seconds`` (or the ``retry_delay``
    given at enqueue), each later one twice the previous, capped at
    ``task_retry_max_seconds``, plus up to 10% jitter so tasks that failed
    together do not all come back together. ``task.retry_delay`` carries the
    next delay from attempt to attempt.
    """
    settings = runtime.settings().jobs
    cap = settings.task_retry_max_seconds
    delay = min(float(task.retry_delay or settings.task_retry_base_seconds), cap)
    task.retry_delay = min(delay * 2, cap)
    task.retries -= 1  # Huey adds one back for RetryTask, then spends one
    log.warning(
        "%s %s failed (%s: %s); retrying in %.1fs, %d retries left",
        task.name, task.id, type(exc).__name__, exc, delay, task.retries,
    )
    installed = hooks.installed()
    if installed is not None:
        installed.retrying(task, delay)
    return RetryTask(delay=delay * random.uniform(1.0, 1.1))
