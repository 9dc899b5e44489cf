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
#: Ticks with nothing armed and no call made before the thread sleeps until the next arm.
IDLE_TICKS = 25

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
        #: Sockets shut down so far (for tests and logs), and calls armed so far.
        self.fired = 0
        self._arms = 0

    def arm(self, connection: Any, deadline: float) -> None:
        """Bound the call about to run on ``connection`` (a psycopg2 connection) by ``deadline`` (monotonic)."""
        if self._pid != os.getpid():
            self._start()
        self._armed[id(connection)] = _Armed(connection, deadline)  # before the check below (see _run)
        self._arms += 1
        if not self._wake.is_set():  # only when the thread went idle: it clears the flag just before
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
        """Tick while calls are being made; after a quiet spell, sleep until the next arm.

        The wake flag stays set while the thread ticks, so an arm costs no
        wake-up. Before sleeping the thread clears the flag, then looks at
        the armed calls again: an arm stores its entry before it tests the
        flag, so either the thread sees the entry or the arm sets the flag.
        """
        idle, seen = 0, -1
        while True:
            if idle >= IDLE_TICKS:
                self._wake.clear()
                if not self._armed:
                    self._wake.wait()
                idle = 0
            time.sleep(self._tick)
            now = time.monotonic()
            for key, armed in self._armed.copy().items():  # a copy: callers arm and disarm meanwhile
                if armed.deadline <= now and self._armed.get(key) is armed:
                    self._expire(key, armed)
            quiet = not self._armed and self._arms == seen
            idle, seen = (idle + 1 if quiet else 0), self._arms

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


class deadline_of:  # lower case: used like a function, ``with deadline_of(seconds):``
    """Database calls in the block end within ``seconds`` (a nested, earlier deadline wins; None: no bound).

    A class rather than a generator: it sits on every recording call.
    """

    __slots__ = ("_seconds", "_token")

    def __init__(self, seconds: float | None) -> None:
        self._seconds = seconds
        self._token: contextvars.Token[float | None] | None = None

    def __enter__(self) -> None:
        if self._seconds is None:
            return
        deadline = time.monotonic() + self._seconds
        outer = call_deadline.get()
        self._token = call_deadline.set(deadline if outer is None or deadline < outer else outer)

    def __exit__(self, *_exc: object) -> None:
        if self._token is not None:
            call_deadline.reset(self._token)
            self._token = None
