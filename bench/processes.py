"""Processes the benchmark starts (a server, a worker): stopped one way."""

from __future__ import annotations

import subprocess


def stop(process: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM, a grace period to finish cleanly, then SIGKILL."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
