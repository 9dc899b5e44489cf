"""In process: the LiteLLM callback records, reserves, captures and releases through a ``Ledger``.

A charge is acknowledged when the callback returns (the ledger's receipt
means durable). A store that fails (the database unreachable, writers
conflicting) is retried with growing pauses until the deadline
(``retry_deadline_seconds`` of the ledger's settings by default); past it the
charge is logged, counted as ``failed`` and spilled (:mod:`.litellm_tally`).
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Any

from ledger.errors import (
    ChargeConflict,
    InvalidInput,
    LedgerError,
    ReservationConflict,
    UnknownReservation,
)
from ledger_service.integrations.litellm_budgets import (
    Hold,
    capture_fields,
    held_charge,
)
from ledger_service.integrations.litellm_tally import Tally, log

if TYPE_CHECKING:
    from ledger import Ledger, Receipt
    from ledger.pricing import PriceTable

#: Refresh the catalogue for estimates at most this often.
PRICES_MAX_AGE_SECONDS = 60.0


class LocalLedger:
    """The ledger in this process, as the callback's destination."""

    def __init__(self, ledger: Ledger, tally: Tally, *, deadline_seconds: float | None = None) -> None:
        self.ledger = ledger
        self.tally = tally
        self.deadline_seconds = (ledger.settings.retry_deadline_seconds if deadline_seconds is None
                                 else deadline_seconds)
        self._prices_read = 0.0

    def deliver(self, charge: dict[str, Any], hold: Hold | None = None) -> None:
        """Record the charge (capture it, for a reserved call) now; retry a failing store until the deadline."""
        end = time.monotonic() + self.deadline_seconds
        attempt = 0
        while True:
            try:
                receipt = self._once(charge, hold)
            except (InvalidInput, ChargeConflict) as exc:
                self.tally.lost("rejected", charge, str(exc))
                return
            except Exception as exc:  # noqa: BLE001 - the store failed (BusyAccount, a lost connection): retry
                if isinstance(exc, LedgerError) and not _transient(exc):
                    self.tally.lost("rejected", charge, str(exc))
                    return
                left = end - time.monotonic()
                if left <= 0:
                    self.tally.lost("failed", charge, f"the ledger kept failing for {self.deadline_seconds:g} s: {exc}")
                    return
                log.warning("ledger: recording charge %s failed (%s); retrying", charge.get("charge_id"), exc)
                time.sleep(min(left, random.uniform(0.5, 1.0) * min(5.0, 0.1 * 2**attempt)))
                attempt += 1
                continue
            self.tally.add("duplicates" if receipt.duplicate else "recorded")
            return

    def _once(self, charge: dict[str, Any], hold: Hold | None) -> Receipt:
        if hold is None:
            return self.ledger.record_charge(**charge)
        try:
            return self.ledger.capture(hold.reservation_id, **capture_fields(charge, hold))
        except (UnknownReservation, ReservationConflict) as exc:
            # Released (a failure was logged first) or expired and swept: the call happened all the same.
            log.info("ledger: reservation %s not capturable (%s); recording the charge without it",
                     hold.reservation_id, exc)
            return self.ledger.record_charge(**held_charge(charge, hold))

    def reserve(self, hold: Hold, micros: int, tokens: int, ttl_seconds: int) -> bool:
        """Hold the estimate; whether the id was reserved before. Raises ``BudgetExceeded`` (or ``ReservationConflict``)."""
        return self.ledger.reserve(hold.account_id, user_id=hold.user_id, estimate_micros=micros, estimate_tokens=tokens,
                            ttl_seconds=ttl_seconds, reservation_id=hold.reservation_id).duplicate

    def release(self, hold: Hold) -> None:
        try:
            self.ledger.release(hold.reservation_id)
        except (UnknownReservation, ReservationConflict) as exc:  # captured meanwhile, or never made: nothing held
            log.info("ledger: reservation %s not released: %s", hold.reservation_id, exc)

    def prices(self) -> PriceTable | None:
        """The catalogue for estimates, re-read at most once a minute."""
        refresh = time.monotonic() - self._prices_read > PRICES_MAX_AGE_SECONDS
        if refresh:
            self._prices_read = time.monotonic()
        return self.ledger.price_table(refresh=refresh)

    def flush(self, timeout: float | None = None) -> bool:
        """Nothing is buffered in process: every charge was settled when its callback returned."""
        return True

    def close(self, timeout: float | None = None) -> None:
        """The ledger is the caller's: it stays open."""


def _transient(exc: LedgerError) -> bool:
    from ledger.errors import BusyAccount

    return isinstance(exc, BusyAccount)
