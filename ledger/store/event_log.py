"""Reads of the event log for the projector, the audit and compaction, and compaction's writes to it.

The log is the library's events table (``store.events_table``). Stored state
is the transcoder's JSON, behind the mapper's cipher and compressor when
configured: :func:`state_decoder` undoes them. Datetimes stay transcoded
(``{"_type_": "datetime_iso", "_data_": ...}``), as the readers expect.

Readers bound a scan by ``stop`` in Python, not in SQL: with a second bound
PostgreSQL may misjudge the range (fresh tables have no statistics) and sort
it whole instead of walking the primary key.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

import orjson
import sqlalchemy as sa
from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from eventsourcing.domain import Snapshot
    from eventsourcing.persistence import EventStore, Mapper

    from ledger.store.base import Store

Decoder = Callable[[bytes], dict[str, Any]]
#: (id, topic, state) as the driver returns them: the projector's hot path.
Notification = tuple[Any, ...]

DELETE_CHUNK = 1_000
YIELD_PER = 2_000


# -- decoding ------------------------------------------------------------------------


def is_plain_json(mapper: Mapper | None) -> bool:
    """Stored state is the transcoder's UTF-8 JSON (no cipher, no compressor)."""
    return getattr(mapper, "cipher", None) is None and getattr(mapper, "compressor", None) is None


def state_decoder(mapper: Mapper | None) -> Decoder:
    """Event state bytes -> dict, undoing the mapper's cipher and compressor if any."""
    cipher = getattr(mapper, "cipher", None)
    compressor = getattr(mapper, "compressor", None)
    if cipher is None and compressor is None:
        return orjson.loads  # the fastest JSON parser at hand: reading is mostly decoding

    def decode(state: bytes) -> dict[str, Any]:
        if state.__class__ is memoryview:
            state = bytes(state)  # psycopg2 gives memoryview for bytea
        if cipher is not None:
            state = cipher.decrypt(state)
        if compressor is not None:
            state = compressor.decompress(state)
        return orjson.loads(state)  # type: ignore[no-any-return]

    return decode


def decode_state(state: bytes) -> dict[str, Any]:
    """Plain JSON state with its datetimes decoded (the transcoder's ``datetime_iso`` form)."""
    return json.loads(state, object_hook=_decode_datetime)  # type: ignore[no-any-return]


def _decode_datetime(obj: dict[str, Any]) -> Any:
    if obj.get("_type_") == "datetime_iso":
        return datetime.fromisoformat(obj["_data_"])
    return obj


# -- the projector's batches -----------------------------------------------------------


class BatchReader:
    """The notifications after a position, as plain driver tuples (id, topic, state).

    On PostgreSQL plain JSON state travels as text (bytea is sent hex-encoded,
    twice the bytes).
    """

    def __init__(self, store: Store, mapper: Mapper | None) -> None:
        self.store = store
        self.postgres = store.dialect == "postgresql"
        plain = self.postgres and is_plain_json(mapper)
        self._state_column = "convert_from(state, 'UTF8')" if plain else "state"

    def select_sql(self, limit: int) -> str:
        mark = "%s" if self.postgres else "?"
        return (
            f"SELECT id, topic, {self._state_column} FROM {self.store.events_table.name} "
            f"WHERE id > {mark} ORDER BY id LIMIT {int(limit)}"
        )

    def read(self, session: Session, position: int, limit: int) -> list[Notification]:
        """The next ``limit`` notifications after ``position``, in the caller's transaction."""
        cursor = session.connection().connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(self.select_sql(limit), (position,))
            return cursor.fetchall()  # type: ignore[no-any-return]
        finally:
            cursor.close()

    def read_ahead(self, after: int, limit: int) -> ReadAhead:
        """Start reading the batch after ``after`` on a connection of its own."""
        return ReadAhead(self.store.engine, self.select_sql(limit), after, limit)


class ReadAhead:
    """The batch after ``after``, read on a connection of its own in a thread.

    Used only if the next batch, under the locked tracking row, starts at
    ``after``. Reading outside that transaction is safe: events are never
    changed once committed, and every insert into the log (the sequencer's
    included) locks the events table through its commit, so ids become
    visible in order and an earlier snapshot sees a prefix of a later one
    (at worst fewer rows, as if the batch had been read a moment sooner).
    psycopg2 releases the GIL while it waits for the server, so the server's
    read overlaps with folding and writing the current batch.
    """

    def __init__(self, engine: sa.engine.Engine, sql: str, after: int, limit: int) -> None:
        self.after = after
        self.limit = limit
        self._engine = engine
        self._sql = sql
        self._rows: list[Notification] | None = None
        self._thread = threading.Thread(target=self._read, name="projector-read-ahead", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            connection = self._engine.raw_connection()
            try:
                cursor = connection.cursor()
                try:
                    cursor.execute(self._sql, (self.after,))
                    self._rows = cursor.fetchall()
                finally:
                    cursor.close()
                connection.rollback()
            finally:
                connection.close()
        except Exception:  # noqa: BLE001 - the batch is then read in its own transaction
            self._rows = None

    def result(self) -> list[Notification] | None:
        """The rows read (None if the read failed), once the thread is done."""
        self._thread.join()
        return self._rows


# -- scans in short transactions ---------------------------------------------------------


def max_position(store: Store) -> int:
    """The newest notification id (0 for an empty log)."""
    table = store.events_table
    with store.transaction(commit=False) as session:
        return int(session.execute(sa.select(sa.func.max(table.c.id))).scalar() or 0)


def count_up_to(store: Store, stop: int) -> int:
    """How many events have ids up to ``stop``."""
    table = store.events_table
    with store.transaction(commit=False) as session:
        query = sa.select(sa.func.count()).select_from(table).where(table.c.id <= stop)
        return int(session.execute(query).scalar() or 0)


def events_up_to(store: Store, stop: int, batch_size: int) -> Iterator[sa.Row[Any]]:
    """(id, originator_id, originator_version, topic, state) of every event up to ``stop``."""
    table, position = store.events_table, 0
    columns = (table.c.id, table.c.originator_id, table.c.originator_version, table.c.topic, table.c.state)
    while position < stop:
        query = sa.select(*columns).where(table.c.id > position).order_by(table.c.id).limit(batch_size)
        with store.transaction(commit=False) as session:
            batch = session.execute(query).all()
        yield from (row for row in batch if row.id <= stop)
        if len(batch) < batch_size:
            return
        position = batch[-1].id


def events_of_topics(store: Store, topics: Sequence[str], batch_size: int) -> Iterator[list[sa.Row[Any]]]:
    """Batches of (id, originator_id, state) of the events with these topics, in log order."""
    table, position = store.events_table, 0
    while True:
        with store.transaction(commit=False) as session:
            batch = session.execute(
                sa.select(table.c.id, table.c.originator_id, table.c.state)
                .where(table.c.id > position, table.c.topic.in_(topics))
                .order_by(table.c.id)
                .limit(batch_size)
            ).all()
        yield batch
        if len(batch) < batch_size:
            return
        position = batch[-1].id


def _account_query(store: Store, originator_id: UUID, topics: Sequence[str], *bounds: Any) -> Any:
    """(id, topic, state) of one account's events with these topics within ``bounds``, in log order."""
    table = store.events_table
    return (
        sa.select(table.c.id, table.c.topic, table.c.state)
        .where(table.c.originator_id == originator_id, table.c.topic.in_(topics), *bounds)
        .order_by(table.c.id)
        .execution_options(yield_per=YIELD_PER)
    )


def account_events(
    store: Store, originator_id: UUID, first: int, before: int, topics: Sequence[str]
) -> Iterator[tuple[int, str, bytes]]:
    """(id, topic, state) of one account's events with these topics and ``first <= id < before``."""
    table = store.events_table
    query = _account_query(store, originator_id, topics, table.c.id >= first, table.c.id < before)
    with store.transaction(commit=False) as session:
        for row in session.execute(query):
            yield row.id, row.topic, bytes(row.state)


def last_of_topic_after(store: Store, position: int, topic: str) -> int | None:
    """The newest id of an event with ``topic`` after ``position``, or None."""
    table = store.events_table
    with store.transaction(commit=False) as session:
        last = session.execute(
            sa.select(sa.func.max(table.c.id)).where(table.c.id > position, table.c.topic == topic)
        ).scalar()
    return None if last is None else int(last)


# -- compaction, in its account transaction ---------------------------------------------


def stream_up_to(
    session: Session, store: Store, originator_id: UUID, version: int, topics: Sequence[str]
) -> Iterator[tuple[int, str, bytes]]:
    """(id, topic, state) of one account's events up to ``version`` with these topics, in log order."""
    query = _account_query(store, originator_id, topics, store.events_table.c.originator_version <= version)
    for row in session.execute(query):
        yield row.id, row.topic, bytes(row.state)


def delete_events(session: Session, store: Store, ids: Iterable[int]) -> tuple[int, int]:
    """Delete events by id: (rows deleted, the newest id left in the log)."""
    table = store.events_table
    ids = list(ids)
    deleted = 0
    for start in range(0, len(ids), DELETE_CHUNK):
        chunk = ids[start : start + DELETE_CHUNK]
        deleted += session.execute(table.delete().where(table.c.id.in_(chunk))).rowcount  # type: ignore[attr-defined]
    newest = session.execute(sa.select(sa.func.max(table.c.id))).scalar_one()
    return deleted, int(newest or 0)


def save_snapshot(
    session: Session,
    store: Store,
    snapshots: EventStore,
    originator_id: UUID,
    version: int,
    take: Callable[[], Snapshot],
) -> bool:
    """Store ``take()`` unless a snapshot of ``originator_id`` at ``version`` exists; whether it did."""
    table = store.snapshots_table
    assert table is not None, "snapshotting is not enabled"
    session.flush()  # a save's own snapshot is pending in the session; a Core select won't autoflush
    exists = session.execute(
        sa.select(table.c.originator_version).where(
            table.c.originator_id == originator_id, table.c.originator_version == version
        )
    ).first()
    if exists is not None:
        return False
    snapshots.put([take()])
    return True
