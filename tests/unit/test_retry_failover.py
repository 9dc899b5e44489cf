"""The pure parts of retrying through a failover: which errors retry, the libpq timeouts, the watchdog, the error."""

from __future__ import annotations

import socket
import threading
import time

import psycopg2
import psycopg2.errors
import pytest
import sqlalchemy as sa
from eventsourcing import persistence as es

from ledger.backoff import failover_pause
from ledger.errors import ChargeConflict, LedgerError, LedgerUnavailable
from ledger.store.engine import (
    KEEPALIVES,
    persistence_error,
    postgres_connect_args,
    reconnect_needed,
    transient,
)
from ledger.store.watchdog import Watchdog, call_deadline, deadline_of


@pytest.mark.parametrize("error", [
    psycopg2.OperationalError("server closed the connection unexpectedly"),
    psycopg2.InterfaceError("connection already closed"),
    psycopg2.errors.ReadOnlySqlTransaction("cannot execute INSERT in a read-only transaction"),
    psycopg2.errors.AdminShutdown("terminating connection due to administrator command"),
    psycopg2.errors.CannotConnectNow("the database system is starting up"),
    psycopg2.errors.SerializationFailure("could not serialize access"),
    psycopg2.errors.DeadlockDetected("deadlock detected"),
])
def test_failover_errors_are_transient_however_they_are_wrapped(error):
    assert transient(error)
    assert transient(persistence_error(error))  # as the store's own calls raise it
    wrapped = sa.exc.DBAPIError.instance("SELECT 1", {}, error, psycopg2.Error)
    assert transient(wrapped)  # as SQLAlchemy raises it


def test_data_errors_are_not_transient():
    for error in (psycopg2.errors.UniqueViolation("duplicate key"), psycopg2.errors.InvalidTextRepresentation("bad"),
                  ChargeConflict("c-1", {"prompt_tokens": (1, 2)}), ValueError("no")):
        assert not transient(error)
        assert not transient(persistence_error(error) if isinstance(error, psycopg2.Error) else error)
    assert not transient(es.IntegrityError("index race"))


def test_a_read_only_or_shutting_down_server_needs_a_new_connection():
    assert reconnect_needed(persistence_error(psycopg2.errors.ReadOnlySqlTransaction("read-only")))
    assert reconnect_needed(psycopg2.errors.AdminShutdown("terminating connection"))
    assert not reconnect_needed(psycopg2.errors.SerializationFailure("retry the same"))


def test_libpq_timeouts_are_set_unless_the_url_sets_them():
    args = postgres_connect_args("postgresql+psycopg2://postgres@127.0.0.1/db", 4)
    assert args == {"connect_timeout": 4, **KEEPALIVES, "tcp_user_timeout": 10_000}
    own = postgres_connect_args("postgresql+psycopg2://postgres@127.0.0.1/db?connect_timeout=9&keepalives=0", 4)
    assert "connect_timeout" not in own and "keepalives" not in own
    assert "target_session_attrs" not in args


def test_a_multi_host_url_keeps_to_the_writable_host_unless_it_says_otherwise():
    several = "postgresql+psycopg2://postgres@/db?host=127.0.0.1:5433&host=127.0.0.1:5434"
    assert postgres_connect_args(several, 5)["target_session_attrs"] == "read-write"
    chosen = postgres_connect_args(several + "&target_session_attrs=any", 5)
    assert "target_session_attrs" not in chosen


class _Connection:
    """What the watchdog needs of a driver connection: its socket's descriptor."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def fileno(self) -> int:
        return self._sock.fileno()


def test_the_watchdog_ends_a_blocked_read_past_its_deadline():
    """A peer that never answers (as a frozen server): the blocked receive returns once the socket is shut down."""
    ours, peer = socket.socketpair()
    watchdog = Watchdog(tick=0.02)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(ours.recv(10)))
    try:
        watchdog.arm(_Connection(ours), time.monotonic() + 0.1)
        reader.start()
        reader.join(timeout=10)
        assert not reader.is_alive()
        assert received == [b""]
        # The count follows the shutdown that woke the reader: give the watchdog's thread its turn.
        settled = time.monotonic() + 5
        while watchdog.fired == 0 and time.monotonic() < settled:
            time.sleep(0.01)
        assert watchdog.fired == 1
    finally:
        ours.close()
        peer.close()


def test_a_disarmed_call_is_left_alone():
    ours, peer = socket.socketpair()
    watchdog = Watchdog(tick=0.02)
    try:
        connection = _Connection(ours)
        watchdog.arm(connection, time.monotonic() + 0.05)
        watchdog.disarm(connection)
        time.sleep(0.2)
        peer.sendall(b"x")
        assert ours.recv(1) == b"x"
        assert watchdog.fired == 0
    finally:
        ours.close()
        peer.close()


def test_a_nested_deadline_never_extends_the_outer_one():
    with deadline_of(1.0):
        outer = call_deadline.get()
        with deadline_of(60.0):
            assert call_deadline.get() == outer
        with deadline_of(0.5):
            assert call_deadline.get() < outer
        assert call_deadline.get() == outer
    assert call_deadline.get() is None


def test_a_failover_pause_never_outlasts_what_is_left():
    started = time.monotonic()
    failover_pause(10, 0.01)
    assert time.monotonic() - started < 0.5  # bounded by what is left, not by the 1 s cap


def test_ledger_unavailable_says_what_to_do_and_names_the_ids():
    error = LedgerUnavailable(30, ["c-1", "c-2"], "server closed the connection unexpectedly")
    assert isinstance(error, LedgerError)
    assert error.charge_ids == ["c-1", "c-2"]
    text = str(error)
    assert "could not be reached within 30 s" in text
    assert "retried with the same charge id" in text and "'c-1'" in text


def test_a_store_failure_fails_a_shared_batch_at_once_without_trying_each_request_alone():
    """Against a store that is down, trying each request of a failed batch alone would wait once per request."""
    from ledger.group_commit import GroupCommit

    calls: list[int] = []
    leader_in = threading.Event()
    release = threading.Event()

    def append(items, _recorded_at):
        calls.append(len(items))
        if len(calls) == 1:  # the first caller's lone batch holds the store while the others queue
            leader_in.set()
            release.wait(10)
            return list(items)
        raise ConnectionError("the store is down")

    group = GroupCommit(append, window=0, shared_failure=lambda exc: isinstance(exc, ConnectionError))
    errors: list[BaseException] = []

    def submit(item: int) -> None:
        try:
            group.submit([item])
        except ConnectionError as exc:
            errors.append(exc)

    first = threading.Thread(target=submit, args=(0,))
    first.start()
    leader_in.wait(10)
    others = [threading.Thread(target=submit, args=(n,)) for n in range(1, 6)]
    for thread in others:
        thread.start()
    time.sleep(0.2)  # the five queue behind the leader
    release.set()
    for thread in [first, *others]:
        thread.join(10)
    assert calls == [1, 5]  # one shared attempt for the five, none alone
    assert len(errors) == 5
