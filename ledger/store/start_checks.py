"""What a process checks once per database when its first ledger opens: never twice, never fatal.

The replication check (:mod:`ledger.store.replication`) and the vacuum check
(:mod:`ledger.store.maintenance`) each read a little of the server's state
and log one WARNING when it puts charges or speed at risk. Each runs once per
process and database, never on the write path, and a state that cannot be
read is logged and the process carries on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa

T = TypeVar("T")


def shown_url(url: sa.engine.URL | str) -> str:
    """A database URL fit for a log line: no password."""
    return sa.engine.make_url(url).render_as_string(hide_password=True)


class OncePerDatabase:
    """Reads one kind of server state the first time a process asks about a database, and never again."""

    def __init__(self, what: str, log: logging.Logger) -> None:
        self.what = what
        self.log = log
        self._checked: set[str] = set()
        self._lock = threading.Lock()

    def read(self, engine: sa.engine.Engine, reader: Callable[[sa.engine.Engine], T]) -> tuple[str, T] | None:
        """``(shown url, reader(engine))`` the first time for this database on PostgreSQL, else None.

        A reader that fails is logged ("could not read the <what> of <url>; carrying on"), never raised.
        """
        if engine.dialect.name != "postgresql":
            return None
        key = shown_url(engine.url)
        with self._lock:
            if key in self._checked:
                return None
            self._checked.add(key)
        try:
            return key, reader(engine)
        except Exception as exc:  # noqa: BLE001 - a health check must never stop a writer
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            self.log.warning("could not read the %s of %s (%s); carrying on", self.what, key, first)
            return None
