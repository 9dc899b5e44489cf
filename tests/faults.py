"""Fault injection for the jobs' tests, installed through the jobs' hooks (:mod:`jobs.hooks`).

``LEDGER_JOBS_FAULTS`` names a directory shared by a test and the consumer
processes it starts. ``plan.json`` there lists faults per kind of job,
consumed in order across processes (under a file lock)::

    {"create_charge": [{"raise": "operational"}, {"raise": "operational"}],
     "aggregate": [{"pause": 30, "after_batches": 2, "marker": "paused"}]}

``raise`` raises a transient error (``operational``: eventsourcing's
OperationalError; ``busy``: BusyAccount) before the attempt; ``pause`` writes
the ``marker`` file and sleeps (for ``aggregate``: in the projector's
``after_batches``-th batch, before its commit). Every attempt is appended to
``attempts.jsonl`` so a test can see what the consumer did.

A consumer subprocess installs the plan by how it starts:
``huey_consumer tests.faults.huey`` (the jobs' Huey, with the plan of
``LEDGER_JOBS_FAULTS`` installed), or :func:`install_from_environment` before
``run_worker``.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from eventsourcing.persistence import OperationalError

from jobs.hooks import JobHooks, install
from ledger.errors import BusyAccount

ENV = "LEDGER_JOBS_FAULTS"
PLAN_FILE = "plan.json"
ATTEMPTS_FILE = "attempts.jsonl"

ERRORS: dict[str, Callable[[str], Exception]] = {
    "operational": OperationalError,
    "busy": BusyAccount,
}


class FaultPlan:
    """Faults for jobs, shared through files by every process of one test."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def write(directory: Path | str, faults: dict[str, list[dict[str, Any]]]) -> FaultPlan:
        """Start a plan (a test's set-up)."""
        plan = FaultPlan(directory)
        with plan._locked():
            (plan.directory / PLAN_FILE).write_text(json.dumps(faults))
        return plan

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.directory / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def take(self, kind: str) -> dict[str, Any] | None:
        """The next fault planned for ``kind`` (removed from the plan), or None."""
        path = self.directory / PLAN_FILE
        with self._locked():
            faults = json.loads(path.read_text()) if path.exists() else {}
            queue = faults.get(kind) or []
            if not queue:
                return None
            fault = queue.pop(0)
            path.write_text(json.dumps(faults))
        return fault

    def note(self, **event: Any) -> None:
        """Append an event to ``attempts.jsonl``."""
        event.setdefault("at", time.time())
        event.setdefault("pid", os.getpid())
        line = json.dumps(event, default=str) + "\n"
        with self._locked(), open(self.directory / ATTEMPTS_FILE, "a") as handle:
            handle.write(line)

    def attempts(self) -> list[dict[str, Any]]:
        """Every event noted so far, in order."""
        path = self.directory / ATTEMPTS_FILE
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    def apply(self, fault: dict[str, Any]) -> None:
        """Pause and/or raise, as the fault says."""
        if "pause" in fault:
            (self.directory / fault.get("marker", "paused")).touch()
            time.sleep(float(fault["pause"]))
        if "raise" in fault:
            raise ERRORS[fault["raise"]]("injected fault")


class FaultHooks(JobHooks):
    """The jobs' hooks acting out a :class:`FaultPlan` and noting every attempt in it."""

    def __init__(self, plan: FaultPlan) -> None:
        self.plan = plan

    def before_attempt(self, kind: str, task: Any) -> None:
        """Note an attempt of ``task``; raise or pause if the plan says so."""
        self.plan.note(
            kind=kind,
            event="attempt",
            task_id=getattr(task, "id", None),
            retries=getattr(task, "retries", None),
            retry_delay=getattr(task, "retry_delay", None),
        )
        if kind == "aggregate":
            return  # aggregation faults act inside the projector: see before_commit
        fault = self.plan.take(kind)
        if fault is not None:
            self.plan.apply(fault)

    def before_commit(self) -> Callable[[int], None] | None:
        """A projector ``before_commit`` hook applying the next ``aggregate`` fault."""
        fault = self.plan.take("aggregate")
        if fault is None:
            return None
        batches = 0
        after = int(fault.get("after_batches", 1))

        def hook(position: int) -> None:
            nonlocal batches
            batches += 1
            if batches == after:
                self.plan.note(kind="aggregate", event="fault", position=position)
                self.plan.apply(fault)

        return hook

    def retrying(self, task: Any, delay: float) -> None:
        self.plan.note(kind=task.name, event="retry", task_id=task.id, delay=delay)

    def aggregation_failed(self, task: Any, exc: BaseException) -> None:
        self.plan.note(kind="aggregate", event=type(exc).__name__, task_id=getattr(task, "id", None))


def install_from_environment() -> FaultPlan | None:
    """Install the plan of ``LEDGER_JOBS_FAULTS`` in this process's jobs, if it names one."""
    directory = os.environ.get(ENV)
    if not directory:
        return None
    plan = FaultPlan(directory)
    install(FaultHooks(plan))
    return plan


def __getattr__(name: str) -> Any:
    """``huey_consumer tests.faults.huey``: the jobs' Huey, with the environment's plan installed."""
    if name != "huey":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import jobs

    install_from_environment()
    return jobs.huey
