"""The SQLite store: one writer at a time, so appends write the log directly.

An append's transaction begins with BEGIN IMMEDIATE (the write lock, see
:mod:`ledger.store.engine`): it checks the price catalogue is still the one
the batch was costed with, answers ids the index knows, numbers each new
charge after its account's stream, and inserts the index row (with the
typed columns budgets sum, see :mod:`ledger.store.spend`) and the event.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from typing import Any

from ledger.store.base import Appended, ChargeBatch, StaleCatalogue
from ledger.store.recorder import LedgerRecorder

#: How SQLite numbers an account's stream: its next event follows the highest
#: version in its events or its snapshots (an account whose events compaction
#: pruned continues after its snapshot); 0 means it has no stream yet, so its
#: Opened event takes version 1 and its first charge version 2.
STREAM_VERSION = (
    "SELECT max(coalesce((SELECT max(originator_version) FROM ledger_events WHERE originator_id = ?1), 0), "
    "coalesce((SELECT max(originator_version) FROM ledger_snapshots WHERE originator_id = ?1), 0))"
)
_CATALOGUE_VERSION = "SELECT coalesce(max(originator_version), 0) FROM ledger_events WHERE originator_id = ?"
_KNOWN = "SELECT payload, recorded_at FROM ledger_charge_index WHERE account_id = ? AND charge_id = ?"
_INSERT_EVENT = "INSERT INTO ledger_events (originator_id, originator_version, topic, state) VALUES (?, ?, ?, ?)"
_INSERT_INDEX_ROW = (
    "INSERT INTO ledger_charge_index (account_id, charge_id, payload_hash, payload, recorded_at, "
    "user_id, occurred_at, cost_micros, total_tokens) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class SQLiteStore(LedgerRecorder):
    """The store on SQLite (the recorder's shared behaviour, and this direct append)."""

    def append(self, batch: ChargeBatch) -> list[Appended]:
        """Append in one write transaction; per charge, where it landed or what was known."""
        stamp = _sqlite_datetime(batch.recorded_at)
        opened = {account: state for account, state in zip(batch.account_ids, batch.opened_states) if state}
        topics = self.topics
        results: list[Appended] = []
        with self.transaction(commit=True) as session:
            cursor: sqlite3.Cursor = session.connection().connection.cursor()  # type: ignore[assignment]
            head = cursor.execute(_CATALOGUE_VERSION, (topics.catalogue_id.bytes,)).fetchone()[0]
            if head != batch.catalogue_version:
                raise StaleCatalogue(head)
            for charge_id, account_id, originator, digest, payload, state, user_id, occurred, cost, tokens in zip(
                batch.charge_ids, batch.account_ids, batch.originators, batch.hashes, batch.payloads, batch.states,
                batch.user_ids, batch.occurred_ats, batch.costs, batch.tokens, strict=True,
            ):
                row = cursor.execute(_KNOWN, (account_id, charge_id)).fetchone()
                if row is not None:
                    results.append(Appended(None, json.loads(row[0]), _parse_sqlite_datetime(row[1])))
                    continue
                key = originator.bytes
                version = cursor.execute(STREAM_VERSION, (key,)).fetchone()[0]
                if version == 0:
                    cursor.execute(_INSERT_EVENT, (key, 1, topics.account_opened, opened[account_id]))
                    version = 1
                cursor.execute(_INSERT_INDEX_ROW, (
                    account_id, charge_id, digest, payload, stamp, user_id, _sqlite_datetime(occurred), cost, tokens
                ))
                cursor.execute(_INSERT_EVENT, (key, version + 1, topics.charge_recorded, state))
                results.append(Appended(position=cursor.lastrowid))
        return results


def _sqlite_datetime(value: datetime) -> str:
    """SQLAlchemy's SQLite DATETIME text form (naive UTC), so both paths read alike."""
    return value.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def _parse_sqlite_datetime(value: Any) -> datetime | None:
    if value is None:
        return None
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)
