"""Remote: the LiteLLM callback sends charges to ``ledger serve`` in batches, from a bounded buffer.

A call's charge is put in a buffer and the callback returns; a background
thread posts the buffer to ``POST /v1/charges/batch`` (captures of reserved
calls to ``POST /v1/reservations/{id}/capture``). What happens to a charge:

- **Acknowledged**: the ledger answered ``recorded`` or ``duplicate``; only
  then is it taken off the buffer's books.
- **Retried**: a connection error, a timeout, 401, 408, 429 or any 5xx, and
  items answered ``failed``, are sent again with the same charge ids, after
  pauses growing to ``max_backoff_seconds``, for as long as the process runs:
  the ledger counts a charge id once, so a retry never counts twice.
- **Rejected**: an item the ledger refuses (invalid, or its id recorded with
  other facts) is logged, counted and spilled (:mod:`.litellm_tally`).
- **Buffer full** (the ledger down for long): the callback waits up to
  ``block_seconds`` for room, then the charge is logged with its fields,
  counted as ``dropped`` and spilled.
- **Closing**: ``close(timeout)`` sends what is buffered; what is still
  unacknowledged at the timeout is logged, counted as ``failed`` and spilled.
"""

from __future__ import annotations

import atexit
import random
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from ledger.errors import BudgetExceeded
from ledger_service.integrations.litellm_budgets import (
    Hold,
    capture_fields,
    held_charge,
)
from ledger_service.integrations.litellm_tally import Tally, log

#: Item statuses of a batch answer that acknowledge the charge.
ACKNOWLEDGED = {"recorded": "recorded", "duplicate": "duplicates"}
#: Whole-request answers worth sending again unchanged.
RETRY_STATUSES = frozenset({401, 408, 429})


@dataclass(frozen=True)
class Pending:
    """A charge waiting for the ledger's acknowledgement (a capture when it has a hold)."""

    charge: dict[str, Any]
    hold: Hold | None = None


class Transient(Exception):
    """The ledger could not answer now: send the same again later."""


class Unavailable(Exception):
    """A reservation could not be asked for (the ledger down, or an unexpected answer)."""


class RemoteLedger:
    """``ledger serve`` at ``url``, reached with an ingest (or admin) key."""

    def __init__(self, url: str, key: str, tally: Tally, *, batch_size: int = 100, buffer_size: int = 10_000,
                 linger_seconds: float = 0.2, block_seconds: float = 5.0, timeout_seconds: float = 10.0,
                 max_backoff_seconds: float = 30.0, client: httpx.Client | None = None) -> None:
        if not 1 <= batch_size <= 1000:
            raise ValueError(f"batch_size: between 1 and 1000 (the server's batch limit), got {batch_size}")
        if buffer_size < batch_size:
            raise ValueError(f"buffer_size: at least batch_size ({batch_size}), got {buffer_size}")
        self.url = url.rstrip("/")
        self.tally = tally
        self.batch_size = batch_size
        self.buffer_size = buffer_size
        self.linger_seconds = linger_seconds
        self.block_seconds = block_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.client = client or httpx.Client(timeout=timeout_seconds)
        self._headers = {"Authorization": f"Bearer {key}"}
        self._queue: deque[Pending] = deque()
        self._in_flight = 0
        self._cond = threading.Condition()
        self._hurry = False
        self._closing = False
        self._give_up_at = float("inf")
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ledger-litellm-sender", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    # -- the callback's side -------------------------------------------------

    def deliver(self, charge: dict[str, Any], hold: Hold | None = None) -> None:
        """Buffer the charge; wait up to ``block_seconds`` for room, then log, count and spill it as dropped."""
        if not self.offer(charge, hold, wait=self.block_seconds):
            why = ("the callback was closed" if self._closing else
                   f"the buffer stayed full ({self.buffer_size} charges) for {self.block_seconds:g} s")
            self.tally.lost("dropped", charge, why)

    def offer(self, charge: dict[str, Any], hold: Hold | None = None, *, wait: float = 0.0) -> bool:
        """Buffer the charge if there is room within ``wait`` seconds; whether it was buffered."""
        end = time.monotonic() + wait
        with self._cond:
            while len(self._queue) >= self.buffer_size and not self._closing:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            if self._closing:
                return False
            self._queue.append(Pending(charge, hold))
            self._cond.notify_all()
        return True

    @property
    def pending(self) -> int:
        """Charges not yet acknowledged: buffered and in flight."""
        with self._cond:
            return len(self._queue) + self._in_flight

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every buffered charge is acknowledged (or refused); False if ``timeout`` came first."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._hurry = True
            self._cond.notify_all()
            try:
                while self._queue or self._in_flight:
                    left = None if end is None else end - time.monotonic()
                    if left is not None and left <= 0:
                        return False
                    self._cond.wait(left)
                return True
            finally:
                self._hurry = False

    def close(self, timeout: float | None = 30.0) -> None:
        """Send what is buffered, for up to ``timeout`` seconds; log, count and spill what is left."""
        with self._cond:
            if self._closing:
                return
        self.flush(timeout)
        with self._cond:
            self._closing = True
            self._give_up_at = time.monotonic()
            self._cond.notify_all()
        self._wake.set()
        self._thread.join(timeout=max(1.0, (timeout or 0) / 2))
        with self._cond:
            left = list(self._queue)
            self._queue.clear()
        for item in left:
            self.tally.lost("failed", item.charge, "the callback closed before the ledger acknowledged it")
        self.client.close()
        atexit.unregister(self.close)

    # -- budgets -------------------------------------------------------------

    def reserve(self, hold: Hold, micros: int, tokens: int, ttl_seconds: int) -> bool:
        """``POST /v1/reservations``; whether the id was reserved before (200, or 409 for other terms).

        Raises ``BudgetExceeded`` on 402, :class:`Unavailable` for any other answer.
        """
        body = {"account_id": hold.account_id, "user_id": hold.user_id, "estimate_micros": micros,
                "estimate_tokens": tokens, "ttl_seconds": ttl_seconds, "reservation_id": hold.reservation_id}
        try:
            answer = self.client.post(f"{self.url}/v1/reservations", json=body, headers=self._headers)
        except httpx.HTTPError as exc:
            raise Unavailable(f"{type(exc).__name__}: {exc}") from exc
        if answer.status_code in (200, 201):
            return answer.status_code == 200
        if answer.status_code == 409 and _names_reservation(answer):
            return True
        problem = _json(answer)
        if answer.status_code == 402 and isinstance(problem, dict):
            figures = {k: v for k, v in problem.items() if k.split("_")[0] in ("limit", "spent", "held", "remaining")}
            raise BudgetExceeded(str(problem.get("budget_id")), figures, int(problem.get("estimate") or micros))
        raise Unavailable(f"HTTP {answer.status_code}: {_detail(answer)}")

    def release(self, hold: Hold) -> None:
        """``POST /v1/reservations/{id}/release``; a failure is logged (the hold lapses at its expiry anyway)."""
        try:
            answer = self.client.post(f"{self.url}/v1/reservations/{quote(hold.reservation_id, safe='')}/release",
                                      headers=self._headers)
        except httpx.HTTPError as exc:
            log.warning("ledger: releasing reservation %s failed (%s); it lapses at its expiry",
                        hold.reservation_id, exc)
            return
        if answer.status_code != 200:
            log.info("ledger: reservation %s not released: HTTP %s %s", hold.reservation_id,
                     answer.status_code, _detail(answer))

    def prices(self) -> None:
        """The catalogue is not served over HTTP: estimates use the configured default."""
        return

    # -- the sender thread ---------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self._send(batch)
            except Exception as exc:  # noqa: BLE001 - a bug must not kill the sender and strand the buffer
                log.exception("ledger: the sender failed unexpectedly: %s", exc)
                for item in batch:
                    self.tally.lost("failed", item.charge, f"the sender failed: {exc}")
            with self._cond:
                self._in_flight = 0
                self._cond.notify_all()

    def _next_batch(self) -> list[Pending] | None:
        with self._cond:
            while not self._queue:
                if self._closing:
                    return None
                self._cond.wait()
            if len(self._queue) < self.batch_size and not (self._hurry or self._closing):
                self._cond.wait(self.linger_seconds)  # let a batch fill
            batch = [self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))]
            self._in_flight = len(batch)
            self._cond.notify_all()
            return batch

    def _send(self, batch: list[Pending]) -> None:
        """Deliver the batch: captures one by one, plain charges in one request; retry what is transient."""
        waiting = batch
        attempt = 0
        while waiting:
            retry: list[Pending] = []
            failures: list[str] = []
            for item in waiting:  # captures one by one: one that fails leaves the others settled
                if item.hold is not None:
                    try:
                        retry += self._capture(item)
                    except Transient as exc:
                        retry.append(item)
                        failures.append(str(exc))
            plain = [item for item in waiting if item.hold is None]
            try:
                retry += self._post_batch(plain) if plain else []
            except Transient as exc:
                retry += plain
                failures.append(str(exc))
            if failures:
                log.warning("ledger: %d charges not delivered yet (%s); retrying", len(retry), failures[-1])
            if retry and time.monotonic() >= self._give_up_at:
                for item in retry:
                    self.tally.lost("failed", item.charge, "the callback closed before the ledger acknowledged it")
                return
            waiting = retry
            if waiting:
                self._pause(attempt)
                attempt += 1

    def _pause(self, attempt: int) -> None:
        delay = random.uniform(0.5, 1.0) * min(self.max_backoff_seconds, 0.1 * 2**attempt)
        self._wake.wait(delay)

    def _post_batch(self, items: list[Pending]) -> list[Pending]:
        """One batch request; the items to send again. Raises :class:`Transient` for the whole."""
        answer = self._post("/v1/charges/batch", {"charges": [item.charge for item in items]})
        if answer.status_code == 413 and len(items) > 1:
            half = len(items) // 2
            return self._post_batch(items[:half]) + self._post_batch(items[half:])
        if answer.status_code != 200:
            return [item for item in items if not self._settled(item, self._post("/v1/charges", item.charge))]
        retry = []
        for item, outcome in zip(items, _json(answer)["outcomes"]):
            status = outcome.get("status")
            if status in ACKNOWLEDGED:
                self.tally.add(ACKNOWLEDGED[status])
            elif status == "failed":
                retry.append(item)
            else:
                self.tally.lost("rejected", item.charge, f"the ledger answered {status}: {outcome.get('errors')}")
        return retry

    def _capture(self, item: Pending) -> list[Pending]:
        assert item.hold is not None
        rid = quote(item.hold.reservation_id, safe="")
        answer = self._post(f"/v1/reservations/{rid}/capture", capture_fields(item.charge, item.hold))
        if answer.status_code in (403, 404, 409) and _names_reservation(answer):
            # Released (a failure was logged first) or unknown: the call happened; record it plainly.
            answer = self._post("/v1/charges", held_charge(item.charge, item.hold))
        return [] if self._settled(item, answer) else [item]

    def _settled(self, item: Pending, answer: httpx.Response) -> bool:
        """Whether a one-charge answer settles the item (acknowledged or refused); raises for a transient whole."""
        if answer.status_code in (200, 201):
            self.tally.add("duplicates" if _json(answer).get("duplicate") else "recorded")
            return True
        if _transient(answer.status_code):
            raise Transient(f"HTTP {answer.status_code}")
        self.tally.lost("rejected", item.charge, f"HTTP {answer.status_code}: {_detail(answer)}")
        return True

    def _post(self, path: str, body: Any) -> httpx.Response:
        try:
            answer = self.client.post(f"{self.url}{path}", json=body, headers=self._headers)
        except httpx.HTTPError as exc:
            raise Transient(f"{type(exc).__name__}: {exc}") from exc
        if _transient(answer.status_code):
            raise Transient(f"HTTP {answer.status_code}: {_detail(answer)}")
        return answer


def _transient(status: int) -> bool:
    return status >= 500 or status in RETRY_STATUSES


def _json(answer: httpx.Response) -> Any:
    try:
        return answer.json()
    except ValueError:
        return {}


def _names_reservation(answer: httpx.Response) -> bool:
    """Whether a refused capture is about the reservation (released, unknown), not the charge."""
    problem = _json(answer)
    errors = problem.get("errors") if isinstance(problem, dict) else None
    return isinstance(errors, list) and any(isinstance(e, dict) and e.get("field") == "reservation_id" for e in errors)


def _detail(answer: httpx.Response) -> str:
    problem = _json(answer)
    if isinstance(problem, dict):
        return str(problem.get("detail") or problem.get("errors") or problem)
    return answer.text[:500]
