"""Processes the benchmark starts (a server, a worker): stopped one way."""

from __future__ import annotations

import subprocess
import weakref

#: Processes sent SIGTERM by :func:`hang_up` (each is signalled once: a second SIGTERM means "hurry" to uvicorn).
_signalled: weakref.WeakSet[subprocess.Popen] = weakref.WeakSet()


def hang_up(process: subprocess.Popen) -> None:
    """SIGTERM now, without waiting: it shuts down while the caller checks its results; :func:`stop` then waits."""
    if process not in _signalled:
        process.terminate()
        _signalled.add(process)


def stop(process: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM (unless :func:`hang_up` sent it), a grace period to finish cleanly, then SIGKILL."""
    hang_up(process)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
