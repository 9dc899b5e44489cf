"""The Ledger: record, record many, reverse, set prices, totals.

An event-sourcing ``Application`` over the store (:mod:`ledger.store`).
Recording validates each charge, costs it with the price catalogue, and
appends it without loading its account (:mod:`ledger.appender`):
concurrent callers in one process share transactions
(:mod:`ledger.group_commit`), and the store checks the charge-id index in
the same transaction, so a repeated id is answered with the original
receipt however writers interleave. On PostgreSQL a lost connection, a
read-only server (a demoted primary), a server shutting down or a
serialization failure is retried with the same charge ids until
``retry_deadline_seconds`` pass, each attempt bounded on the client side
(:mod:`ledger.store.watchdog`); the index makes the retry exact, so an
attempt whose commit raised but happened is answered with the original
receipt. Past the deadline the caller gets :class:`LedgerUnavailable`.
Reversals and price changes save
events through the library (:mod:`ledger.reversals`,
:mod:`ledger.price_setting`); reads load accounts from snapshots and the log.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any, Self
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, Repository
from eventsourcing.persistence import IntegrityError

from ledger import (
    alerts,
    budgets,
    credits,
    price_setting,
    reservations,
    reversals,
    webhooks,
)
from ledger.alerts import BudgetAlert
from ledger.appender import Appended, Appender
from ledger.backoff import backoff, failover_pause
from ledger.budget_rules import BudgetStatus
from ledger.budgets import BudgetSet
from ledger.charges import Charge, ChargeValidator, ProfileResolver
from ledger.credits import Balance, CreditGrant
from ledger.domain import (
    ACCOUNT_OPENED_TOPIC,
    CHARGE_RECORDED_TOPIC,
    Account,
    Totals,
    account_uuid,
)
from ledger.errors import (
    BusyAccount,
    InvalidCharge,
    LedgerError,
    LedgerUnavailable,
    UnknownAccount,
    Unpriced,
)
from ledger.group_commit import GroupCommit
from ledger.pricing import CATALOGUE_ID, Price, PriceTable, validate_price
from ledger.receipts import Outcome, Receipt, Reversal, known_charge
from ledger.repository import CompactedRepository
from ledger.reservations import Capture, Reservation, ReservationScope
from ledger.settings import Settings
from ledger.store.base import LogTopics, Store, Tuning
from ledger.store.engine import (
    DROPPED_CONNECTION_ERRORS,
    forget_connections,
    reconnect_needed,
    transient,
)
from ledger.store.factory import (
    CONNECT_TIMEOUT_SECONDS,
    POOL_MAX_OVERFLOW,
    POOL_RECYCLE_SECONDS,
    POOL_SIZE,
)
from ledger.store.recorder import APPLICATION_NAME, LedgerRecorder
from ledger.store.replication_reads import close_read_engine
from ledger.store.watchdog import deadline_of
from ledger.webhooks import WebhookEndpoint

__all__ = ["Ledger", "Outcome", "Receipt", "Reversal"]

log = logging.getLogger(__name__)

#: The shortest bound on one attempt (a statement or commit; see ``Ledger.attempt_seconds``).
MIN_ATTEMPT_SECONDS = 10.0


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
            CONNECT_TIMEOUT_SECONDS: str(self.settings.connect_timeout_seconds),
        }
        base_env.update(env or {})
        super().__init__(base_env)
        type(self).snapshotting_intervals = {Account: self.settings.snapshot_interval}
        assert self.snapshots is not None
        self.store.spend_zone = self.settings.zone
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
        self.group_commit: GroupCommit[Charge, Appended] = GroupCommit(
            self.appender.append,
            self.settings.group_commit_max,
            self.settings.group_commit_window_ms / 1000,
            shared_failure=transient,
        )
        engine = self.factory.datastore.engine
        #: On PostgreSQL, transient errors are retried until the deadline (SQLite keeps its few quick retries).
        self.fails_over = engine is not None and engine.dialect.name == "postgresql"
        #: Per budget (id, period, version), the thresholds seen fired: alerts skip them (ledger.alerts).
        self.fired_thresholds: dict[tuple[str, str, int], set[int]] = {}
        #: Reservations this ledger made, by id (see ledger.reservations): a capture here needs no read first.
        self.made_here: dict[str, dict[str, Any]] = {}
        self._closed = False
        self._close_at_exit = _closer(self)
        atexit.register(self._close_at_exit)

    @classmethod
    def from_url(cls, url: str, **settings: Any) -> Ledger:
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
        close_read_engine(self)
        self.store.close()
        super().close()
        self.factory.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- recording -----------------------------------------------------------

    def record_charge(self, /, **fields: Any) -> Receipt:
        """Record one charge; durable when this returns.

        Raises :class:`InvalidCharge` (nothing stored) or :class:`ChargeConflict`
        (the id was recorded with other facts). A repeated id with the same
        facts returns the original receipt with ``duplicate=True``.
        """
        return self._record_valid([self.validated(fields)])[0]

    def record_charges(self, items: Iterable[Mapping[str, Any]]) -> list[Outcome]:
        """Record many charges in as few transactions as the store allows.

        Every item gets an outcome in input order; an invalid or conflicting
        item never keeps a valid neighbour out.
        """
        outcomes: dict[int, Outcome] = {}
        valid: list[tuple[int, Charge]] = []
        for index, item in enumerate(items):
            try:
                valid.append((index, self.validated(item)))
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
        results = self.receipts_of(charges, appended, recorded_at)
        if not tolerate:
            for result in results:
                if isinstance(result, LedgerError):
                    raise result
        return results

    def record_in_transaction(self, fields: Mapping[str, Any]) -> Receipt:
        """Record one charge inside the caller's open store transaction (it commits or rolls back with it).

        For writes that must commit together with the charge (a capture
        settles its hold in the same transaction). Raises as ``record_charge``.
        """
        charge = self.validated(fields)
        recorded_at = datetime.now(UTC)
        (result,) = self.receipts_of([charge], self.appender.append([charge], recorded_at), recorded_at)
        if isinstance(result, LedgerError):
            raise result
        return result

    def validated(self, fields: Mapping[str, Any]) -> Charge:
        """A charge validated (and, with ``unpriced="reject"``, priced) for recording; raises :class:`InvalidCharge`."""
        return self._priced_or_refused(self.validate(fields))

    @staticmethod
    def receipts_of(
        charges: Sequence[Charge], appended: Sequence[Appended], recorded_at: datetime
    ) -> list[Receipt | LedgerError]:
        """Per charge: a receipt (new or duplicate), or the conflict its id met."""
        results: list[Receipt | LedgerError] = []
        for charge, outcome in zip(charges, appended):
            if outcome.known:
                results.append(known_charge(charge, outcome.known_payload, outcome.known_recorded_at))
            else:
                results.append(
                    Receipt(charge.charge_id, charge.account_id, False, recorded_at, *outcome.cost)
                )
        return results

    def _append_with_retry(self, charges: Sequence[Charge]) -> tuple[list[Appended], datetime]:
        """Append, retrying with the same charges until they are stored or the deadline passes.

        Whether a lost COMMIT happened or not, the retry is exact: the index
        answers an id that did commit with its original receipt.
        """
        if not self.fails_over:
            return self._append_with_quick_retry(charges)
        return self.retrying(lambda: self.group_commit.submit(charges), [c.charge_id for c in charges])

    @property
    def attempt_seconds(self) -> float:
        """The client-side bound on one attempt: long enough for a big batch's commit, short
        enough that a frozen primary leaves time to retry on the promoted one within the deadline."""
        return max(MIN_ATTEMPT_SECONDS, 2.0 * self.settings.connect_timeout_seconds)

    def retrying(self, call: Callable[[], Any], charge_ids: Sequence[str] = ()) -> Any:
        """Run ``call`` until it succeeds, retrying transient failures until ``retry_deadline_seconds``.

        ``call`` must be idempotent (charges by id, reservations by id).
        Raises :class:`LedgerUnavailable` naming ``charge_ids`` once the
        deadline passes; other errors at once.
        """
        seconds = self.settings.retry_deadline_seconds
        deadline = time.monotonic() + seconds
        integrity_failures = 0
        with deadline_of(seconds):
            for attempt in itertools.count():
                try:
                    with deadline_of(self.attempt_seconds):
                        return call()
                except IntegrityError as exc:  # a previous-release writer racing on the index: the retry finds it
                    integrity_failures += 1
                    if integrity_failures >= self.settings.retry_attempts or time.monotonic() >= deadline:
                        raise BusyAccount(
                            f"gave up after {integrity_failures} attempts: concurrent writers kept "
                            "conflicting; nothing was stored, retry the same call"
                        ) from exc
                    backoff(attempt)
                except Exception as exc:
                    if not transient(exc):
                        raise
                    if reconnect_needed(exc):
                        forget_connections(self.factory.datastore.engine)  # type: ignore[arg-type]
                    left = deadline - time.monotonic()
                    log.debug("recording attempt %d failed (retrying for %.1f s more): %s", attempt + 1, left,
                              _first_line(exc))
                    if left <= 0:
                        raise LedgerUnavailable(seconds, charge_ids, _first_line(exc)) from exc
                    failover_pause(attempt, left)
        raise AssertionError("unreachable")  # pragma: no cover

    def _failing_over(self, call: Callable[[], Any]) -> Any:
        """``call`` (idempotent), retried through a failover on PostgreSQL; as it is on SQLite."""
        return self.retrying(call) if self.fails_over else call()

    def _append_with_quick_retry(self, charges: Sequence[Charge]) -> tuple[list[Appended], datetime]:
        """SQLite: an index race is retried, a dropped connection (a locked file) twice."""
        for attempt in range(self.settings.retry_attempts):
            try:
                return self.group_commit.submit(charges)
            except IntegrityError:  # a previous-release writer racing on the index: the retry finds it
                backoff(attempt)
            except DROPPED_CONNECTION_ERRORS:
                if attempt >= 2:
                    raise
                backoff(attempt)
        raise BusyAccount(
            f"gave up after {self.settings.retry_attempts} attempts: concurrent "
            "writers kept conflicting; nothing was stored, retry the same call"
        )

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
        prices, self._prices = price_setting.set_prices(self, entries)
        return prices

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
        return self._failing_over(lambda: reversals.reverse_charge(self, charge_id, reason, account_id))

    def account_of_charge(self, charge_id: str) -> str:
        """The one account that recorded a charge with this id.

        For operators' tools that are given an id alone. Raises
        :class:`UnknownCharge`, or :class:`AmbiguousCharge` when several
        accounts used the id (each is its own charge).
        """
        return reversals.account_of_charge(self.store, charge_id)

    # -- budgets, reservations and credits ------------------------------------

    def set_budget(
        self,
        budget_id: str,
        *,
        account_id: str,
        user_id: str | None = None,
        limit_micros: int | None = None,
        limit_tokens: int | None = None,
        limit: str | None = None,
        period: str | None = None,
        mode: str = "hard",
        thresholds: Iterable[int] = (50, 80, 100),
    ) -> BudgetSet:
        """Create or change a budget (an event); ``limit="credits"`` bounds by the prepaid balance.

        ``period`` is ``day``, ``month`` (the default) or ``total`` (a credits budget's only one).

        Raises :class:`InvalidBudget` naming each bad field. Setting the same
        definition again stores nothing (``created`` and ``changed`` False).
        """
        return budgets.set_budget(self, {
            "budget_id": budget_id, "account_id": account_id, "user_id": user_id, "limit_micros": limit_micros,
            "limit_tokens": limit_tokens, "limit": limit, "period": period, "mode": mode, "thresholds": thresholds,
        })

    def remove_budget(self, budget_id: str) -> None:
        """Remove a budget (an event). Raises :class:`UnknownBudget`."""
        budgets.remove_budget(self, budget_id)

    def budget_status(self, budget_id: str) -> BudgetStatus:
        """A budget's limit, spent, held and remaining now. Raises :class:`UnknownBudget`."""
        return budgets.budget_status(self, budget_id)

    def budgets(self, account_id: str | None = None) -> list[BudgetStatus]:
        """Every budget's status (of one account, when given)."""
        return budgets.budget_statuses(self, account_id)

    def reserve(self, account_id: str, **terms: Any) -> Reservation:
        """Hold an estimate against the account's budgets before a model call.

        Terms: ``user_id``, ``estimate_micros``, ``estimate_tokens``,
        ``ttl_seconds`` (default 600, at most a day) and ``reservation_id``
        (idempotency). Raises :class:`BudgetExceeded` when a hard budget in
        scope cannot hold the estimate, :class:`InvalidReservation` for bad terms.
        """
        if terms.get("reservation_id") is None:  # made once, before the first attempt: a retry finds its hold
            terms["reservation_id"] = reservations.new_reservation_id()
        return self._failing_over(lambda: reservations.reserve(self, account_id, **terms))

    def capture(self, reservation_id: str, /, **charge_fields: Any) -> Capture:
        """Record the reserved call's charge and settle its hold (see :mod:`ledger.reservations`)."""
        return self._failing_over(lambda: reservations.capture(self, reservation_id, charge_fields))

    def release(self, reservation_id: str) -> None:
        """Release an uncaptured hold. Raises :class:`UnknownReservation`, :class:`ReservationConflict`."""
        self._failing_over(lambda: reservations.release(self, reservation_id))

    def reservation(self, account_id: str, **terms: Any) -> AbstractContextManager[ReservationScope]:
        """``reserve`` as a context manager: capture inside; the hold is released if the block raises or never captures."""
        return reservations.reservation_scope(self, account_id, **terms)

    def reservation_state(self, reservation_id: str) -> str:
        """"held", "captured", "released" or "expired"."""
        return reservations.hold_state(self, reservation_id)

    def get_reservation(self, reservation_id: str) -> Reservation:
        """A reservation as made (its account, user, estimates, expiry). Raises :class:`UnknownReservation`."""
        return reservations.get_reservation(self, reservation_id)

    def grant_credits(
        self, account_id: str, amount_micros: int, *, expires_at: datetime | None = None, grant_id: str | None = None
    ) -> CreditGrant:
        """Grant prepaid credit (an event), idempotent by ``grant_id``. Raises :class:`InvalidCredit`."""
        return credits.grant_credits(self, account_id, amount_micros, expires_at, grant_id)

    def balance(self, account_id: str) -> Balance:
        """The account's unexpired credit left after the spend it covered (earliest expiry first)."""
        return credits.balance(self, account_id)

    def check_budget_alerts(self, account_id: str | None = None) -> list[BudgetAlert]:
        """Fire thresholds crossed and not yet fired this period; the alerts fired now."""
        return alerts.check(self, account_id)

    def budget_alerts(
        self, *, account_id: str | None = None, budget_id: str | None = None, limit: int = 100
    ) -> list[BudgetAlert]:
        """Alerts fired so far, newest first."""
        return alerts.alerts(self, account_id=account_id, budget_id=budget_id, limit=limit)

    def fold_spend(self, account_id: str | None = None) -> int:
        """Fold acknowledged charges into budget spend sums (keeps budget reads short); how many rows moved."""
        return budgets.fold_spend(self, account_id)

    def add_webhook(self, url: str, *, secret: str | None = None, account_id: str | None = None) -> WebhookEndpoint:
        """Register an endpoint for threshold alerts (all accounts', or one account's)."""
        return webhooks.add_webhook(self, url, secret=secret, account_id=account_id)

    def webhooks(self) -> list[WebhookEndpoint]:
        """Registered webhook endpoints."""
        return webhooks.webhooks(self)

    def remove_webhook(self, endpoint_id: str) -> None:
        """Stop posting alerts to an endpoint. Raises :class:`UnknownWebhook`."""
        webhooks.remove_webhook(self, endpoint_id)

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

    def log_position(self) -> int:
        """The notification id of the newest event in the log (0 when empty), every acknowledged charge in it."""
        return self.recorder.max_notification_id() or 0

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


def _first_line(exc: BaseException) -> str:
    """The error's first line, for a message (drivers' texts run over several)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _closer(ledger: Ledger) -> Callable[[], None]:
    """An exit hook that closes ``ledger`` if it is still alive (it holds no strong reference)."""
    ref = weakref.ref(ledger)

    def close_at_exit() -> None:
        alive = ref()
        if alive is not None:
            alive.close()

    return close_at_exit
