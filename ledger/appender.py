"""The append path for charges: one short transaction, few round trips.

Recording a charge needs no account state to decide (validation is done, and
any valid charge may be appended), only the account's next version and the
charge-id index. So the hot path does not load the aggregate: under the
store's append lock it answers known ids from the index, takes the next
version from the stored stream, and inserts the index row and the event.
Events are encoded by the application's mapper exactly as ``save`` would,
so aggregates, projections and audits read them like any other.

PostgreSQL runs the whole batch in one server-side function call (one round
trip, then COMMIT); SQLite runs the same steps on its in-process connection.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Sequence
from uuid import UUID

import orjson
import sqlalchemy as sa
from eventsourcing.persistence import JSONTranscoder

from ledger.charges import Charge, canonical_json
from ledger.domain import ACCOUNT_OPENED_TOPIC as OPENED_TOPIC
from ledger.domain import CHARGE_RECORDED_TOPIC as CHARGE_TOPIC
from ledger.domain import Account, account_uuid
from ledger.errors import BusyAccount
from ledger.pricing import CATALOGUE_ID, PriceTable

#: (cost_micros, price_version) of one charge; (None, None) when unpriced.
Cost = tuple["int | None", "int | None"]

#: Re-costing attempts when prices change under a batch (each a price set).
STALE_CATALOGUE_RETRIES = 20


class StaleCatalogue(Exception):
    """A price was set after the batch was costed: nothing was appended."""

#: PostgreSQL: lock, look up, number, insert; one call per batch.
PG_APPEND_FUNCTION = """
CREATE OR REPLACE FUNCTION ledger_append_charges(
    p_charge_ids text[], p_account_ids text[], p_originators uuid[], p_hashes text[],
    p_payloads text[], p_states bytea[], p_opened_states bytea[], p_recorded_at timestamptz,
    p_topic text, p_opened_topic text, p_catalogue_id uuid, p_catalogue_version bigint
) RETURNS TABLE(idx integer, known_payload text, known_recorded_at timestamptz, notification_id bigint)
LANGUAGE plpgsql AS $$
DECLARE
    i integer;
    v bigint;
    s bigint;
    found_payload text;
    found_recorded_at timestamptz;
BEGIN
    LOCK TABLE ledger_events IN EXCLUSIVE MODE;
    -- Costs were computed with catalogue version p_catalogue_version: if a
    -- price was set since, append nothing and say so (idx 0) so the caller
    -- re-costs with the new catalogue.
    SELECT max(e.originator_version) INTO v FROM ledger_events e WHERE e.originator_id = p_catalogue_id;
    IF coalesce(v, 0) <> p_catalogue_version THEN
        idx := 0; known_payload := NULL; known_recorded_at := NULL; notification_id := coalesce(v, 0);
        RETURN NEXT;
        RETURN;
    END IF;
    FOR i IN 1 .. coalesce(array_length(p_charge_ids, 1), 0) LOOP
        SELECT c.payload, c.recorded_at INTO found_payload, found_recorded_at
            FROM ledger_charge_ids c WHERE c.charge_id = p_charge_ids[i];
        IF FOUND THEN
            idx := i; known_payload := found_payload; known_recorded_at := found_recorded_at;
            notification_id := NULL;
            RETURN NEXT;
            CONTINUE;
        END IF;
        SELECT max(e.originator_version) INTO v FROM ledger_events e
            WHERE e.originator_id = p_originators[i];
        SELECT max(n.originator_version) INTO s FROM ledger_snapshots n
            WHERE n.originator_id = p_originators[i];
        v := greatest(coalesce(v, 0), coalesce(s, 0));
        IF v = 0 THEN
            INSERT INTO ledger_events (originator_id, originator_version, topic, state)
                VALUES (p_originators[i], 1, p_opened_topic, p_opened_states[i]);
            v := 1;
        END IF;
        INSERT INTO ledger_charge_ids (charge_id, account_id, payload_hash, payload, recorded_at)
            VALUES (p_charge_ids[i], p_account_ids[i], p_hashes[i], p_payloads[i], p_recorded_at);
        INSERT INTO ledger_events (originator_id, originator_version, topic, state)
            VALUES (p_originators[i], v + 1, p_topic, p_states[i])
            RETURNING ledger_events.id INTO notification_id;
        idx := i; known_payload := NULL; known_recorded_at := NULL;
        RETURN NEXT;
    END LOOP;
    -- As the library's recorder does, for subscribers (delivered at commit).
    NOTIFY ledger_events;
END;
$$;
"""


@dataclass(frozen=True, slots=True)
class Appended:
    """One charge's fate: stored now at ``position`` (with its cost), or already known."""

    position: int | None = None
    known_payload: dict[str, Any] | None = None
    known_recorded_at: datetime | None = None
    cost: Cost = (None, None)

    @property
    def known(self) -> bool:
        return self.known_payload is not None


class Appender:
    """Appends validated charges for a :class:`~ledger.Ledger` (same store, same mapper)."""

    def __init__(self, ledger: Any) -> None:
        self.ledger = ledger
        self.mapper = ledger.mapper
        engine = ledger.recorder.datastore.engine
        self.is_postgres = engine.dialect.name == "postgresql"
        self._opened_state_cache: dict[str, bytes] = {}
        self._direct = (
            isinstance(self.mapper.transcoder, JSONTranscoder)
            and self.mapper.cipher is None
            and self.mapper.compressor is None
        )

    @staticmethod
    def install(connection: sa.engine.Connection) -> None:
        """Create or replace the server-side function (PostgreSQL only)."""
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(PG_APPEND_FUNCTION)

    # -- encoding ------------------------------------------------------------

    def charge_state(
        self, charge: Charge, originator_id: UUID, recorded_at: datetime, cost: Cost = (None, None)
    ) -> bytes:
        """The stored state of a ChargeRecorded event, as ``Application.save`` writes it.

        With the plain JSON transcoder (no cipher, no compressor) the state is
        built directly, byte for byte what the mapper writes (a test holds the
        two equal); otherwise the event goes through the mapper.
        """
        if not self._direct:
            return self.mapper.to_stored_event(
                self._charge_event(charge, originator_id, recorded_at, cost)
            ).state
        stamp = {"_type_": "datetime_iso", "_data_": recorded_at.isoformat()}
        return orjson.dumps(
            {
                "timestamp": stamp,
                "charge_id": charge.charge_id,
                "account_id": charge.account_id,
                "user_id": charge.user_id,
                "charge_type": charge.charge_type,
                "provider": charge.provider,
                "model": charge.model,
                "prompt_tokens": charge.prompt_tokens,
                "completion_tokens": charge.completion_tokens,
                "total_tokens": charge.total_tokens,
                "occurred_at": {"_type_": "datetime_iso", "_data_": charge.occurred_at.isoformat()},
                "recorded_at": stamp,
                "user_profile_id": charge.user_profile_id,
                "session_key": charge.session_key,
                "reference": charge.reference,
                "cost_micros": cost[0],
                "price_version": cost[1],
            }
        )

    @staticmethod
    def _charge_event(charge: Charge, originator_id: UUID, recorded_at: datetime, cost: Cost) -> Any:
        return Account.ChargeRecorded(  # type: ignore[attr-defined]
            originator_id=originator_id,
            originator_version=0,  # a column, not state: the store numbers it
            timestamp=recorded_at,
            charge_id=charge.charge_id,
            account_id=charge.account_id,
            user_id=charge.user_id,
            charge_type=charge.charge_type,
            provider=charge.provider,
            model=charge.model,
            prompt_tokens=charge.prompt_tokens,
            completion_tokens=charge.completion_tokens,
            total_tokens=charge.total_tokens,
            occurred_at=charge.occurred_at,
            recorded_at=recorded_at,
            user_profile_id=charge.user_profile_id,
            session_key=charge.session_key,
            reference=charge.reference,
            cost_micros=cost[0],
            price_version=cost[1],
        )

    def opened_state(self, account_id: str) -> bytes:
        """The stored state of an account's Opened event (used when it has no stream yet)."""
        state = self._opened_state_cache.get(account_id)
        if state is None:
            (opened,) = Account(account_id=account_id).collect_events()
            state = self.mapper.to_stored_event(opened).state
            if len(self._opened_state_cache) < 100_000:
                self._opened_state_cache[account_id] = state
        return state

    # -- appending -----------------------------------------------------------

    def append(self, charges: Sequence[Charge], recorded_at: datetime) -> list[Appended]:
        """Append in one transaction; per charge, where it landed or what was known.

        Each charge is costed with the catalogue as the ledger last read it;
        under the append lock the store confirms that catalogue is still the
        latest, else the batch is re-costed with the new one and tried again,
        so a charge is never costed with a price set before it was stored
        but missed.
        """
        for _ in range(STALE_CATALOGUE_RETRIES):
            prices = self.ledger.price_table()
            try:
                return self._append_costed(charges, prices, recorded_at)
            except StaleCatalogue:
                self.ledger.price_table(refresh=True)
        raise BusyAccount("prices kept changing while the charges were costed; nothing was stored, retry")

    def _append_costed(
        self, charges: Sequence[Charge], prices: PriceTable, recorded_at: datetime
    ) -> list[Appended]:
        originators = [account_uuid(c.account_id) for c in charges]
        costs = [prices.cost(c) for c in charges]
        states = [self.charge_state(c, o, recorded_at, k) for c, o, k in zip(charges, originators, costs)]
        facts = [c.payload() for c in charges]
        payloads = [
            canonical_json({**f, "cost_micros": k[0], "price_version": k[1]}) for f, k in zip(facts, costs)
        ]
        hashes = [c.payload_hash(f) for c, f in zip(charges, facts)]
        append = self._append_postgres if self.is_postgres else self._append_sqlite
        results = append(charges, originators, states, payloads, hashes, recorded_at, prices.version)
        return [
            Appended(r.position, cost=k) if r.position is not None else r for r, k in zip(results, costs)
        ]

    def _append_postgres(self, charges, originators, states, payloads, hashes, recorded_at, catalogue_version):
        opened = [self.opened_state(c.account_id) for c in charges]
        with self.ledger.recorder.transaction(commit=True) as session:
            rows = session.connection().exec_driver_sql(
                "SELECT idx, known_payload, known_recorded_at, notification_id FROM ledger_append_charges("
                "%s, %s, %s::uuid[], %s, %s, %s::bytea[], %s::bytea[], %s, %s, %s, %s::uuid, %s)",
                (
                    [c.charge_id for c in charges],
                    [c.account_id for c in charges],
                    [str(o) for o in originators],
                    hashes,
                    payloads,
                    states,
                    opened,
                    recorded_at,
                    CHARGE_TOPIC,
                    OPENED_TOPIC,
                    str(CATALOGUE_ID),
                    catalogue_version,
                ),
            ).fetchall()
        if rows and rows[0][0] == 0:
            raise StaleCatalogue(rows[0][3])
        results = [Appended()] * len(charges)
        for idx, known_payload, known_recorded_at, position in rows:
            results[idx - 1] = (
                Appended(position=position)
                if known_payload is None
                else Appended(None, json.loads(known_payload), known_recorded_at)
            )
        return results

    def _append_sqlite(self, charges, originators, states, payloads, hashes, recorded_at, catalogue_version):
        stamp = _sqlite_datetime(recorded_at)
        results: list[Appended] = []
        with self.ledger.recorder.transaction(commit=True) as session:
            cursor = session.connection().connection.cursor()  # BEGIN IMMEDIATE: the lock
            head = cursor.execute(
                "SELECT coalesce(max(originator_version), 0) FROM ledger_events WHERE originator_id = ?",
                (CATALOGUE_ID.bytes,),
            ).fetchone()[0]
            if head != catalogue_version:
                raise StaleCatalogue(head)
            for charge, originator, state, payload, digest in zip(
                charges, originators, states, payloads, hashes
            ):
                row = cursor.execute(
                    "SELECT payload, recorded_at FROM ledger_charge_ids WHERE charge_id = ?",
                    (charge.charge_id,),
                ).fetchone()
                if row is not None:
                    results.append(Appended(None, json.loads(row[0]), _parse_sqlite_datetime(row[1])))
                    continue
                key = originator.bytes
                version = cursor.execute(
                    "SELECT max(coalesce((SELECT max(originator_version) FROM ledger_events "
                    "WHERE originator_id = ?1), 0), coalesce((SELECT max(originator_version) "
                    "FROM ledger_snapshots WHERE originator_id = ?1), 0))",
                    (key,),
                ).fetchone()[0]
                if version == 0:
                    cursor.execute(
                        "INSERT INTO ledger_events (originator_id, originator_version, topic, state) "
                        "VALUES (?, 1, ?, ?)",
                        (key, OPENED_TOPIC, self.opened_state(charge.account_id)),
                    )
                    version = 1
                cursor.execute(
                    "INSERT INTO ledger_charge_ids (charge_id, account_id, payload_hash, payload, "
                    "recorded_at) VALUES (?, ?, ?, ?, ?)",
                    (charge.charge_id, charge.account_id, digest, payload, stamp),
                )
                cursor.execute(
                    "INSERT INTO ledger_events (originator_id, originator_version, topic, state) "
                    "VALUES (?, ?, ?, ?)",
                    (key, version + 1, CHARGE_TOPIC, state),
                )
                results.append(Appended(position=cursor.lastrowid))
        return results


def _sqlite_datetime(value: datetime) -> str:
    """SQLAlchemy's SQLite DATETIME text form (naive UTC), so both paths read alike."""
    return value.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def _parse_sqlite_datetime(value: Any) -> datetime | None:
    if value is None:
        return None
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)
