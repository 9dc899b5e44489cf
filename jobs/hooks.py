"""The one seam around the jobs' attempts: hooks a test installs; none in production.

The tasks call the installed :class:`JobHooks` before each attempt, when a
task is retried and when an aggregation fails, and ask it for a hook to run
before each of the projector's commits. With nothing installed (always,
outside tests) each of these is one ``is None`` check. The fault plan of the
jobs' tests (``tests/faults.py``) is installed through :func:`install`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from huey.api import Task


class JobHooks:
    """Called around the jobs' attempts; every method here does nothing."""

    def before_attempt(self, kind: str, task: Task | None) -> None:
        """Before one attempt of a ``create_charge`` (``kind``) or ``aggregate`` task; may raise."""

    def before_commit(self) -> Callable[[int], None] | None:
        """A hook the aggregation's projector calls before each commit, with its position; or None."""
        return None

    def retrying(self, task: Task, delay: float) -> None:
        """A task failed transiently and runs again in ``delay`` seconds."""

    def aggregation_failed(self, task: Task | None, exc: BaseException) -> None:
        """An aggregation attempt raised ``exc``."""


_installed: JobHooks | None = None


def install(hooks: JobHooks | None) -> None:
    """Use ``hooks`` in this process from now on (None removes them)."""
    global _installed
    _installed = hooks


def installed() -> JobHooks | None:
    """The hooks in use, or None."""
    return _installed
