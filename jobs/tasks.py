"""The background jobs: record a charge, and project + compact the log daily.

``create_charge`` keeps the seed's signature and Celery's ``.delay``. Its
charge id is fixed when the task is made (the caller's ``charge_id``, else
the Huey task id, which every retry and re-enqueue keeps), and so is its
``occurred_at`` (the caller's, else the time of the call), so no attempt can
count the charge twice. Transient failures are retried with exponential
backoff; a charge the ledger refuses (invalid, or a conflicting id) is not
retried but kept in the rejected-charges store, as is one whose retries ran
out, so nothing is dropped silently.

``aggregate_daily_billing_records`` runs the projector to the end of the log,
then compacts closed days; ``aggregate_charges`` is the periodic task that
does the same on a crontab in the billing time zone. A Huey lock keeps runs
from overlapping; both steps are exactly-once on their own, so a run
interrupted anywhere is completed by the next one.

A worker that takes several ``create_charge`` tasks at once records them in
one ``record_charges`` call (:func:`record_batch`, called by
:mod:`jobs.batch`); each task keeps its own outcome, retries and rejection.

Each worker process builds one :class:`~ledger.Ledger` from the settings on
first use and closes it when its last worker thread stops.
"""

from __future__ import annotations

import logging
import os
import random
import threading
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Any, Iterator, Sequence

import sqlalchemy.exc as sa_exc
from eventsourcing import persistence as es
from huey.api import Task
from huey.exceptions import CancelExecution, RetryTask, TaskLockedException
from huey.signals import SIGNAL_INTERRUPTED
from huey.utils import normalize_time

from jobs import faults
from jobs.lease_lock import LeaseLock
from jobs.queue import huey
from jobs.rejected import errors_of, reject
from jobs.schedule import ZonedCrontab
from ledger.application import Ledger, Receipt
from ledger.charges import INPUT_FIELDS
from ledger.errors import BusyAccount, ChargeConflict, InvalidCharge
from ledger.settings import JobsSettings, Settings

log = logging.getLogger("jobs")

#: This process's settings, read at import: the retry budget a task is enqueued
#: with (``task_retries``), the delays a worker retries with, and the schedule.
SETTINGS = JobsSettings()
DELIVERY = SETTINGS
AGGREGATION_LOCK = "aggregate-daily-billing"
AGGREGATE_SCHEDULE = ZonedCrontab(SETTINGS.aggregate_schedule, Settings().zone)

# -- what is worth retrying ---------------------------------------------------

_TRANSIENT: tuple[type[BaseException], ...] = (
    es.OperationalError,  # connection lost, server restarting, lock timeout, serialization failure
    es.InterfaceError,
    es.InternalError,
    BusyAccount,
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,  # connection pool exhausted
    ConnectionError,
    TimeoutError,
)


def is_transient(exc: BaseException) -> bool:
    """Would the same attempt succeed later? Database outages and lost races, yes;
    invalid input, conflicts and bugs, no."""
    if isinstance(exc, _TRANSIENT):
        return True
    if type(exc) in (es.DatabaseError, sa_exc.DatabaseError):
        return True  # the driver's unclassified error (e.g. the server went away)
    return isinstance(exc, sa_exc.DBAPIError) and bool(exc.connection_invalidated)


def retry_later(task: Task, exc: BaseException) -> RetryTask:
    """Spend one retry with exponential backoff.

    The first retry waits ``task_retry_base_seconds`` (or the ``retry_delay``
    given at enqueue), each later one twice the previous, capped at
    ``task_retry_max_seconds``, plus up to 10% jitter so tasks that failed
    together do not all come back together. ``task.retry_delay`` carries the
    next delay from attempt to attempt.
    """
    cap = SETTINGS.task_retry_max_seconds
    delay = min(float(task.retry_delay or SETTINGS.task_retry_base_seconds), cap)
    task.retry_delay = min(delay * 2, cap)
    task.retries -= 1  # Huey adds one back for RetryTask, then spends one
    log.warning(
        "%s %s failed (%s: %s); retrying in %.1fs, %d retries left",
        task.name, task.id, type(exc).__name__, exc, delay, task.retries,
    )
    if faults.plan is not None:
        faults.plan.note(kind=task.name, event="retry", task_id=task.id, delay=delay)
    return RetryTask(delay=delay * random.uniform(1.0, 1.1))


# -- one ledger per worker process --------------------------------------------

_ledger: Ledger | None = None
_ledger_pid = 0
_ledger_lock = threading.Lock()
_workers = 0


def get_ledger() -> Ledger:
    """This process's ledger, built from the settings on first use."""
    global _ledger, _ledger_pid
    with _ledger_lock:
        if _ledger is not None and _ledger_pid != os.getpid():
            _forget_inherited(_ledger)  # a forked child must not share its parent's connections
            _ledger = None
        if _ledger is None:
            _ledger, _ledger_pid = Ledger(Settings()), os.getpid()
        return _ledger


def close_ledger() -> None:
    """Close this process's ledger (the next task builds a new one)."""
    global _ledger
    with _ledger_lock:
        ledger, _ledger = _ledger, None
    if ledger is not None and _ledger_pid == os.getpid():
        ledger.close()


def _forget_inherited(ledger: Ledger) -> None:
    engine = ledger.recorder.datastore.engine
    if engine is not None:
        engine.dispose(close=False)


@huey.on_startup()
def _worker_started() -> None:
    global _workers
    with _ledger_lock:
        _workers += 1


@huey.on_shutdown()
def _worker_stopped() -> None:
    """Worker threads share the ledger: the last one to stop closes it."""
    global _workers
    with _ledger_lock:
        _workers = max(_workers - 1, 0)
        last = _workers == 0
    if last:
        close_ledger()


# -- create_charge --------------------------------------------------------------


class ChargeTask(Task):
    """A create_charge task: its charge id and time are fixed when it is made."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        fields = dict(self.kwargs)
        if fields.get("charge_id") is None:
            fields["charge_id"] = self.id
        if fields.get("occurred_at") is None:
            fields["occurred_at"] = datetime.now(timezone.utc).isoformat()
        self.kwargs = fields


@huey.task(
    context=True,
    task_base=ChargeTask,
    retries=SETTINGS.task_retries,
)
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
    prepared = getattr(_prepared, "outcomes", {}).pop(task.id, None)
    if prepared is not None:
        raise prepared
    if faults.plan is not None:
        faults.plan.before_attempt("create_charge", task)
    return get_ledger().record_charge(**fields)


# -- create_charge in batches (see jobs.batch) ------------------------------------

#: Outcomes a batch met for tasks that then run one by one: task id -> error.
_prepared = threading.local()
#: The seed's fields, in the order create_charge takes them positionally.
POSITIONAL = ("user_profile_id", "session_key", "provider", "charge_type", "prompt_tokens",
              "completion_tokens", "total_tokens", "model", "reference")


def _fields_of(task: Task) -> dict[str, Any] | None:
    """The charge a task carries, as ``record_charge`` takes it; None if its call is malformed."""
    args, kwargs = task.args, task.kwargs
    if len(args) > len(POSITIONAL) or any(name in kwargs for name in POSITIONAL[: len(args)]):
        return None  # create_charge itself raises TypeError: let it, one by one
    given = {**dict(zip(POSITIONAL, args)), **kwargs}
    fields = {name: given.pop(name, None) for name in INPUT_FIELDS}
    fields.update(given)  # unknown fields: the ledger names each in its error
    return fields


def record_batch(tasks: Sequence[Task]) -> list[BaseException | None]:
    """Record the charges of several create_charge tasks in one ``record_charges`` call.

    Per task: None when its charge is recorded (or was already: a duplicate),
    else the error it met, which the task then replays through Huey (see
    :func:`_attempt`): retried with backoff if transient, kept in the rejected
    store if the ledger refused it.
    """
    prepared = _prepared.__dict__.setdefault("outcomes", {})
    prepared.clear()  # whatever a previous batch left unreplayed (its task did not run)
    results: list[BaseException | None] = [None] * len(tasks)
    attempt: list[int] = []
    fields: list[dict[str, Any]] = []
    for index, task in enumerate(tasks):
        charge = _fields_of(task)
        if charge is None:
            results[index] = TypeError(f"create_charge() got a malformed call: {task.args!r}")
            continue
        if faults.plan is not None:
            try:
                faults.plan.before_attempt("create_charge", task)
            except Exception as exc:
                results[index] = exc
                continue
        attempt.append(index)
        fields.append(charge)
    if fields:
        try:
            outcomes = get_ledger().record_charges(fields)
        except Exception as exc:  # nothing of the batch was stored: each task retries
            for index in attempt:
                results[index] = exc
        else:
            for index, outcome in zip(attempt, outcomes):
                results[index] = outcome.error
    for task, result in zip(tasks, results):
        if result is not None:
            prepared[task.id] = result
    return results


huey.batch_handlers[create_charge.task_class] = record_batch


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

#: Expires one lease after its holder stops renewing it (killed); registered
#: with Huey, so ``huey_consumer -f`` (and ``run_worker``) also flush it at start.
aggregation_lock = LeaseLock(huey, AGGREGATION_LOCK, DELIVERY.task_lease_seconds)
_held: set[str] = set()
_held_guard = threading.Lock()


@contextmanager
def _holding(lock: LeaseLock, name: str) -> Iterator[None]:
    """Huey's lock, remembering that this process holds it (see :func:`_requeue_interrupted`)."""
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


def aggregate(ledger: Ledger, *, before_commit: Any = None) -> dict[str, Any]:
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


def _run_aggregation(task: Task | None) -> dict[str, Any]:
    hook = None
    if faults.plan is not None:
        faults.plan.before_attempt("aggregate", task)
        hook = faults.plan.batch_hook()
    try:
        with _holding(aggregation_lock, AGGREGATION_LOCK):
            return aggregate(get_ledger(), before_commit=hook)
    except Exception as exc:
        if faults.plan is not None:
            faults.plan.note(kind="aggregate", event=type(exc).__name__, task_id=getattr(task, "id", None))
        if task is None:
            raise
        if (is_transient(exc) or isinstance(exc, TaskLockedException)) and task.retries > 0:
            raise retry_later(task, exc) from exc
        task.retries = 0
        raise


@huey.task(
    context=True,
    retries=SETTINGS.task_retries,
)
def aggregate_daily_billing_records(task: Task | None = None) -> dict[str, Any]:
    """Bring the daily billing records up to date and compact closed days.

    Idempotent: run it as often as you like. A run that finds another one
    in progress waits for it (retries with backoff), then finds little left.
    Returns what it did: events projected, the projector's position, and
    compaction figures.
    """
    return _run_aggregation(task)


@huey.periodic_task(
    AGGREGATE_SCHEDULE,
    context=True,
    retries=SETTINGS.task_retries,
)
def aggregate_charges(task: Task | None = None) -> dict[str, Any]:
    """The periodic job (``aggregate_schedule`` in the billing time zone).

    Runs :func:`aggregate_daily_billing_records`' work in the worker that
    picked it up; calling it enqueues a run by hand, ``call_local()`` runs it
    here.
    """
    return _run_aggregation(task)


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
        with _held_guard:
            held = AGGREGATION_LOCK in _held
            _held.discard(AGGREGATION_LOCK)
        if held:
            aggregation_lock.release()
    # On the schedule, a little ahead: a worker thread of this dying consumer
    # still blocked on the queue (Redis BRPOP) must not take it back and die with it.
    task.eta = normalize_time(delay=REQUEUE_DELAY_SECONDS, utc=huey.utc)
    huey.add_schedule(task)
    release = getattr(huey.storage, "release", None)
    if delivery is not None and release is not None:
        release(delivery)  # rescheduled: the consumer's hold need not bring it back too
    log.warning("%s %s was interrupted by shutdown and is back on the queue (due in %ss)",
                task.name, task.id, REQUEUE_DELAY_SECONDS)
