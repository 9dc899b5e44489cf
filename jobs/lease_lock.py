"""A Huey task lock with a lease: a killed holder blocks the next run for one lease at most.

Huey's ``TaskLock`` never expires on Redis before 7.4 (nor on SQLite), so a
consumer killed while aggregating left the lock held until someone flushed
it. This lock is stored under the same key (``huey.is_locked`` and
``huey_consumer -f`` still see it) with an expiry of one lease; a thread of
the holder renews it every few seconds while the work runs, so a long run
keeps it and a dead holder loses it. Renewal and release check a token, so
a holder that lost its lease (paused longer than it) never frees another's.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable

from huey.api import Huey
from huey.exceptions import TaskLockedException

log = logging.getLogger("jobs.lease_lock")


class LeaseLock:
    """``acquire()`` / ``release()`` around work; renewed in the background meanwhile.

    ``lease`` is the seconds, or a function giving them when the lock is taken
    (a process's settings, read then rather than at import).
    """

    def __init__(self, huey: Huey, name: str, lease: float | Callable[[], float]) -> None:
        self.huey = huey
        self.name = name
        self._lease = lease
        # Huey's own lock of that name registers the key: huey_consumer -f flushes it.
        self.key = f"{huey.name}.lock.{name}"
        huey.lock_task(name)
        self._token: bytes | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    @property
    def lease(self) -> float:
        """Seconds the lock outlives its holder's last renewal."""
        return self._lease() if callable(self._lease) else self._lease

    def is_locked(self) -> bool:
        return bool(self.huey.storage.has_data_for_key(self.key))

    def acquire(self) -> None:
        """Take the lock or raise :class:`TaskLockedException`."""
        token = uuid.uuid4().hex.encode()
        storage = self.huey.storage
        ttl = self.lease if hasattr(storage, "renew_lock") else None
        if not storage.put_if_empty(self.key, token, ttl):
            raise TaskLockedException(f"unable to acquire lock {self.name}")
        self._token = token
        if ttl is not None:
            self._stop = threading.Event()
            self._renewer = threading.Thread(target=self._renew, args=(token, self._stop),
                                             name=f"lock-{self.name}", daemon=True)
            self._renewer.start()

    def release(self) -> None:
        """Give the lock up (only if it is still this holder's)."""
        token, self._token = self._token, None
        self._stop.set()
        if token is None:
            return
        storage = self.huey.storage
        if hasattr(storage, "release_lock"):
            storage.release_lock(self.key, token)
        else:
            storage.delete_data(self.key)

    def _renew(self, token: bytes, stop: threading.Event) -> None:
        while not stop.wait(self.lease / 3):
            try:
                if not self.huey.storage.renew_lock(self.key, token, self.lease):
                    log.warning("lock %s expired before it was renewed; another run may start", self.name)
                    return
            except Exception:
                log.exception("renewing lock %s failed; retrying", self.name)
