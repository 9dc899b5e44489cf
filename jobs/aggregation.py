"""The daily aggregation: project the log to its end, then compact the closed days.

Both steps are exactly-once on their own, so a run interrupted anywhere is
completed by the next one. A lease lock (:data:`aggregation_lock`) keeps runs
from overlapping; the schedule (:data:`AGGREGATE_SCHEDULE`) is
``aggregate_schedule`` in the billing time zone, both read from this
process's settings when first needed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from huey.api import Task
from huey.exceptions import TaskLockedException

from jobs import hooks, runtime
from jobs.lease_lock import LeaseLock
from jobs.process_ledger import get_ledger
from jobs.queue import huey
from jobs.retries import is_transient, retry_later
from jobs.schedule import ConfiguredCrontab

if TYPE_CHECKING:
    from ledger.application import Ledger

log = logging.getLogger("jobs")

AGGREGATION_LOCK = "aggregate-daily-billing"


def _schedule_settings() -> tuple[str, ZoneInfo]:
    settings = runtime.settings()
    return settings.jobs.aggregate_schedule, settings.ledger.zone


def _lease_seconds() -> float:
    return runtime.settings().jobs.task_lease_seconds


#: When the periodic job runs: the crontab in the billing time zone, read on first use.
AGGREGATE_SCHEDULE = ConfiguredCrontab(_schedule_settings)

#: Expires one lease after its holder stops renewing it (killed); registered
#: with Huey, so ``huey_consumer -f`` (and ``run_worker``) also flush it at start.
aggregation_lock = LeaseLock(huey, AGGREGATION_LOCK, _lease_seconds)
_held: set[str] = set()
_held_guard = threading.Lock()


@contextmanager
def _holding(lock: LeaseLock, name: str) -> Iterator[None]:
    """Huey's lock, remembering that this process holds it (see :func:`release_if_held`)."""
    lock.acquire()
    with _held_guard:
        _held.add(name)
    try:
        yield
    finally:
        with _held_guard:
            mine = name in _held  # not if the shutdown handler released it already
            _held.discard(name)
        if mine:
            lock.release()


def release_if_held() -> None:
    """Release the aggregation lock if a thread of this process holds it (its run was interrupted)."""
    with _held_guard:
        held = AGGREGATION_LOCK in _held
        _held.discard(AGGREGATION_LOCK)
    if held:
        aggregation_lock.release()


def aggregate(ledger: Ledger, *, before_commit: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Project the log to its end, then compact the closed days it covers.

    Each step is exactly-once on its own (the projector's position commits
    with its writes; compaction rolls up, snapshots and prunes an account in
    one transaction, and only what the projector has applied), so an
    interrupted run leaves nothing half-done and the next run completes it.
    """
    from ledger.compaction import compact
    from projections import Projector

    projector = Projector(ledger, before_commit=before_commit)
    projected = projector.run()
    position = projector.position()
    today = datetime.now(ledger.settings.zone).date()
    compaction = compact(ledger, before=today, projected_position=position)
    summary = {"projected": projected, "position": position, "compaction": asdict(compaction)}
    log.info("aggregated: %s", summary)
    return summary


def run_aggregation(task: Task | None) -> dict[str, Any]:
    """One run under the lock; retried with backoff while another holds it or the store is down."""
    installed = hooks.installed()
    before_commit = None
    if installed is not None:
        installed.before_attempt("aggregate", task)
        before_commit = installed.before_commit()
    try:
        with _holding(aggregation_lock, AGGREGATION_LOCK):
            return aggregate(get_ledger(), before_commit=before_commit)
    except Exception as exc:
        if installed is not None:
            installed.aggregation_failed(task, exc)
        if task is None:
            raise
        if (is_transient(exc) or isinstance(exc, TaskLockedException)) and task.retries > 0:
            raise retry_later(task, exc) from exc
        task.retries = 0
        raise
