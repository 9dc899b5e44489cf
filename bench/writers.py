"""Concurrent writers: N processes (each its own Ledger) or N threads sharing one.

Processes come from a fork server (a clean process that imported the ledger
once), so each starts fast and shares no connection with the parent.

Every writer calls ``record_charge`` in a loop, so each charge is durable
before its caller moves on. Writers start together once all are ready
(connections open, accounts cached); the rate is all charges over the span
from the first start to the last finish, read from the system-wide
monotonic clock each writer reports. Each process also reports the CPU it
used while writing (all its threads), and the run reads the machine's busy
time around the writers (:class:`CpuUse`): what the clients cost beside
what the database and everything else on the machine cost, per item.
"""

from __future__ import annotations

import os
import queue
import resource
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import sqlalchemy as sa

from bench import baselines, processes
from ledger import Ledger
from ledger.store.pg_calls import LOCKED

#: Seconds a writer may take to start, or to finish its share.
TIMEOUT = 900.0


@dataclass
class CpuUse:
    """CPU seconds spent while writer processes ran: theirs (every thread) and the whole machine's."""

    items: int = 0
    writers: float = 0.0
    machine: float = 0.0
    measured: bool = True

    def add(self, items: int, writers: float, machine: float | None) -> None:
        self.items += items
        self.writers += writers
        if machine is None:
            self.measured = False
        else:
            self.machine += machine

    def note(self, unit: str = "item", writers: str = "writer processes") -> str:
        """CPU per item: the writers' (``writers`` names them), and the rest of the machine's (the database and all else)."""
        if not self.items or not self.measured:
            return ""
        per = 1e6 / self.items
        rest = max(0.0, self.machine - self.writers)
        return (f"CPU per {unit}: {writers} {self.writers * per:,.0f} µs, "
                f"the rest of the machine (PostgreSQL and all else) {rest * per:,.0f} µs")


def cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    """This process's CPU seconds (user + system, every thread), or with ``RUSAGE_CHILDREN`` its finished children's."""
    use = resource.getrusage(who)
    return use.ru_utime + use.ru_stime


def done(write: Callable[[], tuple[int, float, float]]) -> tuple[Any, ...]:
    """A finished share's message for ``results``: ``("done", items, began, ended, CPU seconds)``.

    ``write()`` does the share and answers (items, began, ended); the CPU is this process's while it ran.
    """
    used = cpu_seconds()
    count, began, ended = write()
    return ("done", count, began, ended, cpu_seconds() - used)


def machine_busy() -> float | None:
    """Seconds every CPU of the machine spent busy since boot (Linux ``/proc/stat``), None elsewhere."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def machine_busy_since(before: float | None) -> float | None:
    """Busy seconds of every CPU since :func:`machine_busy` read ``before`` (None if either is unknown)."""
    now = machine_busy()
    return None if before is None or now is None else now - before


def _warm(ledger: Ledger, items: Sequence[Mapping[str, Any]]) -> None:
    for account in dict.fromkeys(item["account_id"] for item in items):
        ledger.account_totals(account)


def _write(ledger: Ledger, items: Sequence[Mapping[str, Any]]) -> tuple[int, float, float]:
    began = time.monotonic()
    for item in items:
        ledger.record_charge(**item)
    return len(items), began, time.monotonic()


class _LedgerWriter:
    """``record_charge`` per item, on a Ledger of the process's own.

    ``locked``: append as the previous release did, under the events table's
    lock through COMMIT (PostgreSQL), for comparison in the same run.
    """

    def __init__(self, url: str, items: Sequence[Mapping[str, Any]], locked: bool = False) -> None:
        self.ledger = Ledger.from_url(url)
        if locked:
            self.ledger.store.statements = LOCKED  # type: ignore[attr-defined]
        _warm(self.ledger, items)

    def write(self, items: Sequence[Mapping[str, Any]]) -> tuple[int, float, float]:
        return _write(self.ledger, items)

    def close(self) -> None:
        self.ledger.close()


class _InsertWriter:
    """A plain INSERT and COMMIT per item: the raw limit or the replaced CRUD design, as the baselines do it."""

    def __init__(self, url: str, insert: Callable[[sa.engine.Engine, Sequence[Any]], float]) -> None:
        self.engine = sa.create_engine(url)
        with self.engine.connect() as connection:  # the pool holds an open connection before the clock starts
            connection.exec_driver_sql("SELECT 1")
        self.insert = insert

    def write(self, items: Sequence[Mapping[str, Any]]) -> tuple[int, float, float]:
        began = time.monotonic()
        self.insert(self.engine, items)
        return len(items), began, time.monotonic()

    def close(self) -> None:
        self.engine.dispose()


class _PsycopgWriter:
    """The leanest Python client: psycopg2 alone, one INSERT and one COMMIT per raw event row."""

    def __init__(self, url: str) -> None:
        from bench import psycopg_baseline

        self.connection = psycopg_baseline.connect(url)
        self.insert = psycopg_baseline.insert_one_per_commit

    def write(self, items: Sequence[Mapping[str, Any]]) -> tuple[int, float, float]:
        began = time.monotonic()
        self.insert(self.connection, items)
        return len(items), began, time.monotonic()

    def close(self) -> None:
        self.connection.close()


def _writer(kind: str, url: str, items: Sequence[Mapping[str, Any]]) -> Any:
    if kind == "psycopg":
        return _PsycopgWriter(url)
    if kind in ("ledger", "locked"):
        return _LedgerWriter(url, items, locked=kind == "locked")
    if kind == "raw":
        return _InsertWriter(url, baselines.insert_raw_one_per_commit)
    if kind == "crud":
        return _InsertWriter(url, baselines.crud_insert_one_per_call)
    raise ValueError(f"unknown writer kind {kind!r}")


def _process_writer(
    kind: str, url: str, items: list[dict[str, Any]], ready: Any, start: Any, results: Any
) -> None:
    try:
        writer = _writer(kind, url, items)
    except BaseException:
        results.put(("error", traceback.format_exc()))
        return
    ready.put(True)
    start.wait(TIMEOUT)
    try:
        results.put(done(lambda: writer.write(items)))
    except BaseException:
        results.put(("error", traceback.format_exc()))
    finally:
        writer.close()


def in_processes(
    url: str, shares: Sequence[list[dict[str, Any]]], kind: str = "ledger", cpu: CpuUse | None = None
) -> tuple[int, float]:
    """(items written, seconds) with one spawned process per share.

    ``kind``: "ledger" (``record_charge`` per charge), "locked" (the same on
    the previous release's locked append), "raw" (an INSERT and
    COMMIT per raw event row), "psycopg" (the same through psycopg2 alone)
    or "crud" (the same per replaced-design charge row). ``cpu``, when
    given, adds the run's CPU use.
    """
    return run_together("bench.writers", _process_writer, [(kind, url, share) for share in shares], cpu)


def run_together(
    preload: str, target: Callable[..., None], arguments: Sequence[tuple[Any, ...]], cpu: CpuUse | None = None
) -> tuple[int, float]:
    """(items done, seconds) with one forkserver process per ``arguments``, all released at once.

    Each process runs ``target(*its_arguments, ready, start, results)``: it
    puts True on ``ready`` when set up, waits for ``start``, then puts
    ``("done", items, began, ended, cpu_seconds)`` or ``("error", traceback)``
    on ``results``. ``preload`` is the module the children fork with, already
    imported. ``cpu``, when given, adds the writers' CPU seconds and the
    machine's busy seconds from the release to the last result.
    """
    processes.preload([preload])
    context = processes.fork_context()
    ready, start, results = context.Queue(), context.Event(), context.Queue()
    workers = [
        context.Process(target=target, args=(*args, ready, start, results), daemon=True) for args in arguments
    ]
    for worker in workers:
        worker.start()
    try:
        for _ in workers:
            _ready_or_raise(ready, results)
        busy = machine_busy()
        start.set()
        messages = [results.get(timeout=TIMEOUT) for _ in workers]
        machine = machine_busy_since(busy)
        outcomes = [_outcome(message) for message in messages]
        if cpu is not None:
            cpu.add(sum(o[0] for o in outcomes), sum(float(m[4]) for m in messages), machine)
    finally:
        start.set()
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.terminate()
    return _span(outcomes)


def in_threads(url: str, shares: Sequence[list[dict[str, Any]]]) -> tuple[int, float]:
    """(charges recorded, seconds) with one thread per share, all sharing one Ledger."""
    ledger = Ledger.from_url(url)
    try:
        for share in shares:
            _warm(ledger, share)
        return threaded(ledger, shares)
    finally:
        ledger.close()


def threaded(ledger: Ledger, shares: Sequence[list[dict[str, Any]]]) -> tuple[int, float]:
    """(charges recorded, seconds): one thread per share on ``ledger``, released together."""
    barrier = threading.Barrier(len(shares))
    results: queue.Queue[tuple[Any, ...]] = queue.Queue()

    def run(share: list[dict[str, Any]]) -> None:
        barrier.wait()
        try:
            results.put(("done", *_write(ledger, share)))
        except BaseException:
            results.put(("error", traceback.format_exc()))

    threads = [threading.Thread(target=run, args=(share,), daemon=True) for share in shares]
    for thread in threads:
        thread.start()
    outcomes = [_outcome(results.get(timeout=TIMEOUT)) for _ in threads]
    for thread in threads:
        thread.join()
    return _span(outcomes)


def _ready_or_raise(ready: Any, results: Any) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        try:
            ready.get(timeout=0.2)
            return
        except queue.Empty:
            try:
                _outcome(results.get_nowait())
            except queue.Empty:
                continue
    raise TimeoutError("a writer process did not start")


def _outcome(message: tuple[Any, ...]) -> tuple[int, float, float]:
    if message[0] == "error":
        raise RuntimeError(f"writer failed:\n{message[1]}")
    _, count, began, ended = message[:4]
    return int(count), float(began), float(ended)


def _span(outcomes: list[tuple[int, float, float]]) -> tuple[int, float]:
    count = sum(o[0] for o in outcomes)
    return count, max(o[2] for o in outcomes) - min(o[1] for o in outcomes)


def split(items: Sequence[dict[str, Any]], parts: int) -> list[list[dict[str, Any]]]:
    """Deal items round-robin into ``parts`` shares."""
    return [list(items[i::parts]) for i in range(parts)]
