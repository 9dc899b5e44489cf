"""The processes a failover trial runs throughout: writers (one charge, a batch) and the projector.

Run as ``python failover_workers.py KIND PREFIX OUT STOP`` with the ledger's
settings in the environment (``LEDGER_DATABASE_URL`` the formation's
multi-host URL). Each writer records charges until the file STOP exists,
then finishes the call in hand, and writes one JSON line per call to OUT:

* ``{"event": "ack", "ids": [...], "duplicates": [...], "seconds": s, "retry": bool}``:
  the call returned; ``retry`` when an earlier attempt of the same ids raised;
* ``{"event": "raised", "error": name, "ids": [...], "seconds": s, "message": ...}``:
  the call raised; the writer retries the same ids (and the same facts) next;
* ``{"event": "projected", ...}`` / ``{"event": "projector_error", ...}`` for the projector.

A charge the caller gave no id gets the ledger's; when its call raises,
``LedgerUnavailable.charge_ids`` names it and the retry uses it, as a caller should.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

#: The facts of every charge are fixed by its number, so a retry sends exactly the same charge.
OCCURRED_AT = "2026-05-01T12:00:00+00:00"
ACCOUNTS = 5
BATCH = 20
#: After STOP, the call in hand is retried this long at most (the deadline is the ledger's own).
FINISH_SECONDS = 120.0
#: Between calls: a steady load rather than the most the machine can take, so the audit
#: afterwards (it rebuilds every charge) keeps the trial within its few minutes.
PAUSE_SECONDS = 0.005


def charge_fields(prefix: str, number: int, with_id: bool = True) -> dict[str, Any]:
    """The charge numbered ``number`` of writer ``prefix``: its account and tokens follow from the number."""
    fields: dict[str, Any] = {
        "account_id": f"acct-{number % ACCOUNTS}", "user_id": f"user-{number % 3}", "charge_type": "completion",
        "provider": "openai", "model": "gpt-4o", "prompt_tokens": number % 97 + 1,
        "completion_tokens": number % 31, "occurred_at": OCCURRED_AT}
    if with_id:
        fields["charge_id"] = f"{prefix}-{number}"
    return fields


class Journal:
    """One JSON line per call, flushed at once (the process may be killed)."""

    def __init__(self, path: Path) -> None:
        self.file = open(path, "a")  # noqa: SIM115 - open for the process's life

    def write(self, **entry: Any) -> None:
        self.file.write(json.dumps(entry) + "\n")
        self.file.flush()


def record_until_done(journal: Journal, call: Any, ids: list[str | None], stop: Path) -> list[str]:
    """Call until it returns; journal each attempt. Returns the ids recorded (the ledger's when not given)."""
    from ledger.errors import LedgerUnavailable

    raised = False
    first = time.monotonic()
    while True:
        started = time.monotonic()
        try:
            receipts = call(ids)
        except LedgerUnavailable as exc:
            ids = [given or named for given, named in zip(ids, exc.charge_ids or ids, strict=False)]
            journal.write(event="raised", error="LedgerUnavailable", ids=ids,
                          seconds=time.monotonic() - started, message=str(exc)[:300])
        except Exception as exc:  # noqa: BLE001 - anything else is what the trial must see
            journal.write(event="raised", error=type(exc).__name__, ids=ids,
                          seconds=time.monotonic() - started, message=str(exc)[:300])
        else:
            journal.write(event="ack", ids=[r.charge_id for r in receipts],
                          duplicates=[r.charge_id for r in receipts if r.duplicate],
                          seconds=time.monotonic() - started, retry=raised)
            return [r.charge_id for r in receipts]
        raised = True
        if stop.exists() and time.monotonic() - first > FINISH_SECONDS:
            journal.write(event="gave_up", ids=ids)
            return []
        time.sleep(0.2)


def run_single(prefix: str, journal: Journal, stop: Path) -> None:
    """``record_charge`` one at a time; every seventh charge without an id (the ledger gives one)."""
    from ledger import Ledger, Settings

    ledger = Ledger(Settings())
    number = 0
    while not stop.exists():
        number += 1
        fields = charge_fields(prefix, number, with_id=number % 7 != 0)

        def call(ids: list[str | None], fields: dict[str, Any] = fields) -> list[Any]:
            given = {**fields, "charge_id": ids[0]} if ids[0] else fields
            return [ledger.record_charge(**given)]

        recorded = record_until_done(journal, call, [fields.get("charge_id")], stop)
        time.sleep(PAUSE_SECONDS)
        if not fields.get("charge_id") and recorded:
            journal.write(event="generated", number=number, id=recorded[0], account=fields["account_id"],
                          prompt_tokens=fields["prompt_tokens"], completion_tokens=fields["completion_tokens"])
    ledger.close()


def run_batch(prefix: str, journal: Journal, stop: Path) -> None:
    """``record_charges`` of BATCH charges with ids; an item's error is a failure of the trial."""
    from ledger import Ledger, Settings

    ledger = Ledger(Settings())
    number = 0
    while not stop.exists():
        items = [charge_fields(prefix, number + i + 1) for i in range(BATCH)]
        number += BATCH

        def call(ids: list[str | None], items: list[dict[str, Any]] = items) -> list[Any]:
            outcomes = ledger.record_charges(items)
            errors = [o.error for o in outcomes if not o.ok]
            if errors:
                raise errors[0]  # type: ignore[misc]
            return [o.receipt for o in outcomes]

        record_until_done(journal, call, [item["charge_id"] for item in items], stop)
        time.sleep(PAUSE_SECONDS)
    ledger.close()


def run_projector(journal: Journal, stop: Path) -> None:
    """The projector in a loop, as a worker runs it: every failure is journalled and the loop goes on."""
    from ledger import Ledger, Settings
    from projections import Projector

    ledger = Ledger(Settings())
    while not stop.exists():
        started = time.monotonic()
        try:
            applied = Projector(ledger).run()
        except Exception as exc:  # noqa: BLE001 - the loop carries on; the audit proves exactly-once
            journal.write(event="projector_error", error=type(exc).__name__, message=str(exc)[:300],
                          seconds=time.monotonic() - started)
        else:
            journal.write(event="projected", events=applied, seconds=time.monotonic() - started)
        time.sleep(0.3)
    ledger.close()


def main(argv: list[str]) -> None:
    kind, prefix, out, stop = argv
    journal = Journal(Path(out))
    if kind == "single":
        run_single(prefix, journal, Path(stop))
    elif kind == "batch":
        run_batch(prefix, journal, Path(stop))
    elif kind == "projector":
        run_projector(journal, Path(stop))
    else:
        raise SystemExit(f"unknown kind {kind!r}: single, batch or projector")
    journal.write(event="done")


if __name__ == "__main__":
    main(sys.argv[1:])
