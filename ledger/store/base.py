"""The store's contract: what the ledger and every other area may ask of the database.

:class:`Store` is what ``Ledger.store`` returns. Two classes implement it:
:class:`~ledger.store.postgres.PostgresStore` and
:class:`~ledger.store.sqlite.SQLiteStore`, both the event-sourcing library's
application recorder with the charge-id index in its transactions (see
:mod:`ledger.store.recorder`). Only modules under ``ledger/store/`` use
``engine``; everything else calls the store's methods, or a store module's
functions given the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from eventsourcing.persistence import AggregateRecorder
from sqlalchemy.orm import Session


class StaleCatalogue(Exception):
    """A price was set after the batch was costed: nothing was appended."""


@dataclass(frozen=True, slots=True)
class Appended:
    """One charge's fate: stored now at ``position`` (with its cost), or already known."""

    position: int | None = None
    known_payload: dict[str, Any] | None = None
    known_recorded_at: datetime | None = None
    #: (cost_micros, price_version) it was stored with; (None, None) when unpriced.
    cost: tuple[int | None, int | None] = (None, None)

    @property
    def known(self) -> bool:
        return self.known_payload is not None


@dataclass(frozen=True, slots=True)
class ChargeBatch:
    """Charges ready for the log, one list element per charge, in input order.

    ``states`` are the ChargeRecorded events' stored states; ``opened_states``
    the account's Opened state at the first charge of each account in the
    batch, ``b""`` at the others (a store opens an account's stream with it
    when the stream has no events yet). ``catalogue_version`` is the version of
    the price catalogue the charges were costed with: the store appends only
    if it is still the latest, else raises :class:`StaleCatalogue`.
    """

    charge_ids: Sequence[str]
    account_ids: Sequence[str]
    originators: Sequence[UUID]
    hashes: Sequence[str]
    payloads: Sequence[str]
    states: Sequence[bytes]
    opened_states: Sequence[bytes]
    recorded_at: datetime
    catalogue_version: int
    #: The facts budgets sum, typed (the index row's columns): user, occurred-at (UTC), cost (None:
    #: unpriced) and total tokens of each charge.
    user_ids: Sequence[str] = ()
    occurred_ats: Sequence[datetime] = ()
    costs: Sequence[int | None] = ()
    tokens: Sequence[int] = ()

    def __len__(self) -> int:
        return len(self.charge_ids)


@dataclass(frozen=True, slots=True)
class LogTopics:
    """What the store writes into the log beside a charge's state: the event topics and the catalogue's id."""

    charge_recorded: str
    account_opened: str
    catalogue_id: UUID


@dataclass(frozen=True, slots=True)
class Tuning:
    """The store's tuning values (from the ledger's settings).

    PostgreSQL: the most pending charges one sequencing transaction moves,
    how long a writer lets charges gather in the intake before sequencing
    them, and the batch size from which charges are appended straight into
    the log under its lock instead of through the intake.
    """

    sequence_batch_size: int = 20_000
    sequence_interval: float = 0.2
    direct_batch_min: int = 200


class Store(Protocol):
    """The ledger's store (PostgreSQL or SQLite).

    ``transaction`` is the library's: a Session in one transaction that the
    library's own writes inside it join (SQLite begins writing transactions
    with BEGIN IMMEDIATE).
    """

    #: The billing time zone: the dates budget spend is folded into (set by the ledger before ``open``).
    spend_zone: ZoneInfo | None

    @property
    def engine(self) -> sa.engine.Engine:
        """The SQLAlchemy engine: for the store's own modules (``ledger/store/``) only."""

    @property
    def events_table(self) -> sa.Table:
        """The library's events table (the log)."""

    @property
    def snapshots_table(self) -> sa.Table:
        """The library's snapshots table."""

    @property
    def dialect(self) -> str:
        """``postgresql`` or ``sqlite``."""

    @property
    def is_postgres(self) -> bool:
        """Whether the dialect is ``postgresql``."""

    def open(self, snapshots: AggregateRecorder, topics: LogTopics, tuning: Tuning) -> None:
        """Create what is missing (under the schema lock) and install the write path; once, at start.

        ``snapshots`` is the snapshot store's recorder, on the same datastore.
        """

    def transaction(self, commit: bool) -> AbstractContextManager[Session]:
        """A Session in the library's transaction (committed at the end when ``commit``)."""

    def lock_for_append(self, session: Session) -> None:
        """Take the lock appends take, before reading what an append depends on."""

    def lock_prices(self, session: Session) -> None:
        """Hold off appends' catalogue checks while a price is set."""

    def append(self, batch: ChargeBatch) -> list[Appended]:
        """Append in one transaction; per charge, where it landed or the facts known under its id."""

    def drain(self, wait: bool = True) -> int:
        """Put every acknowledged charge into the log; how many were moved (-1: another process was at it)."""

    def find_charge(self, account_id: str, charge_id: str) -> sa.Row[Any] | None:
        """The charge-id index row of one account's charge, or None."""

    def accounts_of_charge(self, charge_id: str, limit: int = 2) -> list[str]:
        """Accounts that recorded a charge with this id (at most ``limit``)."""

    def account_ids(self) -> list[str]:
        """Every account a charge was ever recorded for."""

    def close(self) -> None:
        """Sequence what this process took in and release the store's own connections."""

    def forget_inherited_connections(self) -> None:
        """In a forked child: drop the pooled connections inherited from the parent, leaving them open for it."""
