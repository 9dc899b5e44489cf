"""The Huey instance, on the queue ``LEDGER_HUEY_URL`` names.

``sqlite:///path`` gives a :class:`~huey.SqliteHuey` (the embedded default: a
file ``ledger-queue.db`` next to the ledger's SQLite database, or in the
working directory when the ledger is on PostgreSQL), ``redis://…`` a
:class:`~huey.RedisHuey`, ``memory://`` a :class:`~huey.MemoryHuey` (one
process only: tests with an in-process consumer). The SQLite and Redis ones
use the ledger's reliable storages (:mod:`jobs.delivery`): a task stays in
the queue's store until its outcome is durable, and its consumer takes them
in batches (:mod:`jobs.batch`).

The instance is made at import, because ``huey_consumer jobs.huey`` needs a
module-level object, but its queue is opened on first use, from this
process's settings (:mod:`jobs.runtime`): those ``ledger worker`` installed,
else the environment's. :func:`use_queue` points the live instance at
another queue: it swaps the storage and keeps every registered task.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from huey import MemoryHuey, RedisHuey, SqliteHuey
from huey.api import Huey, TaskWrapper
from huey.consumer import Consumer
from huey.storage import BaseStorage, MemoryStorage, RedisStorage, SqliteStorage

from jobs import runtime
from jobs.huey_internals import BatchingHuey
from jobs.redis_queue import ReliableRedisStorage
from jobs.sqlite_queue import LazySqliteStorage, ReliableSqliteStorage
from ledger.settings import JobsSettings, Settings

__all__ = ["LazySqliteStorage", "LedgerHuey", "describe", "huey", "make_huey", "queue_url", "use_queue"]

#: Huey's name for the queue: the Redis keys are ``huey.redis.ledger`` etc.
QUEUE_NAME = "ledger"
DEFAULT_QUEUE_FILE = "ledger-queue.db"


class DelayTaskWrapper(TaskWrapper):
    """Huey's task wrapper plus Celery's ``.delay(...)``, so seed callers work as written."""

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        """Enqueue the task (the same as calling it); returns Huey's result handle."""
        return self(*args, **kwargs)


class LedgerHuey(BatchingHuey):
    """Huey whose consumer takes batches and acknowledges them (see :mod:`jobs.batch`).

    Made without a storage class, it opens the queue of this process's
    settings on first use of :attr:`storage`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._storage: BaseStorage | None = None
        self._opening = threading.Lock()
        super().__init__(*args, **kwargs)

    @property  # type: ignore[override]
    def storage(self) -> BaseStorage:
        """The queue's storage, opened on first use when none was given."""
        if self._storage is None:
            with self._opening:
                if self._storage is None:
                    settings = runtime.settings()
                    use_queue(self, queue_url(settings.ledger, settings.jobs))
        assert self._storage is not None
        return self._storage

    @storage.setter
    def storage(self, value: BaseStorage | None) -> None:
        self._storage = value

    def create_storage(self) -> BaseStorage | None:
        """None until first use when no storage class was given (see :attr:`storage`)."""
        if self.storage_class is None and not self.immediate:
            return None
        return super().create_storage()

    def create_consumer(self, **options: Any) -> Consumer:
        from jobs.batch import LedgerConsumer

        return LedgerConsumer(self, **options)


class LedgerSqliteHuey(LedgerHuey, SqliteHuey):
    storage_class = ReliableSqliteStorage


class LedgerRedisHuey(LedgerHuey, RedisHuey):
    storage_class = ReliableRedisStorage


class LedgerMemoryHuey(LedgerHuey, MemoryHuey):
    """One process only: nothing to recover, no batches."""


def default_queue_url(settings: Settings) -> str:
    """A SQLite queue beside the ledger's SQLite file (or in the working directory)."""
    ledger_file = settings.sqlite_path()
    directory = ledger_file.parent if ledger_file is not None else Path.cwd()
    return f"sqlite:///{(directory / DEFAULT_QUEUE_FILE).resolve()}"


def queue_url(settings: Settings | None = None, jobs: JobsSettings | None = None) -> str:
    """The queue URL in effect: ``LEDGER_HUEY_URL`` or the embedded default beside the ledger."""
    settings = settings or Settings()
    jobs = jobs or JobsSettings()
    return jobs.huey_url or default_queue_url(settings)


def storage_for(url: str) -> tuple[type[Huey], dict[str, Any]]:
    """The Huey class and its storage arguments for a queue URL."""
    scheme = url.split(":", 1)[0].lower()
    if scheme == "sqlite":
        path = url.split(":///", 1)[1] if ":///" in url else ""
        path = path.split("?", 1)[0]
        if not path or path == ":memory:":
            raise ValueError(
                f"queue URL {url!r}: a SQLite queue needs a file (sqlite:///path/queue.db); "
                "use memory:// for a queue inside one process"
            )
        return LedgerSqliteHuey, {"filename": str(Path(path).expanduser())}
    if scheme in ("redis", "rediss", "unix"):
        return LedgerRedisHuey, {"url": url}
    if scheme == "memory":
        return LedgerMemoryHuey, {}
    raise ValueError(
        f"unsupported queue URL {url!r}: expected sqlite:///path, redis://host:port/db or memory://"
    )


def make_huey(url: str | None = None) -> Huey:
    """A Huey instance on ``url`` (default: this process's queue, opened on first use), with UTC timestamps."""
    huey_class, storage_kwargs = storage_for(url) if url is not None else (LedgerHuey, {})
    instance = huey_class(QUEUE_NAME, utc=True, **storage_kwargs)
    instance.task_wrapper_class = DelayTaskWrapper
    return instance


def use_queue(instance: Huey, url: str) -> None:
    """Point an existing instance (and every task registered on it) at another queue."""
    huey_class, storage_kwargs = storage_for(url)
    old = instance._storage if isinstance(instance, LedgerHuey) else instance.storage
    instance.storage_class = huey_class.storage_class
    instance.storage_kwargs = storage_kwargs
    instance.storage = instance.create_storage()
    close = getattr(old, "close", None)
    if callable(close):
        close()


def describe(instance: Huey) -> str:
    """Where the queue lives, for people: a file, a Redis database, or memory."""
    storage = instance.storage
    if isinstance(storage, SqliteStorage):
        return f"SQLite file {Path(storage.filename).resolve()} (queue {storage.name!r})"
    if isinstance(storage, RedisStorage):
        kwargs = storage.pool.connection_kwargs
        where = kwargs.get("path") or f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
        return f"Redis {where} db {kwargs.get('db', 0)} (key {storage.queue_key!r})"
    if isinstance(storage, MemoryStorage):
        return "memory of this process (not shared with other processes)"
    return f"{type(storage).__name__} {storage.name!r}"


#: The one Huey instance: ``huey_consumer jobs.huey``. Its queue opens on first use.
huey = make_huey()
