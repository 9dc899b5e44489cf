"""Durable group commit: concurrent callers share one transaction.

Callers in one process that arrive while a transaction is being committed
queue up; when it finishes, the oldest of them becomes the leader and
appends everything queued in a single transaction, and each caller returns
only after the transaction holding its charges has committed. Nothing is
acknowledged before it is stored, and a lone caller pays no waiting at all:
it leads its own one-charge batch at once.

The hand-over is pipelined: the finishing leader wakes the next leader
before the callers it committed, so the next transaction is on its way to
the store while those callers return and prepare their next charges. Each
caller sleeps on its own lock and is woken exactly once (to lead or to
return), so a commit costs one wake-up per caller rather than one per
caller per arrival.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Generic, TypeVar

#: What callers submit (charges) and what the append answers per item.
Item = TypeVar("Item")
Result = TypeVar("Result")

AppendFn = Callable[[Sequence[Item], datetime], list[Result]]


class _Request(Generic[Item, Result]):
    """One caller's items, its results once committed, and the lock it sleeps on."""

    __slots__ = ("_wake", "done", "error", "items", "recorded_at", "results")

    def __init__(self, items: Sequence[Item]) -> None:
        self.items = items
        self.results: list[Result] = []
        self.recorded_at: datetime | None = None
        self.error: BaseException | None = None
        self.done = False
        self._wake = threading.Lock()
        self._wake.acquire()

    def sleep(self) -> None:
        """Block until :meth:`wake` (to lead, or because the request is done)."""
        self._wake.acquire()

    def wake(self) -> None:
        self._wake.release()


class GroupCommit(Generic[Item, Result]):
    """Coalesces concurrent ``submit`` calls into shared transactions."""

    def __init__(
        self,
        append: AppendFn[Item, Result],
        max_items: int = 5_000,
        window: float = 0.002,
        *,
        shared_failure: Callable[[BaseException], bool] = lambda _exc: False,
    ) -> None:
        self._append = append
        #: Whether an error is the store's, not one request's data (a lost connection): then every
        #: request of the batch gets it at once, without trying each alone against a store that is down.
        self._shared_failure = shared_failure
        self._max_items = max_items
        self._window = window
        self._last_batch = 1
        self._mutex = threading.Lock()
        self._queue: deque[_Request[Item, Result]] = deque()
        self._leading = False
        #: While the leader gathers: the queue length it waits for, and the
        #: lock (held unless signalled) that the arrival completing it releases.
        self._wanted = 0
        self._arrivals = threading.Lock()
        self._arrivals.acquire()
        #: Transactions run and items appended: for the benchmark and tests.
        self.transactions = 0
        self.items = 0

    def submit(self, items: Sequence[Item]) -> tuple[list[Result], datetime]:
        """Append ``items``; return their results once durably committed."""
        request: _Request[Item, Result] = _Request(items)
        with self._mutex:
            self._queue.append(request)
            follow = self._leading
            self._leading = True
            if self._wanted and len(self._queue) >= self._wanted:
                self._wanted = 0
                self._arrivals.release()
        if follow:
            request.sleep()  # woken done, or at the head of the queue to lead
        if not request.done:
            self._lead()
        if request.error is not None:
            raise request.error
        assert request.recorded_at is not None
        return request.results, request.recorded_at

    def _lead(self) -> None:
        """Commit one batch (this caller's request is its oldest), then hand over."""
        self._gather()
        with self._mutex:
            batch = self._take()
        successor = None
        try:
            self._run(batch)
        finally:
            with self._mutex:
                successor = self._queue[0] if self._queue else None
                self._leading = successor is not None
            if successor is not None:
                successor.wake()  # the next transaction starts while these callers return
            for request in batch[1:]:
                request.wake()

    def _gather(self) -> None:
        """Under load, wait a moment for as many callers as the last batch had.

        A lone caller (last batch of one) commits at once; concurrent callers
        are given at most ``window`` seconds to join, so a transaction's fsync
        is shared by as many of them as keep arriving.
        """
        if self._last_batch <= 1 or self._window <= 0:
            return
        with self._mutex:
            if len(self._queue) >= self._last_batch:
                return
            self._wanted = self._last_batch
        if self._arrivals.acquire(timeout=self._window):
            return  # the arrival that completed the batch cleared ``_wanted``
        with self._mutex:
            if self._wanted:
                self._wanted = 0
            else:  # signalled just as the wait timed out: re-arm the lock
                self._arrivals.acquire()

    def _take(self) -> list[_Request[Item, Result]]:
        """The oldest queued requests, up to the item limit (always at least one)."""
        taken, size = [], 0
        queue = self._queue
        while queue and (not taken or size + len(queue[0].items) <= self._max_items):
            request = queue.popleft()
            taken.append(request)
            size += len(request.items)
        self._last_batch = len(taken)
        return taken

    def _run(self, batch: list[_Request[Item, Result]]) -> None:
        """One transaction for the batch; on failure, each request alone.

        A store error caused by one request's data must not fail its
        neighbours, so a failed shared transaction is retried per request
        and only the request that fails alone gets the error. A failure of
        the store itself (``shared_failure``) goes to every request at once:
        each caller retries it within its own deadline.
        """
        try:
            self._commit(batch)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller it belongs to
            if len(batch) == 1 or self._shared_failure(exc):
                for request in batch:
                    request.error = exc
            else:
                for request in batch:
                    try:
                        self._commit([request])
                    except BaseException as single:  # noqa: BLE001 - raised in its own caller
                        request.error = single
        finally:
            for request in batch:
                request.done = True

    def _commit(self, batch: list[_Request[Item, Result]]) -> None:
        items = [item for request in batch for item in request.items]
        recorded_at = datetime.now(UTC)
        results = self._append(items, recorded_at)
        self.transactions += 1
        self.items += len(items)
        start = 0
        for request in batch:
            request.results = results[start : start + len(request.items)]
            request.recorded_at = recorded_at
            start += len(request.items)
