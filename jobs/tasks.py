"""The background jobs: record a charge, and project + compact the log daily.

``create_charge`` keeps the seed's signature and Celery's ``.delay``. Its
charge id is fixed when the task is made (the caller's ``charge_id``, else
the Huey task id, which every retry and re-enqueue keeps), and so is its
``occurred_at`` (the caller's, else the time of the call), so no attempt can
count the charge twice. Transient failures are retried with exponential
backoff (:mod:`jobs.retries`); a charge the ledger refuses (invalid, or a
conflicting id) is not retried but kept in the rejected-charges store, as is
one whose retries ran out, so nothing is dropped silently. A worker that
takes several ``create_charge`` tasks at once records them in one
``record_charges`` call (:mod:`jobs.charge_batch`).

``aggregate_daily_billing_records`` runs the daily aggregation
(:mod:`jobs.aggregation`); ``aggregate_charges`` is the periodic task that
does the same on a crontab in the billing time zone.

``check_budgets`` is the periodic budget check (every
``budget_check_seconds``): it fires crossed thresholds and delivers their
webhooks; ``deliver_webhooks`` delivers what is due (:mod:`jobs.webhooks`).

A task's retry budget is ``task_retries`` of the settings of the process
that makes it (:mod:`jobs.runtime`), read then, not at import. Huey names
the tasks by this module (``jobs.tasks.create_charge``), so they stay here.
Each worker process builds one ledger on first use (:mod:`jobs.process_ledger`).
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

from huey.api import PeriodicTask, Task
from huey.exceptions import CancelExecution
from huey.signals import SIGNAL_INTERRUPTED
from huey.utils import normalize_time

from jobs import hooks, runtime
from jobs.aggregation import (
    AGGREGATE_SCHEDULE,
    AGGREGATION_LOCK,
    aggregate,
    aggregation_lock,
    release_if_held,
    run_aggregation,
)
from jobs.charge_batch import POSITIONAL, record_batch, take_prepared
from jobs.process_ledger import close_ledger, get_ledger
from jobs.queue import huey
from jobs.rejected import errors_of, reject
from jobs.retries import is_transient, retry_later
from jobs.webhooks import BUDGET_CHECK_SCHEDULE, check_and_deliver, watching
from ledger.application import Receipt
from ledger.charge_fields import INPUT_FIELDS
from ledger.errors import ChargeConflict, InvalidCharge

__all__ = [
    "AGGREGATE_SCHEDULE",
    "AGGREGATION_LOCK",
    "POSITIONAL",
    "aggregate",
    "aggregate_charges",
    "aggregate_daily_billing_records",
    "aggregation_lock",
    "check_budgets",
    "close_ledger",
    "create_charge",
    "deliver_webhooks",
    "get_ledger",
    "is_transient",
    "record_batch",
    "retry_later",
]

log = logging.getLogger("jobs")


class LedgerTask(Task):
    """A task whose retry budget, unless given, is this process's ``task_retries`` when it is made."""

    def __init__(self, args: Any = None, kwargs: Any = None, id: str | None = None, eta: Any = None,
                 retries: int | None = None, *more: Any, **settings: Any) -> None:
        if retries is None:
            retries = runtime.settings().jobs.task_retries
        super().__init__(args, kwargs, id, eta, retries, *more, **settings)


# -- create_charge --------------------------------------------------------------


class ChargeTask(LedgerTask):
    """A create_charge task: its charge id and time are fixed when it is made.

    The consumer records a batch of them with :func:`jobs.charge_batch.record_batch`.
    """

    batch_handler = staticmethod(record_batch)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        fields = dict(self.kwargs)
        if fields.get("charge_id") is None:
            fields["charge_id"] = self.id
        if fields.get("occurred_at") is None:
            fields["occurred_at"] = datetime.now(timezone.utc).isoformat()
        self.kwargs = fields


@huey.task(context=True, task_base=ChargeTask)
def create_charge(
    user_profile_id: int | None = None,
    session_key: str | None = None,
    provider: str | None = None,
    charge_type: str | None = None,
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
    total_tokens: int | None = None,
    model: str | None = None,
    reference: str | None = None,
    *,
    account_id: str | None = None,
    user_id: str | None = None,
    charge_id: str | None = None,
    occurred_at: str | datetime | None = None,
    task: Task | None = None,
    **unknown: Any,
) -> None:
    """Record one charge (the seed's fields plus account, user, charge id and time).

    Enqueued by calling it or ``.delay(...)``; returns Huey's result handle,
    whose ``id`` is the charge id unless one was given. ``call_local(...)``
    records inline and raises the ledger's errors.
    """
    given = locals()
    fields = {name: given[name] for name in INPUT_FIELDS}
    fields.update(unknown)  # the ledger names each unknown field in its error
    if task is None:
        get_ledger().record_charge(**fields)
        return
    _record(task, fields)


def _record(task: Task, fields: dict[str, Any]) -> None:
    """One attempt: recorded, retried later, or kept as rejected (then the task fails)."""
    try:
        receipt = _attempt(task, fields)
    except (InvalidCharge, ChargeConflict) as exc:
        kept = _keep(task, fields, errors_of(exc), exc)
        # Expected: a warning and the error in the result store, no traceback.
        raise CancelExecution(f"{exc} (kept as {kept})", retry=False) from exc
    except Exception as exc:
        if is_transient(exc) and task.retries > 0:
            raise retry_later(task, exc) from exc
        if is_transient(exc):
            reason = f"gave up after its retries: {type(exc).__name__}: {exc}"
        else:
            reason = f"unexpected error: {type(exc).__name__}: {exc}"
        _keep(task, fields, {"charge": reason}, exc)
        raise
    else:
        log.info("charge %s recorded for account %s%s", receipt.charge_id,
                 receipt.account_id, " (duplicate)" if receipt.duplicate else "")


def _attempt(task: Task, fields: dict[str, Any]) -> Receipt:
    """Record the charge, or replay what the batch it came in already met."""
    prepared = take_prepared(task.id)
    if prepared is not None:
        raise prepared
    installed = hooks.installed()
    if installed is not None:
        installed.before_attempt("create_charge", task)
    return get_ledger().record_charge(**fields)


def _keep(task: Task, fields: dict[str, Any], errors: dict[str, str], exc: Exception) -> str:
    """No more attempts: keep the charge in the rejected store; the task then fails for good."""
    given = {name: value for name, value in fields.items() if value is not None}
    try:
        kept = reject(get_ledger(), given, errors, task_id=task.id)
    except Exception as store_exc:
        if is_transient(store_exc) and task.retries > 0:
            raise retry_later(task, store_exc) from store_exc
        log.error("charge of task %s could not be kept as rejected (%r): %r",
                  task.id, store_exc, given)
        task.retries = 0
        raise store_exc from exc
    task.retries = 0
    where = f"rejected charge #{kept}" if kept is not None else f"the rejected charge of task {task.id}"
    log.warning("charge of task %s not recorded, kept as %s: %s", task.id, where, errors)
    return where


# -- daily aggregation ------------------------------------------------------------


@huey.task(context=True, task_base=LedgerTask)
def aggregate_daily_billing_records(task: Task | None = None) -> dict[str, Any]:
    """Bring the daily billing records up to date and compact closed days.

    Idempotent: run it as often as you like. A run that finds another one
    in progress waits for it (retries with backoff), then finds little left.
    Returns what it did: events projected, the projector's position, and
    compaction figures.
    """
    return run_aggregation(task)


class ScheduledAggregation(LedgerTask, PeriodicTask):
    """The periodic aggregation: due when :data:`~jobs.aggregation.AGGREGATE_SCHEDULE` says."""

    def validate_datetime(self, timestamp: datetime) -> bool:
        return AGGREGATE_SCHEDULE(timestamp)


@huey.task(context=True, task_base=ScheduledAggregation)
def aggregate_charges(task: Task | None = None) -> dict[str, Any]:
    """The periodic job (``aggregate_schedule`` in the billing time zone).

    Runs :func:`aggregate_daily_billing_records`' work in the worker that
    picked it up; calling it enqueues a run by hand, ``call_local()`` runs it
    here.
    """
    return run_aggregation(task)


# -- budget alerts and their webhooks ----------------------------------------------


@huey.task(context=True)
def deliver_webhooks(check: bool = False, task: Task | None = None) -> dict[str, Any]:
    """Deliver the budget alerts' webhooks that are due (firing crossed thresholds first when ``check``).

    Idempotent and safe beside other runs (deliveries are claimed, see
    :mod:`jobs.webhooks`); a run whose failed deliveries are due again
    before the next budget check schedules one more run for then.
    """
    return _check_and_deliver(check)


class ScheduledBudgetCheck(PeriodicTask):
    """The periodic budget check: due every ``budget_check_seconds`` (:data:`~jobs.webhooks.BUDGET_CHECK_SCHEDULE`)."""

    def validate_datetime(self, timestamp: datetime) -> bool:
        return BUDGET_CHECK_SCHEDULE(timestamp)


@huey.task(context=True, task_base=ScheduledBudgetCheck)
def check_budgets(task: Task | None = None) -> dict[str, Any]:
    """The periodic job: fire crossed thresholds, deliver due webhooks.

    Huey asks its periodic tasks once a minute; for an interval under a
    minute this run first schedules the runs that follow it within the
    minute (first, so a run that fails keeps the cadence), when some budget
    has thresholds to fire.
    """
    if task is not None and watching(get_ledger()):
        for delay in BUDGET_CHECK_SCHEDULE.follow_ups():
            deliver_webhooks.schedule(kwargs={"check": True}, delay=delay)
    return _check_and_deliver(True)


def _check_and_deliver(check: bool) -> dict[str, Any]:
    summary = check_and_deliver(get_ledger(), check=check)
    wait = summary.retry_in()
    if wait is not None and wait < BUDGET_CHECK_SCHEDULE.seconds:  # sooner than the next check
        deliver_webhooks.schedule(delay=wait)
    if summary.fired or summary.results:
        log.info("budget check: %s", summary.to_dict())
    return summary.to_dict()


# -- graceful shutdown ------------------------------------------------------------

#: How long an interrupted task waits on the schedule before it is due again.
REQUEUE_DELAY_SECONDS = 1.0

_OUR_TASKS = tuple(
    wrapper.task_class for wrapper in (create_charge, aggregate_daily_billing_records, aggregate_charges)
)
_AGGREGATIONS = (aggregate_daily_billing_records.task_class, aggregate_charges.task_class)


@huey.signal(SIGNAL_INTERRUPTED)
def _requeue_interrupted(signal: str, task: Task, *args: Any, **kwargs: Any) -> None:
    """Put a task the consumer's shutdown interrupted back on the queue.

    Safe because every task here is idempotent (a charge by its fixed id, an
    aggregation by the projector's position). An interrupted worker thread
    never leaves its ``with`` block, so the aggregation lock it held is
    released here.
    """
    if not isinstance(task, _OUR_TASKS):
        return
    delivery = getattr(task, "delivery", None)
    if isinstance(task, _AGGREGATIONS):
        release_if_held()
    # On the schedule, a little ahead: a worker thread of this dying consumer
    # still blocked on the queue (Redis BRPOP) must not take it back and die with it.
    task.eta = normalize_time(delay=REQUEUE_DELAY_SECONDS, utc=huey.utc)
    huey.add_schedule(task)
    release = getattr(huey.storage, "release", None)
    if delivery is not None and release is not None:
        release(delivery)  # rescheduled: the consumer's hold need not bring it back too
    log.warning("%s %s was interrupted by shutdown and is back on the queue (due in %ss)",
                task.name, task.id, REQUEUE_DELAY_SECONDS)
