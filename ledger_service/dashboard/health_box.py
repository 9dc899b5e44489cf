"""The overview's health box: are charges safe if the primary is lost, and where the figures are read from.

Read when the overview loads (two short queries on the primary, one on the
read database if there is one); a state that cannot be read is shown as such,
never an error page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ledger.store.keys import reader_of
from ledger.store.replication import Replication, read_replication
from ledger.store.replication_reads import Reads, reads_of, seconds

if TYPE_CHECKING:
    from ledger import Ledger


@dataclass(frozen=True)
class HealthBox:
    """What the box shows; ``replication`` is None when it could not be read (``error`` says why)."""

    replication: Replication | None
    reads: Reads
    error: str | None = None

    @property
    def safe(self) -> bool:
        return self.replication is not None and self.replication.safe

    @property
    def verdict(self) -> str:
        """"safe", "embedded, single file", or why a charge could be lost."""
        if self.replication is None:
            return f"unknown: could not read the replication state ({self.error})"
        return self.replication.verdict

    @property
    def server(self) -> str:
        """The server the ledger writes to, and whether its commits wait for a standby."""
        state = self.replication
        if state is None:
            return "unknown"
        if state.store == "sqlite":
            return "SQLite: embedded, single file (no standby)"
        waits = "commits wait for a synchronous standby" if state.synchronous else "commits do not wait for a standby"
        return f"PostgreSQL {state.role}, synchronous_commit {state.synchronous_commit}: {waits}"

    @property
    def standbys(self) -> list[str]:
        """One line per standby: name, address, state, and its replay lag."""
        state = self.replication
        if state is None or state.store == "sqlite":
            return []
        return [_standby_line(s.name, s.address, s.state, s.sync_state, s.replay_lag_seconds, s.replay_lag_bytes)
                for s in state.standbys]


def _standby_line(name: str, address: str | None, state: str | None, sync_state: str | None,
                  lag_seconds: float | None, lag_bytes: int | None) -> str:
    where = f" at {address}" if address else ""
    lag = "lag hidden" if lag_seconds is None and lag_bytes is None else \
        f"{seconds(lag_seconds or 0.0)} s, {lag_bytes or 0:,} bytes behind"
    return f"{name or '(unnamed)'}{where}: {state or 'state hidden'}, {sync_state or 'sync state hidden'}, {lag}"


def health_box(ledger: Ledger) -> HealthBox:
    """The box's contents for ``ledger``, read now."""
    reads = reads_of(ledger)
    try:
        return HealthBox(read_replication(reader_of(ledger.store)), reads)
    except Exception as exc:  # noqa: BLE001 - the page shows what could not be read
        text = str(getattr(exc, "orig", None) or exc).strip()
        return HealthBox(None, reads, text.splitlines()[0] if text else type(exc).__name__)
