"""Fill a ledger's log fast: the ledger's own events, written many thousand per transaction.

Projection, rebuild and compaction need a big log; recording it through
``record_charges`` would dominate the run. This builds the very events the
ledger stores (``Account`` event classes applied to an in-memory aggregate,
encoded by ``ledger.mapper`` exactly as ``save`` encodes them), inserts them
and their charge-id index rows with SQLAlchemy Core, and snapshots every
account at the end, so the store is one the ledger itself could have
written. Every ``reverse_every``-th charge is reversed, so projections also
meet reversals.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from itertools import islice
from typing import Any, Iterable, Iterator, Mapping

import sqlalchemy as sa

from bench.workload import Tally
from ledger import Account, Ledger
from ledger.charges import payload_hash
from ledger.store.schema import charge_index


def seed_log(
    ledger: Ledger,
    items: Iterable[Mapping[str, Any]],
    *,
    batch_size: int = 10_000,
    reverse_every: int = 0,
) -> Tally:
    """Append ``items`` as charges (and some reversals); the net totals they add up to."""
    events_table = ledger.store.events_table
    engine = ledger.store.engine
    assert isinstance(engine, sa.engine.Engine)
    to_stored = ledger.mapper.to_stored_event
    accounts: dict[str, Account] = {}
    tally = Tally()
    number = 0
    for batch in _chunks(items, batch_size):
        now = datetime.now(timezone.utc)
        events: list[Any] = []
        rows: list[dict[str, Any]] = []
        for raw in batch:
            facts = _facts(raw)
            account = accounts.get(facts["account_id"])
            if account is None:
                account = accounts[facts["account_id"]] = Account(account_id=facts["account_id"])
                events.extend(account.collect_events())
            events.append(_apply(account, Account.ChargeRecorded, now, facts, recorded_at=now,
                                 user_profile_id=None, session_key=raw.get("session_key"), reference=raw.get("reference"),
                                 cost_micros=None, price_version=None))
            number += 1
            tally.add(raw)
            reversed_at = None
            if reverse_every and number % reverse_every == 0:
                events.append(_apply(account, Account.ChargeReversed, now, facts, reason="bench", recorded_at=now,
                                     cost_micros=None, price_version=None))
                tally.add(raw, -1)
                reversed_at = now
            rows.append(_index_row(raw, facts, now, reversed_at))
        stored = [to_stored(event) for event in events]
        with engine.begin() as connection:
            connection.execute(
                events_table.insert(),
                [
                    {"originator_id": s.originator_id, "originator_version": s.originator_version,
                     "topic": s.topic, "state": s.state}
                    for s in stored
                ],
            )
            connection.execute(charge_index.insert(), rows)
    assert ledger.snapshots is not None
    ledger.snapshots.put([Account.Snapshot.take(account) for account in accounts.values()])
    return tally


def _facts(raw: Mapping[str, Any]) -> dict[str, Any]:
    prompt, completion = int(raw["prompt_tokens"]), int(raw["completion_tokens"])
    return {
        "charge_id": raw["charge_id"],
        "account_id": raw["account_id"],
        "user_id": raw["user_id"],
        "charge_type": raw["charge_type"],
        "provider": raw.get("provider"),
        "model": raw.get("model"),
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "occurred_at": raw["occurred_at"].astimezone(timezone.utc),
    }


def _apply(account: Account, event_class: Any, now: datetime, facts: dict[str, Any], **more: Any) -> Any:
    """The event the aggregate method would trigger, applied to the aggregate."""
    event = event_class(originator_id=account.id, originator_version=account.version + 1, timestamp=now, **facts, **more)
    event.mutate(account)
    return event


def _index_row(raw: Mapping[str, Any], facts: dict[str, Any], now: datetime, reversed_at: datetime | None) -> dict[str, Any]:
    """The charge-id index row, with the payload format of ``Charge.payload``."""
    payload = {
        **facts,
        "occurred_at": facts["occurred_at"].isoformat(),
        "user_profile_id": None,
        "session_key": raw.get("session_key"),
        "reference": raw.get("reference"),
    }
    return {
        "charge_id": facts["charge_id"],
        "account_id": facts["account_id"],
        "payload_hash": payload_hash(payload),
        "payload": json.dumps(payload, sort_keys=True, separators=(",", ":")),
        "recorded_at": now,
        "reversed_at": reversed_at,
    }


def _chunks(items: Iterable[Mapping[str, Any]], size: int) -> Iterator[list[Mapping[str, Any]]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def fingerprint(records: list[dict[str, Any]]) -> str:
    """A digest of report rows, to prove they did not change."""
    text = json.dumps(records, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()
