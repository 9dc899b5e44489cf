"""The Huey internals the batch consumer needs, in one place.

Written against Huey 3.5 (``pyproject.toml`` pins ``huey>=3.5,<3.6``).
Huey's public API runs one task at a time (``Huey.execute``); recording a
batch of tasks in one transaction needs what ``execute`` does around a
task, which Huey keeps private: the signals it sends (``_emit``), the set of
tasks an interrupted consumer re-queues (``_tasks_in_flight``), the post-
execute callbacks (``_run_post_execute``), the keys a revocation is stored
under (``_revoke_keys``, read for a whole batch in one lookup) and its
clock (``_get_timestamp``). :class:`BatchingHuey` names each of them as a
method; nothing else in the project touches them, and
``tests/unit/test_huey_internals.py`` fails when a Huey release changes them.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING

from huey import signals as S
from huey.api import Huey

if TYPE_CHECKING:
    from collections.abc import Sequence

    from huey.api import Task

#: The Huey release these methods were written against.
HUEY_SERIES = "3.5"


class BatchingHuey(Huey):
    """Huey plus what running a batch of tasks outside ``execute`` needs."""

    def now(self) -> datetime.datetime:
        """Huey's clock for due and expiry checks (UTC when ``utc``)."""
        return self._get_timestamp()

    def revoke_keys(self, task: Task) -> list[str]:
        """The storage keys a revocation of ``task`` (or of its class) is kept under."""
        return list(self._revoke_keys(task))

    def batch_started(self, tasks: Sequence[Task]) -> None:
        """Each task is executing (signal sent) and in flight (re-queued if the consumer is interrupted)."""
        for task in tasks:
            self._emit(S.SIGNAL_EXECUTING, task)
            self._tasks_in_flight.add(task)

    def batch_ended(self, tasks: Sequence[Task]) -> None:
        """The tasks are no longer in flight, whatever their outcome."""
        for task in tasks:
            self._tasks_in_flight.discard(task)

    def completed(self, task: Task) -> None:
        """What ``execute`` does for a task that returned None: post-execute callbacks, then the signal."""
        if self._post_execute:
            self._run_post_execute(task, None, None)
        self._emit(S.SIGNAL_COMPLETE, task)
