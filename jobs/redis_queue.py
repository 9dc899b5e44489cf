"""The Redis queue with reliable delivery: Huey's RedisStorage, tasks moved, not popped.

Keys beside Huey's own (``huey.redis.ledger`` is the queue):

* ``huey.hold.ledger.<consumer>/<thread>``: the tasks one worker thread took
  (``LMOVE`` from the queue, in a script that also renews the heartbeat);
  deleted when their outcomes are durable;
* ``huey.holds.ledger``: hash of hold -> heartbeat key, for recovery;
* ``huey.alive.ledger.<consumer>``: the heartbeat, a key with a ``PX`` lease;
* ``huey.lock.ledger.<name>``: a task lock, a key with a lease
  (Redis < 7.4 cannot expire a field of Huey's result hash).

Due tasks move from the schedule to the queue inside one script, so a
scheduler killed between reading and enqueuing loses nothing either.
"""

from __future__ import annotations

from typing import Any, Sequence

from huey.constants import EmptyData
from huey.storage import RedisStorage
from redis.exceptions import TimeoutError as RedisTimeout

from jobs.delivery import ReliableStorage
from jobs.scripts import script

#: LPUSH arguments per command when a backlog is enqueued at once.
CHUNK = 1000


class ReliableRedisStorage(ReliableStorage, RedisStorage):
    """RedisStorage whose taken tasks stay in Redis until acknowledged."""

    def __init__(self, name: str = "huey", **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self._init_delivery()
        self.holds_key = f"huey.holds.{self.name}"
        self.lock_prefix = f"{name}.lock."
        self._take_script = self.conn.register_script(script("redis_take.lua"))
        self._recover_script = self.conn.register_script(script("redis_recover.lua"))
        self._schedule_script = self.conn.register_script(script("redis_schedule.lua"))
        self._lock_script = self.conn.register_script(script("redis_lock.lua"))

    def _hold_key(self, owner: str) -> str:
        return f"huey.hold.{self.name}.{owner}"

    def _alive_key(self, consumer: str) -> str:
        return f"huey.alive.{self.name}.{consumer}"

    def _lease_ms(self) -> int:
        return max(int(self.delivery.task_lease_seconds * 1000), 1)

    # -- reliable delivery ----------------------------------------------------------

    def _take(self, owner: str, limit: int, restore: bool) -> list[bytes]:
        keys = [self.queue_key, self._hold_key(owner), self.holds_key,
                self._alive_key(self.identity.consumer)]
        taken = list(self._take_script(keys=keys, args=[limit, self._lease_ms(), int(restore)]))
        if taken or not self.blocking:
            return taken
        try:  # wait for one; the heartbeat was renewed just now
            first = self.conn.blmove(self.queue_key, keys[1], self.read_timeout, "RIGHT", "LEFT")
        except RedisTimeout:
            return []
        if first is None:
            return []
        more = self._take_script(keys=keys, args=[limit - 1, self._lease_ms(), 0]) if limit > 1 else []
        return [first, *more]

    def _ack(self, owner: str) -> None:
        self.conn.delete(self._hold_key(owner))

    def _release(self, owner: str, data: bytes) -> None:
        self.conn.lrem(self._hold_key(owner), -1, data)

    def _beat(self, consumer: str, lease: float) -> None:
        self.conn.set(self._alive_key(consumer), b"1", px=self._lease_ms())

    def _recover(self) -> int:
        return int(self._recover_script(keys=[self.queue_key, self.holds_key]))

    def in_progress_count(self) -> int:
        holds = self.conn.hkeys(self.holds_key)
        if not holds:
            return 0
        pipe = self.conn.pipeline(transaction=False)
        for hold in holds:
            pipe.llen(hold)
        return sum(pipe.execute())

    def consumers(self) -> list[str]:
        prefix = self._alive_key("")
        return sorted(key.decode()[len(prefix):] for key in self.conn.scan_iter(match=f"{prefix}*"))

    def enqueue_many(self, items: Sequence[bytes]) -> None:
        pipe = self.conn.pipeline(transaction=False)
        for start in range(0, len(items), CHUNK):
            pipe.lpush(self.queue_key, *items[start : start + CHUNK])
        pipe.execute()

    def read_schedule(self, ts: Any) -> list[bytes]:
        """Move due tasks to the queue atomically; the scheduler has nothing left to enqueue."""
        self._schedule_script(keys=[self.schedule_key, self.queue_key], args=[self.convert_ts(ts)])
        return []

    def flush_queue(self) -> None:
        holds = self.conn.hkeys(self.holds_key)
        self.conn.delete(self.queue_key, self.holds_key, *holds)

    # -- locks with a lease -----------------------------------------------------------

    def _lock_key(self, key: str) -> str | None:
        if isinstance(key, bytes):
            key = key.decode()
        return f"huey.lock.{self.name}.{key[len(self.lock_prefix):]}" if key.startswith(self.lock_prefix) else None

    def put_if_empty(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        lock = self._lock_key(key)
        if lock is None:
            return super().put_if_empty(key, value, ttl)
        px = None if ttl is None else max(int(ttl * 1000), 1)
        return bool(self.conn.set(lock, value, nx=True, px=px))

    def has_data_for_key(self, key: str) -> bool:
        lock = self._lock_key(key)
        return super().has_data_for_key(key) if lock is None else bool(self.conn.exists(lock))

    def peek_data(self, key: str) -> Any:
        lock = self._lock_key(key)
        if lock is None:
            return super().peek_data(key)
        value = self.conn.get(lock)
        return EmptyData if value is None else value

    def pop_data(self, key: str) -> Any:
        lock = self._lock_key(key)
        if lock is None:
            return super().pop_data(key)
        value = self.conn.getdel(lock)
        return EmptyData if value is None else value

    def delete_data(self, key: str) -> bool:
        lock = self._lock_key(key)
        return super().delete_data(key) if lock is None else bool(self.conn.delete(lock))

    def renew_lock(self, key: str, token: bytes, ttl: float) -> bool:
        lock = self._lock_key(key)
        assert lock is not None, key
        return bool(self._lock_script(keys=[lock], args=[token, "renew", max(int(ttl * 1000), 1)]))

    def release_lock(self, key: str, token: bytes) -> bool:
        lock = self._lock_key(key)
        assert lock is not None, key
        return bool(self._lock_script(keys=[lock], args=[token, "release", 0]))
