"""What became of each call the LiteLLM callback saw: counted, logged, and kept when it could not be delivered.

Billing must not lose a call quietly. Every call ends in one counter; one
that did not reach the ledger (no account, refused, or undeliverable) is
also logged as an error line carrying its charge as JSON, and appended to
the spill file when one is configured: a JSON Lines file of charge fields
that ``ledger import`` records, each charge id once.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

log = logging.getLogger("ledger_service.integrations.litellm")


@dataclass
class Counts:
    """How many calls ended each way, since the callback started."""

    #: Charges the ledger acknowledged as new (captures included).
    recorded: int = 0
    #: Charges the ledger acknowledged as already recorded (a retry, a re-logged response).
    duplicates: int = 0
    #: Calls with no resolvable account: logged, spilled, not recorded.
    unresolved: int = 0
    #: Charges the ledger refused (invalid, or the id recorded with other facts): logged, spilled.
    rejected: int = 0
    #: Charges that could not be delivered in time (ledger down past the deadline): logged, spilled;
    #: and calls the callback itself failed on (logged with the traceback).
    failed: int = 0
    #: Remote mode: charges that found the buffer full past ``block_seconds``: logged, spilled.
    dropped: int = 0
    #: Cache hits not charged (the provider was not called), unless ``charge_cache_hits``.
    cache_hits: int = 0
    #: Reservations made before calls (budget enforcement).
    reserved: int = 0
    #: Calls refused by a budget.
    refused: int = 0
    #: Holds released after a failed call.
    released: int = 0
    #: Calls let through unreserved because the ledger could not be asked (``budget_unavailable="allow"``).
    unreserved: int = 0


class Tally:
    """The callback's counters (thread-safe) and its record of undelivered charges."""

    def __init__(self, spill_path: str | Path | None = None) -> None:
        self._counts = Counts()
        self._lock = threading.Lock()
        self.spill_path = Path(spill_path) if spill_path is not None else None

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self._counts, name, getattr(self._counts, name) + n)

    def snapshot(self) -> Counts:
        """A copy of the counters now."""
        with self._lock:
            return Counts(**{f.name: getattr(self._counts, f.name) for f in fields(Counts)})

    def lost(self, counter: str, charge: dict[str, Any], why: str) -> None:
        """A charge that did not reach the ledger: counted, logged with its fields, spilled."""
        self.add(counter)
        text = json.dumps(charge, sort_keys=True, default=str)
        where = self._spill(text)
        log.error("ledger: LiteLLM call not recorded (%s): %s; charge %s%s", counter, why, text,
                  f"; appended to {where} (ledger import it)" if where else "")

    def _spill(self, line: str) -> Path | None:
        if self.spill_path is None:
            return None
        try:
            with self._lock, self.spill_path.open("a", encoding="utf-8") as spill:
                spill.write(line + "\n")
        except OSError as exc:
            log.error("ledger: cannot append to the spill file %s: %s", self.spill_path, exc)
            return None
        return self.spill_path
