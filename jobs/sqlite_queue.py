"""The SQLite queue with reliable delivery: Huey's SqliteStorage, tasks moved, not deleted.

A worker's take moves rows from Huey's ``task`` table to ``task_hold``
(tagged with the worker thread and its consumer) and renews the consumer's
row in ``consumer_lease``, in one transaction; the acknowledgement deletes
them. Rows of a consumer whose lease expired go back to ``task``. Task locks
live in ``lock_lease`` with an expiry. Due tasks move from the schedule to
the queue in one transaction. Tables are created on first use, not at import.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any, Sequence

from huey.constants import EmptyData
from huey.storage import SqliteStorage

from jobs.delivery import ReliableStorage
from jobs.scripts import script

#: Rows per ``IN (...)`` list.
CHUNK = 500


def _statements(sql: str) -> list[str]:
    return [part.strip() for part in sql.split(";") if part.strip()]


class LazySqliteStorage(SqliteStorage):
    """SqliteStorage that creates its tables on first connection, not at import.

    Importing ``jobs`` (the command line does) then never writes a file.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["create_tables"] = False
        super().__init__(*args, **kwargs)

    def _create_connection(self) -> sqlite3.Connection:
        conn = super()._create_connection()
        conn.execute("begin immediate")
        try:
            for statement in self.ddl:
                conn.execute(statement)
        except BaseException:
            conn.execute("rollback")
            conn.close()
            raise
        conn.execute("commit")
        return conn


class ReliableSqliteStorage(ReliableStorage, LazySqliteStorage):
    """SqliteStorage whose taken tasks stay in the file until acknowledged."""

    ddl = [*SqliteStorage.ddl, *_statements(script("sqlite_delivery.sql"))]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_delivery()
        self.lock_prefix = f"{self.name}.lock."

    # -- reliable delivery ----------------------------------------------------------

    def _take(self, owner: str, limit: int, restore: bool) -> list[bytes]:
        if not restore and not self.sql("select 1 from task where queue = ? limit 1",
                                        (self.name,), results=True):
            return []
        with self.db(commit=True) as curs:
            if restore:
                self._return_held(curs, "owner", [owner])
            self._renew(curs, self.identity.consumer)
            curs.execute("select id, data, priority from task where queue = ? "
                         "order by priority desc, id limit ?", (self.name, limit))
            rows = curs.fetchall()
            curs.executemany(
                "insert into task_hold (queue, owner, consumer, data, priority) values (?, ?, ?, ?, ?)",
                [(self.name, owner, self.identity.consumer, data, priority) for _, data, priority in rows],
            )
            ids = [row[0] for row in rows]
            for start in range(0, len(ids), CHUNK):
                chunk = ids[start : start + CHUNK]
                curs.execute(f"delete from task where id in ({','.join('?' * len(chunk))})", chunk)
        return [bytes(data) for _, data, _ in rows]

    def _return_held(self, curs: sqlite3.Cursor, column: str, values: list[str]) -> int:
        """Move held rows (by owner or consumer) back to the queue, oldest first."""
        marks = ",".join("?" * len(values))
        curs.execute(f"insert into task (queue, data, priority) select queue, data, priority "
                     f"from task_hold where queue = ? and {column} in ({marks}) order by id",
                     (self.name, *values))
        moved = curs.rowcount
        curs.execute(f"delete from task_hold where queue = ? and {column} in ({marks})", (self.name, *values))
        return moved

    def _renew(self, curs: sqlite3.Cursor, consumer: str) -> None:
        curs.execute("insert into consumer_lease (queue, consumer, expires) values (?, ?, ?) "
                     "on conflict (queue, consumer) do update set expires = excluded.expires",
                     (self.name, consumer, time.time() + self.delivery.task_lease_seconds))

    def _ack(self, owner: str) -> None:
        self.sql("delete from task_hold where queue = ? and owner = ?", (self.name, owner), commit=True)

    def _release(self, owner: str, data: bytes) -> None:
        self.sql("delete from task_hold where id = (select id from task_hold where queue = ? "
                 "and owner = ? and data = ? limit 1)", (self.name, owner, self.to_blob(data)), commit=True)

    def _beat(self, consumer: str, lease: float) -> None:
        with self.db(commit=True) as curs:
            self._renew(curs, consumer)

    def _recover(self) -> int:
        now = time.time()
        if not self.sql("select 1 from consumer_lease where queue = ? and expires < ? limit 1",
                        (self.name, now), results=True):
            return 0
        with self.db(commit=True) as curs:
            curs.execute("select consumer from consumer_lease where queue = ? and expires < ?", (self.name, now))
            dead = [row[0] for row in curs.fetchall()]
            if not dead:
                return 0
            moved = self._return_held(curs, "consumer", dead)
            marks = ",".join("?" * len(dead))
            curs.execute(f"delete from consumer_lease where queue = ? and consumer in ({marks})",
                         (self.name, *dead))
        return moved

    def in_progress_count(self) -> int:
        return self.sql("select count(*) from task_hold where queue = ?", (self.name,), results=True)[0][0]

    def consumers(self) -> list[str]:
        rows = self.sql("select consumer from consumer_lease where queue = ? and expires >= ? order by consumer",
                        (self.name, time.time()), results=True)
        return [row[0] for row in rows]

    def enqueue_many(self, items: Sequence[bytes]) -> None:
        with self.db(commit=True) as curs:
            curs.executemany("insert into task (queue, data, priority) values (?, ?, 0)",
                             [(self.name, self.to_blob(item)) for item in items])

    def read_schedule(self, ts: Any) -> list[bytes]:
        """Move due tasks to the queue in one transaction; the scheduler has nothing left to enqueue."""
        with self.db(commit=True) as curs:
            params = (self.name, ts.timestamp())
            curs.execute("insert into task (queue, data, priority) select queue, data, 0 from schedule "
                         "where queue = ? and timestamp <= ? order by timestamp, id", params)
            curs.execute("delete from schedule where queue = ? and timestamp <= ?", params)
        return []

    def flush_queue(self) -> None:
        with self.db(commit=True) as curs:
            curs.execute("delete from task where queue = ?", (self.name,))
            curs.execute("delete from task_hold where queue = ?", (self.name,))

    # -- locks with a lease -----------------------------------------------------------

    def _is_lock(self, key: Any) -> bool:
        return isinstance(key, str) and key.startswith(self.lock_prefix)

    def put_if_empty(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        if not self._is_lock(key):
            return super().put_if_empty(key, value, None if ttl is None else ttl)
        now = time.time()
        with self.db(commit=True) as curs:
            curs.execute("delete from lock_lease where queue = ? and key = ? and expires < ?",
                         (self.name, key, now))
            curs.execute("insert or ignore into lock_lease (queue, key, token, expires) values (?, ?, ?, ?)",
                         (self.name, key, self.to_blob(value), None if ttl is None else now + ttl))
            return curs.rowcount == 1

    def _live_lock(self, key: str) -> Any:
        rows = self.sql("select token from lock_lease where queue = ? and key = ? "
                        "and (expires is null or expires >= ?)", (self.name, key, time.time()), results=True)
        return bytes(rows[0][0]) if rows else EmptyData

    def has_data_for_key(self, key: str) -> bool:
        if not self._is_lock(key):
            return super().has_data_for_key(key)
        return self._live_lock(key) is not EmptyData

    def peek_data(self, key: str) -> Any:
        return self._live_lock(key) if self._is_lock(key) else super().peek_data(key)

    def pop_data(self, key: str) -> Any:
        if not self._is_lock(key):
            return super().pop_data(key)
        value = self._live_lock(key)
        self.delete_data(key)
        return value

    def delete_data(self, key: str) -> bool:
        if not self._is_lock(key):
            return super().delete_data(key)
        with self.db(commit=True) as curs:
            curs.execute("delete from lock_lease where queue = ? and key = ? and (expires is null or expires >= ?)",
                         (self.name, key, time.time()))
            live = curs.rowcount == 1
            curs.execute("delete from lock_lease where queue = ? and key = ?", (self.name, key))
        return live

    def renew_lock(self, key: str, token: bytes, ttl: float) -> bool:
        with self.db(commit=True) as curs:
            curs.execute("update lock_lease set expires = ? where queue = ? and key = ? and token = ?",
                         (time.time() + ttl, self.name, key, self.to_blob(token)))
            return curs.rowcount == 1

    def release_lock(self, key: str, token: bytes) -> bool:
        with self.db(commit=True) as curs:
            curs.execute("delete from lock_lease where queue = ? and key = ? and token = ?",
                         (self.name, key, self.to_blob(token)))
            return curs.rowcount == 1
