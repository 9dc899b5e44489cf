"""What is worth retrying, and how long a task waits before its next attempt."""

from __future__ import annotations

import logging
import random
import time

from eventsourcing import persistence as es
from huey.api import Task
from huey.exceptions import RetryTask

from jobs import hooks, runtime
from ledger.errors import BusyAccount, LedgerUnavailable
from ledger.store.engine import (
    SQLALCHEMY_DATABASE_ERROR,
    SQLALCHEMY_UNAVAILABLE,
    UNAVAILABLE_ERRORS,
    connection_invalidated,
    transient,
)

log = logging.getLogger("jobs")

_TRANSIENT: tuple[type[BaseException], ...] = (
    es.OperationalError,  # connection lost, server restarting, lock timeout, serialization failure
    es.InterfaceError,
    es.InternalError,
    BusyAccount,
    LedgerUnavailable,  # the ledger's own retries ran out through a failover: the task tries again later
    *SQLALCHEMY_UNAVAILABLE,
    *UNAVAILABLE_ERRORS,
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
    return connection_invalidated(exc) or transient(exc)  # e.g. read-only after a promotion


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
    log.log(
        _level_of(exc),
        "%s %s failed (%s: %s); retrying in %.1fs, %d retries left",
        task.name, task.id, type(exc).__name__, exc, delay, task.retries,
    )
    installed = hooks.installed()
    if installed is not None:
        installed.retrying(task, delay)
    return RetryTask(delay=delay * random.uniform(1.0, 1.1))


#: While the database is unreachable: when this worker first saw it (monotonic), else None.
_outage_since: float | None = None
#: An outage is over when no task met one for this long.
OUTAGE_QUIET_SECONDS = 60.0


def _level_of(exc: BaseException) -> int:
    """WARNING for the first task that finds the database unreachable (with one line saying so),
    INFO for the others during the same outage: a failover is one line, not one per task."""
    global _outage_since
    if not isinstance(exc, (LedgerUnavailable, *UNAVAILABLE_ERRORS)) and not transient(exc):
        return logging.WARNING
    now = time.monotonic()
    ongoing = _outage_since is not None and now - _outage_since < OUTAGE_QUIET_SECONDS
    _outage_since = now
    if ongoing:
        return logging.INFO
    log.warning("the worker lost the database; its tasks are retried with backoff until it is back")
    return logging.INFO
