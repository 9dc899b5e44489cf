"""Moves acknowledged charges from the intake into the log, in the background.

On PostgreSQL a charge is acknowledged once its intake row commits (see
``ledger/store/intake.sql``); the log gets it when a sequencing transaction moves
pending rows into ``ledger_events`` in one batch. Any process may sequence:
each writer process runs one thread that does it shortly after its own
writes (skipping its turn while another process is at it), and every read
that needs the log sequences first, so a reader sees every charge
acknowledged before it asked, whichever process took it.

A killed writer loses nothing: its acknowledged rows wait in the intake
for the next sequencing, by any process.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

#: ``drain(wait)``: move what is pending; a negative result means another
#: process was at it and this call skipped its turn.
Drain = Callable[[bool], int]


class Sequencer:
    """One background thread per process, woken by this process's writes."""

    def __init__(self, drain: Drain, interval: float) -> None:
        self._drain = drain
        self._interval = interval
        self._wanted = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def poke(self) -> None:
        """Charges were taken in: sequence them soon (starts the thread on first use)."""
        if self._pid != os.getpid():
            self._start()
        self._wanted.set()

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            self._wanted, self._stopping = threading.Event(), threading.Event()  # not the parent's
            self._thread = threading.Thread(target=self._run, name="ledger-sequencer", daemon=True)
            self._pid = os.getpid()
            self._thread.start()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wanted.wait()
            if self._stopping.wait(self._interval):  # let more arrive: one transaction moves them all
                return
            self._wanted.clear()
            try:
                if self._drain(False) < 0:
                    self._wanted.set()  # another process is sequencing: look again next turn
            except Exception:
                log.warning("sequencing the intake failed; will retry", exc_info=True)
                self._wanted.set()
                self._stopping.wait(1.0)

    def close(self) -> None:
        """Stop the thread, then sequence what this process left (best effort)."""
        thread, self._thread = self._thread, None
        if thread is None or self._pid != os.getpid():
            return
        self._stopping.set()
        self._wanted.set()
        thread.join(timeout=10)
        self._pid = 0
        try:
            self._drain(True)
        except Exception:
            log.warning("sequencing the intake at close failed", exc_info=True)
