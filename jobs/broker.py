"""Is the Redis broker durable? The queue is only as safe as what Redis keeps on disk.

A task taken by a worker survives the worker (see :mod:`jobs.delivery`), but
not a Redis restart unless Redis wrote it down: with ``appendonly yes`` every
write goes to the append-only file (``appendfsync everysec`` may lose the
last second on a crash of the machine, ``always`` loses nothing and costs a
flush per write); RDB snapshots alone (``save``) lose everything since the
last snapshot; neither keeps nothing at all. ``ledger worker`` says so at start.
"""

from __future__ import annotations

from huey.api import Huey
from huey.storage import RedisStorage
from redis.exceptions import RedisError, ResponseError


def _config(storage: RedisStorage, name: str) -> str:
    value = storage.conn.config_get(name).get(name, "")
    return value.decode() if isinstance(value, bytes) else str(value)


def durability_warning(instance: Huey) -> str | None:
    """A warning for the operator when the queue's Redis may lose tasks; None when it is durable."""
    storage = instance.storage
    if not isinstance(storage, RedisStorage):
        return None
    try:
        appendonly = _config(storage, "appendonly")
        save = _config(storage, "save")
        fsync = _config(storage, "appendfsync")
    except ResponseError as exc:  # CONFIG renamed or disabled (managed Redis)
        return ("WARNING: could not ask Redis whether it keeps the queue on disk "
                f"(CONFIG GET refused: {exc}). Make sure it runs with appendonly yes "
                "(see docs/JOBS.md), or queued tasks are lost when Redis restarts.")
    except RedisError as exc:
        return f"WARNING: could not reach the queue's Redis to check its durability: {exc}"
    if appendonly == "yes":
        if fsync == "no":
            return ("WARNING: Redis appends to its log but leaves flushing to the OS "
                    "(appendfsync no): a machine crash can lose the last ~30 s of queued tasks. "
                    "Use appendfsync everysec or always (see docs/JOBS.md).")
        return None
    if save.strip():
        return (f"WARNING: Redis keeps only RDB snapshots (save {save!r}, appendonly no): "
                "tasks queued since the last snapshot are lost if Redis restarts. "
                "Set appendonly yes (see docs/JOBS.md).")
    return ("WARNING: Redis keeps NOTHING on disk (appendonly no, save ''): every queued "
            "and in-progress task is lost if Redis restarts. Set appendonly yes with "
            "appendfsync everysec or always (see docs/JOBS.md).")
