"""Replication health: would an acknowledged charge survive the loss of the PostgreSQL primary?

A receipt means the charge is durable on the server the ledger writes to. It
survives that machine's loss only if the commit also waited for a standby:
``synchronous_standby_names`` names one, a standby is connected as ``sync``
(or ``quorum``), and ``synchronous_commit`` is not ``off`` or ``local``.
:func:`read_replication` reads all of that in the ledger's own session (so a
``synchronous_commit`` set per role, database or URL counts) and gives a
verdict: "safe", or why not. :func:`read_lag` reads how far a server the
ledger reads from (``LEDGER_READ_DATABASE_URL``) is behind.

No superuser is needed. ``pg_stat_replication`` shows a role without
``pg_monitor`` (or ``pg_read_all_stats``) only each standby's pid: grant the
ledger's role ``pg_monitor`` to see the standbys' state and lag; without it the
verdict says the state is hidden.

A process that opens the ledger for writing logs one WARNING when a charge
could be lost (:func:`warn_if_unsafe`, once per process and database, never
fatal). SQLite is embedded, a single file: nothing to replicate, no warning.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa

from ledger.store.start_checks import OncePerDatabase

log = logging.getLogger(__name__)

_HERE = Path(__file__).parent
_SETTINGS_SQL = sa.text((_HERE / "replication_settings.sql").read_text())
_STANDBYS_SQL = sa.text((_HERE / "replication_standbys.sql").read_text())
_LAG_SQL = sa.text((_HERE / "replication_lag.sql").read_text())

#: ``sync_state`` values of a standby a commit waits for.
SYNCHRONOUS_STATES = frozenset({"sync", "quorum"})
#: ``synchronous_commit`` values under which a commit does not wait for any standby.
LOCAL_COMMITS = frozenset({"off", "local"})
SAFE = "safe"
EMBEDDED = "embedded, single file"
#: Where the docs explain the warning and what to do.
DOCS = "docs/OPERATIONS.md, 'Health and replication'"


@dataclass(frozen=True, slots=True)
class Standby:
    """One standby streaming from the server (None: hidden from this role, or not measured)."""

    name: str
    address: str | None
    state: str | None
    sync_state: str | None
    replay_lag_seconds: float | None
    replay_lag_bytes: int | None
    write_lag_bytes: int | None

    @property
    def synchronous(self) -> bool:
        return self.sync_state in SYNCHRONOUS_STATES


@dataclass(frozen=True, slots=True)
class Replication:
    """The replication state of the server the ledger writes to, and the verdict on it."""

    store: Literal["postgresql", "sqlite"]
    in_recovery: bool
    synchronous_commit: str | None
    synchronous_standby_names: str | None
    role_name: str | None
    sees_standbys: bool
    standbys: tuple[Standby, ...]

    @property
    def reasons(self) -> tuple[str, ...]:
        """Why an acknowledged charge could be lost with the primary; empty: it could not (or SQLite)."""
        if self.store == "sqlite":
            return ()
        return unsafe_reasons(
            in_recovery=self.in_recovery,
            synchronous_commit=self.synchronous_commit or "",
            synchronous_standby_names=self.synchronous_standby_names or "",
            role_name=self.role_name or "",
            sees_standbys=self.sees_standbys,
            standbys=self.standbys,
        )

    @property
    def safe(self) -> bool:
        """An acknowledged charge survives the primary's loss."""
        return self.store == "postgresql" and not self.reasons

    @property
    def synchronous(self) -> bool:
        """Commits wait for a standby: a synchronous standby is connected and synchronous_commit waits."""
        return (self.store == "postgresql" and bool((self.synchronous_standby_names or "").strip())
                and self.synchronous_commit not in LOCAL_COMMITS and any(s.synchronous for s in self.standbys))

    @property
    def role(self) -> Literal["primary", "standby", "embedded"]:
        if self.store == "sqlite":
            return "embedded"
        return "standby" if self.in_recovery else "primary"

    @property
    def verdict(self) -> str:
        """"safe", "embedded, single file", or the reasons a charge could be lost, in one line."""
        if self.store == "sqlite":
            return EMBEDDED
        return SAFE if not self.reasons else "; ".join(self.reasons)


@dataclass(frozen=True, slots=True)
class ReadLag:
    """How far the server reads come from is behind its primary (seconds and bytes; None: not a standby)."""

    in_recovery: bool
    lag_seconds: float | None
    lag_bytes: int | None


EMBEDDED_REPLICATION = Replication(store="sqlite", in_recovery=False, synchronous_commit=None,
                                   synchronous_standby_names=None, role_name=None, sees_standbys=False,
                                   standbys=())


def unsafe_reasons(*, in_recovery: bool, synchronous_commit: str, synchronous_standby_names: str,
                   role_name: str, sees_standbys: bool, standbys: tuple[Standby, ...]) -> tuple[str, ...]:
    """Why an acknowledged charge could be lost if this server were lost (none: it could not)."""
    reasons: list[str] = []
    if in_recovery:
        reasons.append("this server is a standby (in recovery), not the primary")
    if synchronous_commit in LOCAL_COMMITS:
        reasons.append(f"synchronous_commit is {synchronous_commit}")
    if not synchronous_standby_names.strip():
        reasons.append("no synchronous standby")
    elif not sees_standbys:
        reasons.append(f"the standbys' state is hidden from role {role_name}: grant it pg_monitor")
    elif not any(standby.synchronous for standby in standbys):
        reasons.append("no synchronous standby connected (commits wait until one is)")
    return tuple(reasons)


def read_replication(engine: sa.engine.Engine) -> Replication:
    """The replication state of ``engine``'s server, read in one short read-only transaction."""
    if engine.dialect.name != "postgresql":
        return EMBEDDED_REPLICATION
    with engine.connect() as connection:
        facts = connection.execute(_SETTINGS_SQL).one()._mapping
        standbys = tuple(_standby(row._mapping) for row in connection.execute(_STANDBYS_SQL))
        connection.rollback()
    return Replication(
        store="postgresql",
        in_recovery=bool(facts["in_recovery"]),
        synchronous_commit=facts["synchronous_commit"],
        synchronous_standby_names=facts["synchronous_standby_names"],
        role_name=facts["role_name"],
        sees_standbys=bool(facts["sees_standbys"]),
        standbys=standbys,
    )


def _standby(row: Any) -> Standby:
    return Standby(
        name=row["application_name"] or "",
        address=row["client_addr"],
        state=row["state"],
        sync_state=row["sync_state"],
        replay_lag_seconds=None if row["replay_lag_seconds"] is None else float(row["replay_lag_seconds"]),
        replay_lag_bytes=None if row["replay_lag_bytes"] is None else int(row["replay_lag_bytes"]),
        write_lag_bytes=None if row["write_lag_bytes"] is None else int(row["write_lag_bytes"]),
    )


def read_lag(engine: sa.engine.Engine) -> ReadLag:
    """How far ``engine``'s server is behind its primary, read on that server."""
    with engine.connect() as connection:
        row = connection.execute(_LAG_SQL).one()._mapping
        connection.rollback()
    return ReadLag(
        in_recovery=bool(row["in_recovery"]),
        lag_seconds=None if row["lag_seconds"] is None else float(row["lag_seconds"]),
        lag_bytes=None if row["lag_bytes"] is None else int(row["lag_bytes"]),
    )


# -- the warning at start ----------------------------------------------------------------

_ONCE = OncePerDatabase("replication state", log)


def warn_if_unsafe(engine: sa.engine.Engine) -> Replication | None:
    """Log one WARNING when an acknowledged charge on ``engine``'s database could be lost.

    Once per process and database (the first ledger opened on it pays one
    round trip; later ones nothing). Never raises: a state that cannot be read
    is logged and the caller carries on. Returns what was read, or None
    (SQLite, already checked, or unreadable).
    """
    read = _ONCE.read(engine, read_replication)
    if read is None:
        return None
    key, state = read
    if not state.safe:
        log.warning("an acknowledged charge could be lost if the PostgreSQL primary is lost: %s (%s); see %s",
                    state.verdict, key, DOCS)
    return state


def warn_at_start(url: str, connect_timeout: int) -> Replication | None:
    """:func:`warn_if_unsafe` for a process that opens no ledger yet (``ledger worker``): its own short connection."""
    if not url.startswith("postgresql"):
        return None
    try:
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args={"connect_timeout": connect_timeout})
    except Exception as exc:  # noqa: BLE001 - a bad URL is the command's own error to report, later
        log.warning("could not read the replication state (%s); carrying on", exc)
        return None
    try:
        return warn_if_unsafe(engine)
    finally:
        engine.dispose()
