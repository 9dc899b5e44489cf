"""Concurrent writers: N processes (each its own Ledger) or N threads sharing one.

Processes come from a fork server (a clean process that imported the ledger
once), so each starts fast and shares no connection with the parent.

Every writer calls ``record_charge`` in a loop, so each charge is durable
before its caller moves on. Writers start together once all are ready
(connections open, accounts cached); the rate is all charges over the span
from the first start to the last finish, read from the system-wide
monotonic clock each writer reports.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
import time
import traceback
from typing import Any, Mapping, Sequence

from ledger import Ledger

#: Seconds a writer may take to start, or to finish its share.
TIMEOUT = 900.0


def _warm(ledger: Ledger, items: Sequence[Mapping[str, Any]]) -> None:
    for account in dict.fromkeys(item["account_id"] for item in items):
        ledger.account_totals(account)


def _write(ledger: Ledger, items: Sequence[Mapping[str, Any]]) -> tuple[int, float, float]:
    began = time.monotonic()
    for item in items:
        ledger.record_charge(**item)
    return len(items), began, time.monotonic()


def _process_writer(url: str, items: list[dict[str, Any]], ready: Any, start: Any, results: Any) -> None:
    try:
        ledger = Ledger.from_url(url)
        _warm(ledger, items)
    except BaseException:
        results.put(("error", traceback.format_exc()))
        return
    ready.put(True)
    start.wait(TIMEOUT)
    try:
        results.put(("done", *_write(ledger, items)))
    except BaseException:
        results.put(("error", traceback.format_exc()))
    finally:
        ledger.close()


def in_processes(url: str, shares: Sequence[list[dict[str, Any]]]) -> tuple[int, float]:
    """(charges recorded, seconds) with one spawned process per share."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["bench.writers"])  # children fork with the ledger imported
    ready, start, results = context.Queue(), context.Event(), context.Queue()
    workers = [
        context.Process(target=_process_writer, args=(url, share, ready, start, results), daemon=True)
        for share in shares
    ]
    for worker in workers:
        worker.start()
    try:
        for _ in workers:
            _ready_or_raise(ready, results)
        start.set()
        outcomes = [_outcome(results.get(timeout=TIMEOUT)) for _ in workers]
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
    _, count, began, ended = message
    return int(count), float(began), float(ended)


def _span(outcomes: list[tuple[int, float, float]]) -> tuple[int, float]:
    count = sum(o[0] for o in outcomes)
    return count, max(o[2] for o in outcomes) - min(o[1] for o in outcomes)


def split(items: Sequence[dict[str, Any]], parts: int) -> list[list[dict[str, Any]]]:
    """Deal items round-robin into ``parts`` shares."""
    return [list(items[i::parts]) for i in range(parts)]
