"""Processes the benchmark starts (a server, a worker, writers): started and stopped one way.

Writers (and, with ``Sizes.fork_starts``, ``ledger serve``, the task path's
worker and the rebuild) are children of one fork server: a clean process
that imported :data:`_preloaded` once, so each child starts in milliseconds.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import weakref
from collections.abc import Callable
from multiprocessing.context import ForkServerContext
from typing import Any

#: What the service's children need imported (preloaded when its processes are forked).
SERVICE_MODULES = ("ledger_service.cli", "ledger_service.http.app", "uvicorn")
#: Modules the fork server imports when it starts (it starts once per process, with the list of that moment).
_preloaded: list[str] = []


def preload(modules: Any) -> None:
    """Have the fork server import ``modules`` too (if it has not started yet)."""
    _preloaded.extend(name for name in modules if name not in _preloaded)


def fork_context() -> ForkServerContext:
    """The fork server's context, its preload list set."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(_preloaded))
    return context  # type: ignore[return-value]


class Forked:
    """A child of the fork server running ``target(*args)``, with the part of Popen's interface the bench uses."""

    def __init__(self, target: Callable[..., None], args: tuple[Any, ...]) -> None:
        self.process = fork_context().Process(target=target, args=args, daemon=True)
        self.process.start()
        self.pid = self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.exitcode

    def poll(self) -> int | None:
        return self.process.exitcode

    def terminate(self) -> None:
        self.process.terminate()

    def kill(self) -> None:
        self.process.kill()

    def wait(self, timeout: float | None = None) -> int:
        self.process.join(timeout)
        if self.process.exitcode is None:
            raise subprocess.TimeoutExpired(f"forked {self.pid}", timeout or 0)
        return self.process.exitcode


Process = subprocess.Popen | Forked


def in_child(env: dict[str, str], log: str) -> None:
    """In a forked child: the environment a new interpreter would get, and its output appended to ``log``."""
    os.environ.clear()
    os.environ.update(env)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    for stream in (sys.stdout, sys.stderr):  # a line at a time, as PYTHONUNBUFFERED gives a new interpreter
        stream.reconfigure(line_buffering=True)


def run_cli(arguments: list[str], env: dict[str, str], log: str) -> None:
    """``ledger <arguments>`` in a forked child, as ``python -m ledger_service.cli`` runs it."""
    in_child(env, log)
    from ledger_service.cli import app

    app(arguments, prog_name="ledger")


#: Processes sent SIGTERM by :func:`hang_up` (each is signalled once: a second SIGTERM means "hurry" to uvicorn).
_signalled: weakref.WeakSet[Any] = weakref.WeakSet()


def hang_up(process: Process) -> None:
    """SIGTERM now, without waiting: it shuts down while the caller checks its results; :func:`stop` then waits."""
    if process not in _signalled:
        process.terminate()
        _signalled.add(process)


def stop(process: Process, timeout: float = 30) -> None:
    """SIGTERM (unless :func:`hang_up` sent it), a grace period to finish cleanly, then SIGKILL."""
    hang_up(process)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
