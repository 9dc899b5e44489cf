"""The append path for charges: one short transaction, few round trips.

Recording a charge needs no account state to decide (validation is done, and
any valid charge may be appended), only the charge-id index and, in the log,
the account's next version. So the hot path does not load the aggregate.
Events are encoded by the application's mapper exactly as ``save`` would,
so aggregates, projections and audits read them like any other.

PostgreSQL takes a batch in with one server-side function call (one round
trip, then COMMIT) that writes the index rows and the events-to-be into a
durable intake, taking no lock another writer waits for; the sequencer
numbers them into the log later (``intake.sql``, :mod:`ledger.sequencer`).
SQLite, one writer at a time anyway, answers known ids, takes the next
version and inserts the index row and the event in one transaction.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from datetime import datetime
from typing import Any, Sequence
from uuid import UUID

import orjson
import sqlalchemy as sa
from eventsourcing_sqlalchemy.datastore import transactions
from eventsourcing.persistence import JSONTranscoder

from ledger.charge_fields import RECORDED_EVENT_FIELDS
from ledger.charges import Charge
from ledger.domain import ACCOUNT_OPENED_TOPIC as OPENED_TOPIC
from ledger.domain import CHARGE_RECORDED_TOPIC as CHARGE_TOPIC
from ledger.domain import Account, account_uuid
from ledger.errors import BusyAccount
from ledger.persistence import CONNECTION_ERRORS, DBAPI_ERRORS, persistence_error
from ledger.pricing import CATALOGUE_ID, PriceTable

#: (cost_micros, price_version) of one charge; (None, None) when unpriced.
Cost = tuple["int | None", "int | None"]

#: Re-costing attempts when prices change under a batch (each a price set).
STALE_CATALOGUE_RETRIES = 20


class StaleCatalogue(Exception):
    """A price was set after the batch was costed: nothing was appended."""


#: The SQL the PostgreSQL store installs at start, each beside this module.
PG_APPEND_FUNCTION = (Path(__file__).with_name("append.sql")).read_text()
INTAKE_SQL = (Path(__file__).with_name("intake.sql")).read_text()

#: Objects earlier versions created that the append path no longer uses. The
#: earlier releases' own functions, ``ledger_intake_charges`` and
#: ``ledger_append_charges``, stay: they write the retired global charge-id
#: table, whose guard refuses them with a message naming the upgrade (see
#: :mod:`ledger.charge_index`), which is what their still-running callers
#: should see.
RETIRED = (
    "DROP INDEX IF EXISTS ix_ledger_charge_ids_account_id",
    "DROP FUNCTION IF EXISTS ledger_append_charges("
    "text[], text[], uuid[], text[], text[], bytea[], bytea[], timestamptz, text, text)",
)

#: The usual transport: each array as one string of its elements joined by the
#: record separator (U+001E), split on the server. Validated ids never hold a
#: control character and JSON escapes them, so it cannot occur inside an
#: element (each call checks; if it does, or a state is not UTF-8 text, array
#: literals are used). States go as their UTF-8 text: half the bytes of hex,
#: and ``convert_to`` gives back exactly the same bytes.
_JOINED_ARGUMENTS = (
    "string_to_array({0}, chr(30)), string_to_array({1}, chr(30)), string_to_array({2}, chr(30))::uuid[], "
    "string_to_array({3}, chr(30)), string_to_array({4}, chr(30)), "
    "(SELECT array_agg(convert_to(u.x, 'UTF8') ORDER BY u.o) "
    "FROM unnest(string_to_array({5}, chr(30))) WITH ORDINALITY AS u(x, o)), "
    "(SELECT array_agg(convert_to(u.x, 'UTF8') ORDER BY u.o) "
    "FROM unnest(string_to_array({6}, chr(30))) WITH ORDINALITY AS u(x, o)), "
    "{7}, {8}, {9}, {10}::uuid, {11}"
)
_SEPARATOR = "\x1e"
#: After the seven arrays: recorded_at, the two topics, the catalogue's id and version.
_SCALAR_TYPES = "timestamptz, text, text, uuid, bigint"


_PARAMETERS = ", ".join(["%s"] * 12)


@dataclass(frozen=True, slots=True)
class Statements:
    """The SQL that calls one append function (both take the same arguments), built once.

    Inside a caller's transaction the call goes as plain SQL: the arrays as
    array literals (``call``: one string each, which the server parses in one
    go), or joined (``call_joined``). On the appender's own connection the
    calls are prepared statements (the server neither parses nor plans them
    each time), prepared once per connection (see ``Appender._connection``):
    one for a single charge, of scalar parameters (the common call), one for
    several, of joined arrays.
    """

    call: str
    call_joined: str
    prepare: tuple[str, str]
    execute_one: str
    execute_many: str

    @classmethod
    def of(cls, function: str) -> "Statements":
        def select(arguments: str) -> str:
            return f"SELECT idx, known_payload, known_recorded_at, notification_id FROM {function}({arguments})"

        return cls(
            call=select(
                "%s::text[], %s::text[], %s::uuid[], %s::text[], %s::text[], %s::bytea[], %s::bytea[], "
                "%s, %s, %s, %s::uuid, %s"
            ),
            call_joined=select(_JOINED_ARGUMENTS.format(*["%s"] * 12)),
            prepare=(
                f"PREPARE {function}_one (text, text, uuid, text, text, text, text, {_SCALAR_TYPES}) AS "
                + select(
                    "ARRAY[$1], ARRAY[$2], ARRAY[$3], ARRAY[$4], ARRAY[$5], "
                    "ARRAY[convert_to($6, 'UTF8')], ARRAY[convert_to($7, 'UTF8')], $8, $9, $10, $11, $12"
                ),
                f"PREPARE {function}_many (text, text, text, text, text, text, text, {_SCALAR_TYPES}) AS "
                + select(_JOINED_ARGUMENTS.format(*(f"${n}" for n in range(1, 13)))),
            ),
            execute_one=f"EXECUTE {function}_one ({_PARAMETERS})",
            execute_many=f"EXECUTE {function}_many ({_PARAMETERS})",
        )


#: Writers take charges in through the intake, or append directly under the
#: events table's lock as the previous release did: batches of at least
#: ``LEDGER_DIRECT_BATCH_MIN`` charges do (one lock wait and one commit for
#: all of them, and no second write).
INTAKE = Statements.of("ledger_intake_account_charges")
LOCKED = Statements.of("ledger_append_account_charges")


def _joined(columns: Sequence[Sequence[str]], count: int) -> list[str] | None:
    """Each column joined by the separator, or None if an element holds one (or is lost)."""
    joined = [_SEPARATOR.join(column) for column in columns]
    for text in joined:
        if text.count(_SEPARATOR) != count - 1 or not text:
            return None
    return joined


def _text_array(values: Sequence[str]) -> str:
    """A PostgreSQL array literal of (non-null) strings: each quoted, backslash-escaped."""
    return "{%s}" % ",".join('"%s"' % v.replace("\\", "\\\\").replace('"', '\\"') for v in values)


def _bytea_array(values: Sequence[bytes]) -> str:
    """A PostgreSQL bytea[] literal: each element in hex form (its backslash escaped)."""
    return "{%s}" % ",".join('"\\\\x%s"' % v.hex() for v in values)


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
        self.is_postgres = ledger.store.is_postgres
        self._opened_state_cache: dict[str, bytes] = {}
        self._originator_cache: dict[str, UUID] = {}
        self._pg: Any = None  # the PostgreSQL connection appends use (see _call_postgres)
        self.statements = INTAKE
        self.direct_batch_min = ledger.settings.direct_batch_min
        self._pg_pid = 0
        self._direct = (
            isinstance(self.mapper.transcoder, JSONTranscoder)
            and self.mapper.cipher is None
            and self.mapper.compressor is None
        )

    @staticmethod
    def install(connection: sa.engine.Connection) -> None:
        """Create or replace the server-side function (PostgreSQL); retire what older versions made.

        Stores made by earlier versions may carry an index on the charge-id
        table's account column (the index's primary key now starts with it)
        and, on PostgreSQL, the append function's older overload without the
        catalogue check; both are dropped.
        """
        for statement in RETIRED:
            if connection.dialect.name == "postgresql" or "FUNCTION" not in statement:
                connection.exec_driver_sql(statement)
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(PG_APPEND_FUNCTION)
            connection.exec_driver_sql(INTAKE_SQL)

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
        facts = recorded_facts(charge, recorded_at, cost)
        for name in ("occurred_at", "recorded_at"):
            facts[name] = {"_type_": "datetime_iso", "_data_": facts[name].isoformat()}
        return orjson.dumps({"timestamp": facts["recorded_at"], **facts})

    @staticmethod
    def _charge_event(charge: Charge, originator_id: UUID, recorded_at: datetime, cost: Cost) -> Account.ChargeRecorded:
        return Account.ChargeRecorded(
            originator_id=originator_id,
            originator_version=0,  # a column, not state: the store numbers it
            timestamp=recorded_at,
            **recorded_facts(charge, recorded_at, cost),
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
        in the append's transaction the store confirms that catalogue is still
        the latest (a price being set waits for, and holds off, that check), else the batch is re-costed with the new one and tried again,
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
        originators = [self.originator(c.account_id) for c in charges]
        costs = [prices.cost(c) for c in charges]
        states = [self.charge_state(c, o, recorded_at, k) for c, o, k in zip(charges, originators, costs)]
        entries = [c.index_entry({"cost_micros": k[0], "price_version": k[1]}) for c, k in zip(charges, costs)]
        payloads = [payload for payload, _ in entries]
        hashes = [digest for _, digest in entries]
        append = self._append_postgres if self.is_postgres else self._append_sqlite
        results = append(charges, originators, states, payloads, hashes, recorded_at, prices.version)
        return [r if r.known else Appended(r.position, cost=k) for r, k in zip(results, costs)]

    def originator(self, account_id: str) -> UUID:
        """The account's stream id (cached: the same for every charge of the account)."""
        originator = self._originator_cache.get(account_id)
        if originator is None:
            originator = account_uuid(account_id)
            if len(self._originator_cache) < 100_000:
                self._originator_cache[account_id] = originator
        return originator

    def _append_postgres(self, charges, originators, states, payloads, hashes, recorded_at, catalogue_version):
        # An account's Opened state is read from its first position only.
        opened: list[bytes] = []
        first: set[str] = set()
        for charge in charges:
            if charge.account_id in first:
                opened.append(b"")
            else:
                first.add(charge.account_id)
                opened.append(self.opened_state(charge.account_id))
        originator_ids = [str(o) for o in originators]
        charge_ids = [c.charge_id for c in charges]
        account_ids = [c.account_id for c in charges]
        try:
            texts = [state.decode() for state in states], [state.decode() for state in opened]
        except UnicodeDecodeError:
            joined = None
        else:
            joined = _joined(
                [charge_ids, account_ids, originator_ids, hashes, payloads, texts[0], texts[1]], len(charges)
            )
        direct = transactions.get(None) is None  # else join the caller's open transaction
        # A batch big enough to spread the log lock's wait over many charges
        # goes straight into the log under it, sparing them the second write.
        statements = LOCKED if len(charges) >= self.direct_batch_min else self.statements
        if joined is not None and len(charges) == 1 and direct:
            sql, arrays = statements.execute_one, tuple(joined)  # one element each: nothing was joined
        elif joined is not None and direct:
            sql, arrays = statements.execute_many, tuple(joined)
        elif joined is not None:
            sql, arrays = statements.call_joined, tuple(joined)
        else:
            sql, arrays = statements.call, (
                _text_array(charge_ids),
                _text_array(account_ids),
                "{%s}" % ",".join(originator_ids),
                _text_array(hashes),
                _text_array(payloads),
                _bytea_array(states),
                _bytea_array(opened),
            )
        call = self._call_postgres if direct else self._call_in_transaction
        rows = call(sql, (*arrays, recorded_at, CHARGE_TOPIC, OPENED_TOPIC, str(CATALOGUE_ID), catalogue_version))
        if rows and rows[0][0] == 0:
            raise StaleCatalogue(rows[0][3])
        if statements is INTAKE:
            self.ledger.sequencer.poke()
        # The intake answers only for positions it did not take (and a lone charge).
        results = [Appended()] * len(charges)
        for idx, known_payload, known_recorded_at, position in rows:
            results[idx - 1] = (
                Appended(position=position)
                if known_payload is None
                else Appended(None, json.loads(known_payload), known_recorded_at)
            )
        return results

    def _call_postgres(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """One round trip: the function call is its own (implicit) transaction.

        The appender keeps one connection in autocommit mode (only the group
        commit's leader appends, one batch at a time), so the call commits
        when it returns: no BEGIN and no COMMIT round trips. A failed call
        rolls back whole; a connection error drops the connection (the next
        call opens a new one) and surfaces as the library's error types, which
        the ledger's retry handles (the index makes a repeat exact).
        """
        connection = self._connection()
        try:
            cursor = connection.cursor()
            try:
                cursor.execute(sql, params)
                return cursor.fetchall()
            finally:
                cursor.close()
        except BaseException as exc:
            if not isinstance(exc, DBAPI_ERRORS) or isinstance(exc, CONNECTION_ERRORS) or connection.closed:
                self.close()
            if isinstance(exc, DBAPI_ERRORS):
                raise persistence_error(exc) from exc
            raise

    def _call_in_transaction(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """Inside a caller's open recorder transaction: join it (it commits or rolls back all)."""
        with self.ledger.recorder.transaction(commit=True) as session:
            return session.connection().exec_driver_sql(sql, params).fetchall()

    def _connection(self) -> Any:
        """The appender's own driver connection (autocommit), opened on first use or after a fork."""
        if self._pg is not None and (self._pg_pid != os.getpid() or self._pg.closed):
            if self._pg_pid == os.getpid():
                self.close()
            else:
                self._pg = None  # the parent's: never touch it here
        if self._pg is None:
            engine = self.ledger.recorder.datastore.engine
            try:
                proxied = engine.raw_connection()
            except sa.exc.DBAPIError as exc:
                raise persistence_error(exc.orig) from exc
            connection = proxied.driver_connection
            proxied.detach()  # ours alone: not returned to (or reset by) the pool
            connection.autocommit = True
            try:
                with connection.cursor() as cursor:
                    for statement in (*INTAKE.prepare, *LOCKED.prepare):
                        cursor.execute(statement)
            except BaseException as exc:
                connection.close()
                if isinstance(exc, DBAPI_ERRORS):
                    raise persistence_error(exc) from exc
                raise
            self._pg, self._pg_pid = connection, os.getpid()
        return self._pg

    def close(self) -> None:
        """Close the appender's connection, if open (the next append opens another)."""
        connection, self._pg = self._pg, None
        if connection is not None and self._pg_pid == os.getpid():
            try:
                connection.close()
            except Exception:  # already broken: nothing to release
                pass

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
                    "SELECT payload, recorded_at FROM ledger_charge_index WHERE account_id = ? AND charge_id = ?",
                    (charge.account_id, charge.charge_id),
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
                    "INSERT INTO ledger_charge_index (account_id, charge_id, payload_hash, payload, "
                    "recorded_at) VALUES (?, ?, ?, ?, ?)",
                    (charge.account_id, charge.charge_id, digest, payload, stamp),
                )
                cursor.execute(
                    "INSERT INTO ledger_events (originator_id, originator_version, topic, state) "
                    "VALUES (?, ?, ?, ?)",
                    (key, version + 1, CHARGE_TOPIC, state),
                )
                results.append(Appended(position=cursor.lastrowid))
        return results


def recorded_facts(charge: Charge, recorded_at: datetime, cost: Cost) -> dict[str, Any]:
    """A ChargeRecorded event's fields for ``charge``, in the order its state is written."""
    derived = {"recorded_at": recorded_at, "cost_micros": cost[0], "price_version": cost[1]}
    return {
        name: derived[name] if name in derived else getattr(charge, name) for name in RECORDED_EVENT_FIELDS
    }


def _sqlite_datetime(value: datetime) -> str:
    """SQLAlchemy's SQLite DATETIME text form (naive UTC), so both paths read alike."""
    return value.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def _parse_sqlite_datetime(value: Any) -> datetime | None:
    if value is None:
        return None
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)
