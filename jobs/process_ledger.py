"""One ledger per worker process: built from the settings on first use, closed by its last worker thread."""

from __future__ import annotations

import os
import threading

from jobs import runtime
from jobs.queue import huey
from ledger.application import Ledger

_ledger: Ledger | None = None
_ledger_pid = 0
_ledger_lock = threading.Lock()
_workers = 0


def get_ledger() -> Ledger:
    """This process's ledger, built from its settings (:mod:`jobs.runtime`) on first use."""
    global _ledger, _ledger_pid
    with _ledger_lock:
        if _ledger is not None and _ledger_pid != os.getpid():
            _forget_inherited(_ledger)  # a forked child must not share its parent's connections
            _ledger = None
        if _ledger is None:
            _ledger, _ledger_pid = Ledger(runtime.ledger_settings()), os.getpid()
        return _ledger


def close_ledger() -> None:
    """Close this process's ledger (the next task builds a new one)."""
    global _ledger
    with _ledger_lock:
        ledger, _ledger = _ledger, None
    if ledger is not None and _ledger_pid == os.getpid():
        ledger.close()


def _forget_inherited(ledger: Ledger) -> None:
    """Drop the pooled connections a forked child inherited, without closing the parent's."""
    ledger.store.forget_inherited_connections()


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
