"""Moves acknowledged charges from the intake into the log, in the background.

On PostgreSQL a charge is acknowledged once its intake row commits (see
``ledger/store/intake.sql``); the log gets it when a sequencing transaction moves
pending rows into ``ledger_events`` in one batch. Any process may sequence:
each writer process runs one thread that does it shortly after its own
writes (skipping its turn while another process is at it), and every read
that needs the log sequences first, so a reader sees every charge
acknowledged before it asked, whichever process took it.

A killed writer loses nothing: its acknowledged rows wait in the intake
for the next sequencing, by any process. Through a failover the thread
carries on: each turn is bounded (a frozen primary cannot hold it), a
failed turn is tried again every second, and it logs one line when it
loses the database and one when it reaches it again.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from ledger.store.watchdog import deadline_of

log = logging.getLogger(__name__)

#: ``drain(wait)``: move what is pending; a negative result means another
#: process was at it and this call skipped its turn.
Drain = Callable[[bool], int]

#: The bound on one sequencing turn (the watchdog ends a call to a frozen server after it).
TURN_SECONDS = 60.0
#: The pause after a failed turn.
RETRY_SECONDS = 1.0


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
        #: When the database was lost (monotonic), while it is.
        self._lost_since: float | None = None

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
                with deadline_of(TURN_SECONDS):
                    moved = self._drain(False)
            except Exception as exc:  # noqa: BLE001 - whatever the failure, the thread carries on
                self._failed(exc)
                self._wanted.set()
                self._stopping.wait(RETRY_SECONDS)
                continue
            self._reached()
            if moved < 0:
                self._wanted.set()  # another process is sequencing: look again next turn

    def _failed(self, exc: Exception) -> None:
        """One line when the database is lost; nothing more until it is back."""
        if self._lost_since is not None:
            log.debug("sequencing the intake failed again: %s", exc)
            return
        self._lost_since = time.monotonic()
        first = str(exc).strip().splitlines()
        log.warning("ledger-sequencer lost the database (%s); retrying every %g s, acknowledged charges wait "
                    "in the intake", first[0] if first else type(exc).__name__, RETRY_SECONDS)

    def _reached(self) -> None:
        if self._lost_since is not None:
            log.warning("ledger-sequencer reached the database again after %.1f s", time.monotonic() - self._lost_since)
            self._lost_since = None

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
            with deadline_of(TURN_SECONDS):
                self._drain(True)
        except Exception:
            log.warning("sequencing the intake at close failed", exc_info=True)
