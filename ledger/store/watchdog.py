"""A client-side bound on database calls: a call past its deadline has its socket shut down.

A frozen primary (SIGSTOPped, or a network that drops nothing but answers
nothing) still acknowledges TCP in its kernel, so neither TCP keepalives nor
``tcp_user_timeout`` end a wait on it, and a server-side ``statement_timeout``
cannot fire. The only bound that holds is the client's own: a call arms its
connection with a deadline, and one thread per process shuts down the socket
of any connection still armed past its deadline. libpq then fails the blocked
call (psycopg2 releases the GIL while it waits) with ``OperationalError``;
SQLAlchemy invalidates the connection, and the caller's retry takes a new one.

Arming and disarming are a dictionary store and pop (no lock, no timer per
call), so the hot path pays next to nothing; the thread wakes a few times a
second only while something is armed.
"""

from __future__ import annotations

import contextvars
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

#: How often the thread looks at armed connections (the bound's granularity).
TICK_SECONDS = 0.2

#: The monotonic time by which database calls made in this context must end (None: unbounded).
call_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("ledger_call_deadline", default=None)


class _Armed:
    """One armed call: its connection's descriptor and its deadline."""

    __slots__ = ("connection", "deadline")

    def __init__(self, connection: Any, deadline: float) -> None:
        self.connection = connection
        self.deadline = deadline


class Watchdog:
    """Shuts down the socket of any armed connection whose deadline passed."""

    def __init__(self, tick: float = TICK_SECONDS) -> None:
        self._tick = tick
        self._armed: dict[int, _Armed] = {}
        self._wake = threading.Event()
        self._pid = 0
        self._lock = threading.Lock()
        #: Sockets shut down so far (for tests and logs).
        self.fired = 0

    def arm(self, connection: Any, deadline: float) -> None:
        """Bound the call about to run on ``connection`` (a psycopg2 connection) by ``deadline`` (monotonic)."""
        if self._pid != os.getpid():
            self._start()
        self._armed[id(connection)] = _Armed(connection, deadline)
        if not self._wake.is_set():  # at most once a tick: the thread clears it when it looks
            self._wake.set()

    def disarm(self, connection: Any) -> None:
        """The call on ``connection`` ended (either way)."""
        self._armed.pop(id(connection), None)

    @contextmanager
    def bounded(self, connection: Any, deadline: float | None) -> Iterator[None]:
        """Arm ``connection`` for the block when a deadline is given."""
        if deadline is None:
            yield
            return
        self.arm(connection, deadline)
        try:
            yield
        finally:
            self.disarm(connection)

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            self._wake = threading.Event()
            self._armed = {}  # a parent's entries are not this process's calls
            thread = threading.Thread(target=self._run, name="ledger-watchdog", daemon=True)
            self._pid = os.getpid()
            thread.start()

    def _run(self) -> None:
        while True:
            if not self._armed:
                self._wake.wait()
                self._wake.clear()
                continue
            time.sleep(self._tick)
            now = time.monotonic()
            for key, armed in list(self._armed.items()):
                if armed.deadline <= now and self._armed.get(key) is armed:
                    self._expire(key, armed)

    def _expire(self, key: int, armed: _Armed) -> None:
        """Shut the connection's socket down: its blocked call fails at once."""
        self._armed.pop(key, None)
        try:
            fd = armed.connection.fileno()
            sock = socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM)  # a dup: closing it leaves fd open
        except Exception:  # noqa: BLE001 - closed meanwhile: nothing to end
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
            self.fired += 1
            log.warning("a database call passed its deadline: its connection was shut down (it will be retried)")
        except OSError:
            pass  # already disconnected
        finally:
            sock.close()


#: The process's watchdog.
WATCHDOG = Watchdog()


def remaining() -> float | None:
    """Seconds left before this context's call deadline (None when unbounded)."""
    deadline = call_deadline.get()
    return None if deadline is None else deadline - time.monotonic()


@contextmanager
def deadline_of(seconds: float | None) -> Iterator[None]:
    """Database calls in the block end within ``seconds`` (a nested, earlier deadline wins)."""
    if seconds is None:
        yield
        return
    deadline = time.monotonic() + seconds
    outer = call_deadline.get()
    token = call_deadline.set(deadline if outer is None else min(outer, deadline))
    try:
        yield
    finally:
        call_deadline.reset(token)
