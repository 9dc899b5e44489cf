"""Durable group commit: concurrent callers share one transaction.

Callers in one process that arrive while a transaction is being committed
queue up; when it finishes, one of them (the leader) appends everything
queued in a single transaction, and each caller returns only after the
transaction holding its charges has committed. Nothing is acknowledged
before it is stored, and a lone caller pays no waiting at all: it leads
its own one-charge batch at once.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

AppendFn = Callable[[Sequence[Any], datetime], list[Any]]


@dataclass(eq=False)
class _Request:
    items: Sequence[Any]
    done: bool = False
    results: list[Any] = field(default_factory=list)
    recorded_at: datetime | None = None
    error: BaseException | None = None


class GroupCommit:
    """Coalesces concurrent ``submit`` calls into shared transactions."""

    def __init__(self, append: AppendFn, max_items: int = 5_000, window: float = 0.002) -> None:
        self._append = append
        self._max_items = max_items
        self._window = window
        self._last_batch = 1
        self._cond = threading.Condition()
        self._queue: list[_Request] = []
        self._leading = False
        #: Transactions run and items appended: for the benchmark and tests.
        self.transactions = 0
        self.items = 0

    def submit(self, items: Sequence[Any]) -> tuple[list[Any], datetime]:
        """Append ``items``; return their results once durably committed."""
        request = _Request(items)
        with self._cond:
            self._queue.append(request)
            if self._leading:
                self._cond.notify_all()  # a leader may be gathering a batch
            while not request.done:
                if self._leading:
                    self._cond.wait()
                    continue
                self._leading = True
                self._gather()
                batch = self._take()
                self._cond.release()
                try:
                    self._run(batch)
                finally:
                    self._cond.acquire()
                    self._leading = False
                    self._cond.notify_all()
        if request.error is not None:
            raise request.error
        assert request.recorded_at is not None
        return request.results, request.recorded_at

    def _gather(self) -> None:
        """Under load, wait a moment for as many callers as the last batch had.

        A lone caller (last batch of one) commits at once; concurrent callers
        are given at most ``window`` seconds to join, so a transaction's fsync
        is shared by as many of them as keep arriving.
        """
        if self._last_batch <= 1 or self._window <= 0:
            return
        deadline = time.monotonic() + self._window
        while len(self._queue) < self._last_batch:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._cond.wait(remaining)

    def _take(self) -> list[_Request]:
        """The oldest queued requests, up to the item limit (always at least one)."""
        taken, size = [], 0
        while self._queue and (not taken or size + len(self._queue[0].items) <= self._max_items):
            request = self._queue.pop(0)
            taken.append(request)
            size += len(request.items)
        self._last_batch = len(taken)
        return taken

    def _run(self, batch: list[_Request]) -> None:
        """One transaction for the batch; on failure, each request alone.

        A store error caused by one request's data must not fail its
        neighbours, so a failed shared transaction is retried per request
        and only the request that fails alone gets the error.
        """
        try:
            self._commit(batch)
        except BaseException as exc:
            if len(batch) == 1:
                batch[0].error = exc
            else:
                for request in batch:
                    try:
                        self._commit([request])
                    except BaseException as single:
                        request.error = single
        finally:
            for request in batch:
                request.done = True

    def _commit(self, batch: list[_Request]) -> None:
        items = [item for request in batch for item in request.items]
        recorded_at = datetime.now(timezone.utc)
        results = self._append(items, recorded_at)
        self.transactions += 1
        self.items += len(items)
        start = 0
        for request in batch:
            request.results = results[start : start + len(request.items)]
            request.recorded_at = recorded_at
            start += len(request.items)
