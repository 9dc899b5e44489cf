"""create_charge in batches: a worker records the charges of many tasks in one ``record_charges`` call.

:func:`record_batch` is ``create_charge``'s batch handler (see :mod:`jobs.batch`).
Each task keeps its own outcome: a task whose charge the batch could not
record then runs on its own and meets the same outcome again (its *prepared*
outcome, :func:`take_prepared`), so retries, backoff and the rejected store
stay per task.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from huey.api import Task

from jobs import hooks
from jobs.process_ledger import get_ledger
from ledger.charge_fields import INPUT_FIELDS, SEED_FIELDS

#: The seed's fields, in the order create_charge takes them positionally.
POSITIONAL = SEED_FIELDS

#: Outcomes a batch met for tasks that then run one by one: task id -> error.
_prepared = threading.local()


def take_prepared(task_id: str) -> BaseException | None:
    """The outcome this thread's last batch met for the task, once; None if it met none."""
    outcomes: dict[str, BaseException] = getattr(_prepared, "outcomes", {})
    return outcomes.pop(task_id, None)


def fields_of(task: Task) -> dict[str, Any] | None:
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
    else the error it met, which the task then replays through Huey:
    retried with backoff if transient, kept in the rejected store if the
    ledger refused it.
    """
    prepared: dict[str, BaseException] = _prepared.__dict__.setdefault("outcomes", {})
    prepared.clear()  # whatever a previous batch left unreplayed (its task did not run)
    results: list[BaseException | None] = [None] * len(tasks)
    attempt: list[int] = []
    fields: list[dict[str, Any]] = []
    installed = hooks.installed()
    for index, task in enumerate(tasks):
        charge = fields_of(task)
        if charge is None:
            results[index] = TypeError(f"create_charge() got a malformed call: {task.args!r}")
            continue
        if installed is not None:
            try:
                installed.before_attempt("create_charge", task)
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
