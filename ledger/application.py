"""The Ledger service: record, record many, reverse, totals.

A thin eventsourcing ``Application``: it validates, loads the account, calls
the aggregate, saves (events and charge-id index rows in one transaction),
and turns library errors into domain errors. Races between writers of one
account surface as integrity errors on save; they are retried here, with
jitter, so callers never see them.
"""

from __future__ import annotations

import atexit
import random
import time
import warnings
import weakref
from dataclasses import dataclass, fields as dataclass_fields
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping, Sequence
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, Repository
import sqlalchemy as sa
from eventsourcing.persistence import IntegrityError, InterfaceError, OperationalError

from ledger.appender import Appended, Appender
from ledger.charge_fields import EVENT_DEFAULTS, REVERSED_EVENT_FIELDS
from ledger.charges import Charge, ChargeValidator, ProfileResolver, optional_str
from ledger.repository import CompactedRepository
from ledger.domain import ACCOUNT_OPENED_TOPIC, CHARGE_RECORDED_TOPIC, Account, Totals, account_uuid
from ledger.pricing import CATALOGUE_ID, Price, PriceCatalogue, PriceTable, validate_price
from ledger.group_commit import GroupCommit
from ledger.errors import (
    AmbiguousCharge,
    BusyAccount,
    ChargeConflict,
    InvalidCharge,
    LedgerError,
    UnknownAccount,
    InvalidPrice,
    UnknownCharge,
    Unpriced,
)
from ledger.store.base import LogTopics, Store, Tuning
from ledger.store.factory import POOL_MAX_OVERFLOW, POOL_RECYCLE_SECONDS, POOL_SIZE
from ledger.store.recorder import APPLICATION_NAME, LedgerRecorder, stored_payload
from ledger.settings import Settings


@dataclass(frozen=True)
class Receipt:
    """Proof a charge is stored: returned only after its transaction committed."""

    charge_id: str
    account_id: str
    duplicate: bool = False
    recorded_at: datetime | None = None
    #: Its cost by the catalogue price of ``price_version``; None when unpriced.
    cost_micros: int | None = None
    price_version: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """As JSON: what ``ledger record --json`` prints and the HTTP API answers."""
        return _as_json(self)


@dataclass(frozen=True)
class Reversal:
    """Proof a charge was reversed: returned only after the reversal event committed."""

    charge_id: str
    account_id: str
    reversed_at: datetime
    reason: str
    #: What the reversal takes back: the charge's own cost and price version (None when unpriced).
    cost_micros: int | None = None
    price_version: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """As JSON: what ``ledger reverse --json`` prints and the HTTP API answers."""
        return _as_json(self)


def _as_json(proof: Any) -> dict[str, Any]:
    """A receipt's fields in declaration order, times as ISO 8601 text."""
    return {
        name: value.isoformat() if isinstance(value, datetime) else value
        for name, value in ((f.name, getattr(proof, f.name)) for f in dataclass_fields(proof))
    }


@dataclass(frozen=True)
class Outcome:
    """What happened to one item of a batch: a receipt, or the error that kept it out."""

    index: int
    receipt: Receipt | None = None
    error: LedgerError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Ledger(Application):
    """The write side of the usage ledger."""

    name = APPLICATION_NAME
    is_snapshotting_enabled = True

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        resolver: ProfileResolver | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.validate = ChargeValidator(self.settings, resolver)
        base_env = {
            "PERSISTENCE_MODULE": "ledger.store.factory:LedgerFactory",
            "SQLALCHEMY_URL": self.settings.database_url,
            "AGGREGATE_CACHE_MAXSIZE": str(self.settings.aggregate_cache_size),
            "AGGREGATE_CACHE_FASTFORWARD": "y",
            "IS_SNAPSHOTTING_ENABLED": "y",
            "CREATE_TABLE": "n",  # created below, under the schema lock
            POOL_SIZE: str(self.settings.pool_size),
            POOL_MAX_OVERFLOW: str(self.settings.pool_max_overflow),
            POOL_RECYCLE_SECONDS: str(self.settings.pool_recycle_seconds),
        }
        base_env.update(env or {})
        super().__init__(base_env)
        type(self).snapshotting_intervals = {Account: self.settings.snapshot_interval}
        assert self.snapshots is not None
        self.store.open(
            self.snapshots.recorder,
            LogTopics(CHARGE_RECORDED_TOPIC, ACCOUNT_OPENED_TOPIC, CATALOGUE_ID),
            Tuning(
                sequence_batch_size=self.settings.sequence_batch_size,
                sequence_interval=self.settings.sequence_interval_ms / 1000,
                direct_batch_min=self.settings.direct_batch_min,
            ),
        )
        self.appender = Appender(self.store, self.mapper, self.price_table)
        self._prices: PriceTable | None = None
        self._snapshot_checked: set[UUID] = set()
        self.group_commit = GroupCommit(
            self.appender.append,
            self.settings.group_commit_max,
            self.settings.group_commit_window_ms / 1000,
        )
        self._closed = False
        self._close_at_exit = _closer(self)
        atexit.register(self._close_at_exit)

    @classmethod
    def from_url(cls, url: str, **settings: Any) -> "Ledger":
        """A ledger on ``sqlite:///path`` or ``postgresql+psycopg2://…``."""
        return cls(Settings(database_url=url, **settings))

    def construct_repository(self) -> Repository:
        """Cached accounts reload from their snapshot when compaction pruned past them."""
        return CompactedRepository.like(super().construct_repository())

    @property
    def store(self) -> Store:
        """The store: the log, the charge-id index and the write path (see :mod:`ledger.store`)."""
        assert isinstance(self.recorder, LedgerRecorder)
        return self.recorder

    def close(self) -> None:
        """Sequence what this process took in, then release connections; a second call does nothing.

        A ledger not closed by its owner is closed at interpreter exit, before
        teardown (while imports and the driver still work), so a script that
        just records and ends exits quietly with its charges in the log.
        """
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._close_at_exit)
        self.store.close()
        super().close()
        self.factory.close()

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- recording -----------------------------------------------------------

    def record_charge(self, **fields: Any) -> Receipt:
        """Record one charge; durable when this returns.

        Raises :class:`InvalidCharge` (nothing stored) or :class:`ChargeConflict`
        (the id was recorded with other facts). A repeated id with the same
        facts returns the original receipt with ``duplicate=True``.
        """
        charge = self._priced_or_refused(self.validate(fields))
        return self._record_valid([charge])[0]

    def record_charges(self, items: Iterable[Mapping[str, Any]]) -> list[Outcome]:
        """Record many charges in as few transactions as the store allows.

        Every item gets an outcome in input order; an invalid or conflicting
        item never keeps a valid neighbour out.
        """
        outcomes: dict[int, Outcome] = {}
        valid: list[tuple[int, Charge]] = []
        for index, item in enumerate(items):
            try:
                valid.append((index, self._priced_or_refused(self.validate(item))))
            except InvalidCharge as exc:
                outcomes[index] = Outcome(index, error=exc)
        if valid:
            results = self._record_valid([charge for _, charge in valid], tolerate=True)
            for (index, _), result in zip(valid, results):
                if isinstance(result, Receipt):
                    outcomes[index] = Outcome(index, receipt=result)
                else:
                    outcomes[index] = Outcome(index, error=result)
        return [outcomes[i] for i in sorted(outcomes)]

    def _record_valid(
        self, charges: Sequence[Charge], *, tolerate: bool = False
    ) -> list[Receipt | LedgerError]:
        """Store validated charges exactly once; results in input order.

        The append (see :mod:`ledger.appender`) checks and writes the
        charge-id index in its transaction, so a repeated id is answered from
        it however the writers interleave; concurrent callers in this process
        share transactions (see :mod:`ledger.group_commit`).
        """
        appended, recorded_at = self._append_with_retry(charges)
        results: list[Receipt | LedgerError] = []
        for charge, outcome in zip(charges, appended):
            if outcome.known:
                results.append(_compare(charge, outcome.known_payload, outcome.known_recorded_at))
            else:
                results.append(
                    Receipt(charge.charge_id, charge.account_id, False, recorded_at, *outcome.cost)
                )
        if not tolerate:
            for result in results:
                if isinstance(result, LedgerError):
                    raise result
        return results

    def _append_with_retry(self, charges: Sequence[Charge]) -> tuple[list[Appended], datetime]:
        for attempt in range(self.settings.retry_attempts):
            try:
                return self.group_commit.submit(charges)
            except IntegrityError:  # a previous-release writer racing on the index: the retry finds it
                _backoff(attempt)
            except (OperationalError, InterfaceError, sa.exc.OperationalError, sa.exc.InterfaceError):
                # A dropped connection (the pool then reconnects). Whether the
                # lost COMMIT happened or not, the retry is exact: the index
                # answers an id that did commit as a duplicate.
                if attempt >= 2:
                    raise
                _backoff(attempt)
        raise BusyAccount(
            f"gave up after {self.settings.retry_attempts} attempts: concurrent "
            "writers kept conflicting; nothing was stored, retry the same call"
        )

    def _load_or_open(self, account_id: str) -> Account:
        try:
            return self.repository.get(account_uuid(account_id))
        except AggregateNotFoundError:
            return Account(account_id=account_id)

    # -- prices --------------------------------------------------------------

    def price_table(self, *, refresh: bool = False) -> PriceTable:
        """The price catalogue as last read (``refresh`` reads what was set since).

        Recording checks under its lock that this is still the latest (see
        :meth:`Appender.append`), so a stale copy is never used to cost a charge.
        """
        if self._prices is None or refresh:
            try:
                catalogue = self.repository.get(CATALOGUE_ID)
            except AggregateNotFoundError:
                catalogue = None
            self._prices = PriceTable.of(catalogue)
        return self._prices

    def set_price(self, **fields: Any) -> Price:
        """Set a price from its ``effective_from`` on (default: now); an event, never an edit.

        Setting a price equal to one already in the catalogue (same key, same
        effective time, same rates) changes nothing and returns that one, so
        importing a catalogue file twice is harmless. Raises :class:`InvalidPrice`.
        """
        values = validate_price(fields, self.settings.charge_types)
        return self.set_prices([values])[0]

    def set_prices(self, items: Iterable[Mapping[str, Any]]) -> list[Price]:
        """Set many prices in one transaction (all or none: each is validated first)."""
        entries = [validate_price(item, self.settings.charge_types) for item in items]
        for attempt in range(self.settings.retry_attempts):
            try:
                return self._set_prices(entries)
            except IntegrityError:  # another process set a price at the same version
                self.price_table(refresh=True)
                _backoff(attempt)
        raise BusyAccount("could not set prices: concurrent price changes kept conflicting")

    def _set_prices(self, entries: Sequence[Mapping[str, Any]]) -> list[Price]:
        try:
            catalogue: PriceCatalogue = self.repository.get(CATALOGUE_ID)
        except AggregateNotFoundError:
            catalogue = PriceCatalogue(self.settings.currency)
        if catalogue.currency != self.settings.currency:
            raise InvalidPrice({"currency": (
                f"the catalogue is in {catalogue.currency}; this ledger is set to "
                f"{self.settings.currency} (LEDGER_CURRENCY)"
            )})
        known = [Price.from_entry(entry) for entry in catalogue.prices]
        result: list[Price] = []
        for values in entries:
            wanted = Price(version=0, **values)
            same = next((p for p in known if p.same_terms(wanted)), None)
            if same is None:
                catalogue.set_price(**values)
                same = Price.from_entry(catalogue.prices[-1])
                known.append(same)
            result.append(same)
        if catalogue.pending_events:
            with self.recorder.transaction(commit=True) as session:
                self.store.lock_prices(session)
                self.save(catalogue)
        self._prices = PriceTable.of(catalogue)
        return result

    def _priced_or_refused(self, charge: Charge) -> Charge:
        """With ``unpriced="reject"``, refuse a charge no price covers (naming why)."""
        if self.settings.unpriced != "reject":
            return charge
        if self.price_table().price_of(charge) is None and self.price_table(refresh=True).price_of(charge) is None:
            raise Unpriced({"model": (
                f"no price for provider {charge.provider!r}, model {charge.model!r}, charge type "
                f"{charge.charge_type!r} at {charge.occurred_at.isoformat()} (LEDGER_UNPRICED=reject)"
            )})
        return charge

    # -- corrections ---------------------------------------------------------

    def reverse_charge(self, charge_id: str, reason: str = "", *, account_id: str | None = None) -> Reversal:
        """Cancel a charge of ``account_id`` with a new event (the original stays).

        Charge ids are unique within their account, so the account and the
        id name the charge. Without ``account_id`` (deprecated) the id is
        looked up across accounts and must belong to exactly one.

        Raises :class:`UnknownCharge`, :class:`AlreadyReversed`,
        :class:`AmbiguousCharge` (no account given, and several accounts
        used the id), and :class:`InvalidCharge` for a ``reason`` that is not
        storable text.
        """
        charge_id, reason = self._reversal_input(charge_id, reason)
        self.sequence()  # the charge's own event precedes its reversal in the stream
        account_id = self._reversal_account(charge_id, account_id)
        for attempt in range(self.settings.retry_attempts):
            try:
                with self.recorder.transaction(commit=True) as session:
                    self.store.lock_for_append(session)
                    return self._reverse(account_id, charge_id, reason)
            except IntegrityError:
                _backoff(attempt)
        raise BusyAccount(f"could not reverse {charge_id!r}: concurrent writers kept conflicting")

    def _reversal_account(self, charge_id: str, account_id: Any) -> str:
        """The account whose charge is meant: as given (normalised), or the only one that used the id."""
        if account_id is not None:
            given = self._recorded_id("account_id", account_id)
            if given is None:
                raise UnknownCharge(charge_id, _shown(account_id))
            return given
        warnings.warn(
            "reverse_charge without account_id is deprecated: charge ids are unique per account, "
            "name the account (reverse_charge(charge_id, reason, account_id=...))",
            DeprecationWarning,
            stacklevel=3,
        )
        return self.account_of_charge(charge_id)

    def account_of_charge(self, charge_id: str) -> str:
        """The one account that recorded a charge with this id.

        For operators' tools that are given an id alone. Raises
        :class:`UnknownCharge`, or :class:`AmbiguousCharge` when several
        accounts used the id (each is its own charge).
        """
        owners = self.store.accounts_of_charge(charge_id)
        if not owners:
            raise UnknownCharge(charge_id)
        if len(owners) > 1:
            raise AmbiguousCharge(charge_id)
        return owners[0]

    def _reversal_input(self, charge_id: Any, reason: Any) -> tuple[str, str]:
        """The id as recording normalises it, and the reason as text (by the charges' own rules).

        An id validation would refuse can never have been recorded: it is
        unknown, whatever its type or content (drivers would refuse it).
        """
        given = self._recorded_id("charge_id", charge_id)
        if given is None:
            raise UnknownCharge(_shown(charge_id))
        if reason is None:
            return given, ""
        if isinstance(reason, str):
            reason = reason.strip()[: self.settings.max_reference_length]
        errors: dict[str, str] = {}
        text = optional_str(
            {"reason": reason}, "reason", errors, self.settings.max_reference_length
        )
        if errors:
            raise InvalidCharge(errors)
        return given, text or ""

    def _recorded_id(self, name: str, value: Any) -> str | None:
        """An id as recording normalises it; None when recording would refuse it, so it never was."""
        return optional_str({name: value}, name, {}, self.settings.max_string_length)

    def _reverse(self, account_id: str, charge_id: str, reason: str) -> Reversal:
        row = self.store.find_charge(account_id, charge_id)
        if row is None:
            raise UnknownCharge(charge_id, account_id)
        facts = stored_payload(row)
        account = self._load_or_open(row.account_id)
        now = datetime.now(timezone.utc)
        given = {"charge_id": charge_id, "reason": reason, "account_id": row.account_id, "recorded_at": now,
                 "occurred_at": datetime.fromisoformat(facts["occurred_at"])}
        account.reverse_charge(**{
            name: given[name] if name in given else facts.get(name, EVENT_DEFAULTS.get(name))
            for name in REVERSED_EVENT_FIELDS
        })
        self.save(account, reversed_charges=[(row.account_id, charge_id)], reversed_at=now)
        return Reversal(
            charge_id, row.account_id, now, reason, facts.get("cost_micros"), facts.get("price_version")
        )

    # -- reading -------------------------------------------------------------

    def sequence(self) -> int:
        """Put every charge acknowledged so far into the log; how many were moved.

        On PostgreSQL charges are acknowledged from a durable intake and
        sequenced into the log in batches (see :mod:`ledger.store.sequencer`);
        reads through this ledger do this first by themselves. Call it before
        reading the events table by other means. On SQLite the log is written
        directly and this returns 0.
        """
        return self.store.drain()

    def account_totals(self, account_id: str) -> Totals:
        """Running totals net of reversals, from the cached or snapshotted aggregate."""
        return self.get_account(account_id).totals

    def get_account(self, account_id: str) -> Account:
        """The account's current state; a long replay leaves a snapshot behind.

        Charges are appended without loading the aggregate, so nothing else
        snapshots a busy account between compactions: the first load in a
        process that replays more than ``snapshot_interval`` events saves one,
        and later loads (here or elsewhere) start from it.
        """
        aggregate_id = account_uuid(account_id)
        try:
            account: Account = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            raise UnknownAccount(account_id) from None
        if aggregate_id not in self._snapshot_checked:
            self._snapshot_checked.add(aggregate_id)
            self._snapshot_if_behind(account)
        return account

    def _snapshot_if_behind(self, account: Account) -> None:
        assert self.snapshots is not None
        latest = self.snapshots.recorder.select_events(account.id, desc=True, limit=1)
        since = account.version - (latest[0].originator_version if latest else 0)
        if since < self.settings.snapshot_interval:
            return
        try:
            self.snapshots.put([Account.Snapshot.take(account)])
        except IntegrityError:
            pass  # another process took the same snapshot first

def _compare(charge: Charge, stored: Mapping[str, Any], recorded_at: datetime | None) -> Receipt | LedgerError:
    """The original receipt for a true duplicate; a conflict naming what differs."""
    differences = charge.differences(stored)
    if differences:
        return ChargeConflict(charge.charge_id, differences)
    if recorded_at is not None and recorded_at.tzinfo is None:
        recorded_at = recorded_at.replace(tzinfo=timezone.utc)  # SQLite drops the zone
    return Receipt(
        charge.charge_id,
        stored["account_id"],
        True,
        recorded_at,
        stored.get("cost_micros"),
        stored.get("price_version"),
    )


def _shown(value: Any) -> str:
    """A caller's id for an error message: its first 80 characters, or its type when it is no text."""
    return value[:80] if isinstance(value, str) else f"<{type(value).__name__}>"


def _closer(ledger: Ledger) -> Callable[[], None]:
    """An exit hook that closes ``ledger`` if it is still alive (it holds no strong reference)."""
    ref = weakref.ref(ledger)

    def close_at_exit() -> None:
        alive = ref()
        if alive is not None:
            alive.close()

    return close_at_exit


def _backoff(attempt: int) -> None:
    """Full jitter, capped: spreads racing writers so one of them wins quickly."""
    time.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))
