"""Reliable delivery: a taken task stays recoverable until its outcome is durable.

Huey's own storages delete a task from the queue when a worker takes it, so
a worker killed mid-task loses it. The ledger's storages (see
:mod:`jobs.redis_queue` and :mod:`jobs.sqlite_queue`) *move* it instead, into
an area owned by the taking worker thread, and delete it from there only
after the task finished, was put back on the schedule for a retry, or was
kept in the rejected store (:meth:`ReliableStorage.ack`).

Each consumer process keeps a heartbeat with a lease. A consumer whose
heartbeat is older than its lease is taken for dead: any live consumer (or
the next one to start) moves its taken tasks back to the front of the queue.
A slow but alive consumer keeps beating from a thread of its own, so its
tasks are never taken from it. Every ledger task is idempotent (the charge
id is fixed at enqueue), so a task run again after a kill is counted once.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass
from typing import Sequence

from jobs import runtime
from ledger.settings import JobsSettings

log = logging.getLogger("jobs.delivery")


@dataclass(frozen=True)
class Delivery:
    """One taken task: its bytes and the worker thread that holds it."""

    owner: str
    data: bytes


class Identity:
    """This process's consumer id, made anew in a forked child."""

    def __init__(self) -> None:
        self._pid = 0
        self._id = ""
        self._lock = threading.Lock()

    @property
    def consumer(self) -> str:
        with self._lock:
            if self._pid != os.getpid():
                self._pid = os.getpid()
                self._id = f"{socket.gethostname()}:{self._pid}:{uuid.uuid4().hex[:8]}"
            return self._id

    def owner(self) -> str:
        """The calling worker thread's name for what it holds."""
        thread = threading.current_thread()
        return f"{self.consumer}/{thread.name}-{thread.ident}"


class ReliableStorage:
    """What the batch worker needs from a storage, beyond Huey's interface.

    A mixin: the concrete classes also derive from Huey's storage, so
    ``huey_consumer`` and every Huey API keep working on them.
    """

    delivery: JobsSettings
    identity: Identity

    def _init_delivery(self, settings: JobsSettings | None = None) -> None:
        self.delivery = settings or runtime.settings().jobs
        self.identity = Identity()
        self._heartbeat: Heartbeat | None = None
        self._heartbeat_guard = threading.Lock()
        self._unacked = threading.local()

    # -- the worker's side -----------------------------------------------------

    def take(self, limit: int) -> list[Delivery]:
        """Move up to ``limit`` tasks from the queue into this thread's hold.

        Whatever the thread still holds from a batch it could not acknowledge
        goes back to the front of the queue first. Blocks briefly (Redis) or
        returns at once (SQLite) when the queue is empty.
        """
        self._ensure_heartbeat()
        owner = self.identity.owner()
        restore = getattr(self._unacked, "owner", None) == owner
        taken = self._take(owner, limit, restore)
        self._unacked.owner = owner if taken else None
        return [Delivery(owner, data) for data in taken]

    def ack(self) -> None:
        """Everything this thread holds reached a durable outcome: forget it."""
        owner = self.identity.owner()
        self._ack(owner)
        self._unacked.owner = None

    def release(self, delivery: Delivery) -> None:
        """Drop one held task (it was put back on the schedule by other means)."""
        self._release(delivery.owner, delivery.data)

    def beat(self) -> None:
        """Renew this consumer's lease."""
        self._beat(self.identity.consumer, self.delivery.task_lease_seconds)

    def recover(self) -> int:
        """Put the tasks of consumers whose lease expired back on the queue; how many."""
        moved = self._recover()
        if moved:
            log.warning("%d task(s) of a consumer whose heartbeat stopped are back on the queue", moved)
        return moved

    def in_progress_count(self) -> int:
        """Tasks taken by some consumer and not yet acknowledged."""
        raise NotImplementedError

    def consumers(self) -> list[str]:
        """Ids of the consumers whose lease is current."""
        raise NotImplementedError

    def enqueue_many(self, items: Sequence[bytes]) -> None:
        """Enqueue serialized tasks in one round trip (a backlog, in order)."""
        raise NotImplementedError

    def renew_lock(self, key: str, token: bytes, ttl: float) -> bool:
        """Extend a lock this holder still has (its token matches); False if lost."""
        raise NotImplementedError

    def release_lock(self, key: str, token: bytes) -> bool:
        """Delete a lock only if it is still this holder's."""
        raise NotImplementedError

    # -- per backend -------------------------------------------------------------

    def _take(self, owner: str, limit: int, restore: bool) -> list[bytes]:
        raise NotImplementedError

    def _ack(self, owner: str) -> None:
        raise NotImplementedError

    def _release(self, owner: str, data: bytes) -> None:
        raise NotImplementedError

    def _beat(self, consumer: str, lease: float) -> None:
        raise NotImplementedError

    def _recover(self) -> int:
        raise NotImplementedError

    # -- the heartbeat ------------------------------------------------------------

    def _ensure_heartbeat(self) -> None:
        beat = self._heartbeat
        if beat is not None and beat.running():
            return
        with self._heartbeat_guard:
            beat = self._heartbeat
            if beat is None or not beat.running():
                self.beat()  # before anything is held: a held task always has a live lease
                self.recover()
                self._heartbeat = Heartbeat(self)
                self._heartbeat.start()


class Heartbeat(threading.Thread):
    """Renews the consumer's lease and recovers dead consumers' tasks, every few seconds."""

    def __init__(self, storage: ReliableStorage) -> None:
        super().__init__(name="ledger-heartbeat", daemon=True)
        self.storage = storage
        self.pid = os.getpid()
        self.stopping = threading.Event()

    def running(self) -> bool:
        return self.pid == os.getpid() and self.is_alive()

    def run(self) -> None:
        interval = self.storage.delivery.heartbeat_seconds
        while not self.stopping.wait(interval):
            try:
                self.storage.beat()
                self.storage.recover()
            except Exception:  # the broker is down: the workers report it too
                log.exception("heartbeat failed; retrying in %.1fs", interval)
