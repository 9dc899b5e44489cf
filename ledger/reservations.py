"""Reservations: hold budget before a model call, then capture the real charge or release the hold.

``reserve`` locks the hard budgets in the reservation's scope (their rows,
in id order), reads spent and held in one statement, and inserts the hold
only if every hard budget can take the estimate: spent + held + estimate ≤
limit. Reservations on the same budgets wait for each other for that one
short transaction, never across a model call; recording takes no such lock.

A capture records its charge and marks the hold captured in one
transaction, so the estimate stops counting exactly when the charge starts
to (spent and held are read in one statement): a capture is never counted
twice nor missed. An expired hold stops counting
at ``expires_at`` by itself: no sweeper is needed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ledger import alerts
from ledger.appender import STALE_CATALOGUE_RETRIES
from ledger.budget_rules import (
    BudgetStatus,
    Period,
    current_period,
    identifier,
    positive_amount,
    refusal,
    utc_now,
)
from ledger.budgets import fold_spend, status_of, statuses_of, usage_of
from ledger.errors import (
    BudgetExceeded,
    BusyAccount,
    InvalidReservation,
    LedgerError,
    ReservationConflict,
    UnknownReservation,
)
from ledger.receipts import Receipt
from ledger.store import budgets as rows
from ledger.store import reservations_pg as calls
from ledger.store.schema import holds

if TYPE_CHECKING:
    from ledger.application import Ledger

#: Unfolded charges in a reservation's scope above which the reservation folds its account's
#: spend afterwards, so reads of spent stay short on a busy account.
FOLD_AFTER = 100
#: The longest a hold may live: a model call that takes longer is not a reservation's business.
MAX_TTL_SECONDS = 86_400
DEFAULT_TTL_SECONDS = 600


@dataclass(frozen=True)
class Reservation:
    """A granted hold: until ``expires_at``, its estimate counts against the budgets in its scope."""

    reservation_id: str
    account_id: str
    user_id: str | None
    estimate_micros: int | None
    estimate_tokens: int | None
    expires_at: datetime
    duplicate: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "reservation_id": self.reservation_id,
            "account_id": self.account_id,
            "user_id": self.user_id,
            "estimate_micros": self.estimate_micros,
            "estimate_tokens": self.estimate_tokens,
            "expires_at": self.expires_at.isoformat(),
            "duplicate": self.duplicate,
        }


@dataclass(frozen=True)
class Capture(Receipt):
    """A capture's receipt: the charge's, plus the reservation it settled and whether its hold had expired."""

    reservation_id: str = ""
    hold_expired: bool = False


def new_reservation_id() -> str:
    """An id for a reservation made without one (given before the first attempt, so a retry finds its hold)."""
    return f"rsv_{uuid.uuid4().hex}"


def _terms(
    account_id: Any, user_id: Any, estimate_micros: Any, estimate_tokens: Any, ttl_seconds: Any, reservation_id: Any
) -> tuple[str, str | None, int | None, int | None, int, str]:
    errors: dict[str, str] = {}
    account = identifier(errors, "account_id", account_id)
    user = identifier(errors, "user_id", user_id, required=False)
    micros = positive_amount(errors, "estimate_micros", estimate_micros)
    tokens = positive_amount(errors, "estimate_tokens", estimate_tokens)
    if estimate_micros is None and estimate_tokens is None:
        errors["estimate_micros"] = "give estimate_micros or estimate_tokens (or both)"
    if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int):
        errors["ttl_seconds"] = "must be an integer number of seconds"
    elif not 1 <= ttl_seconds <= MAX_TTL_SECONDS:
        errors["ttl_seconds"] = f"must be from 1 to {MAX_TTL_SECONDS} seconds (a day)"
    rid = identifier(errors, "reservation_id", reservation_id, required=False) or new_reservation_id()
    if errors:
        raise InvalidReservation(errors)
    assert account is not None
    return account, user, micros, tokens, ttl_seconds, rid


def reserve(
    ledger: Ledger,
    account_id: Any,
    *,
    user_id: Any = None,
    estimate_micros: Any = None,
    estimate_tokens: Any = None,
    ttl_seconds: Any = DEFAULT_TTL_SECONDS,
    reservation_id: Any = None,
) -> Reservation:
    """Hold ``estimate_*`` against the budgets of the account (and user); :class:`BudgetExceeded` if a hard one cannot."""
    account, user, micros, tokens, ttl, rid = _terms(
        account_id, user_id, estimate_micros, estimate_tokens, ttl_seconds, reservation_id
    )
    if ledger.store.is_postgres:
        granted = _reserve_in_one_call(ledger, rid, account, user, micros, tokens, ttl)
        if granted is not None:
            return granted
    with ledger.store.transaction(commit=True) as session:
        known = rows.find_hold(session, rid)
        if known is not None:
            return _repeat(known, account, user, micros, tokens)
        in_scope = rows.budgets_in_scope(session, account, user, lock=True)
        now = utc_now()
        statuses = statuses_of(ledger, session, in_scope, now)
        alerts.check_in(ledger, session, in_scope, now, statuses)
        refused = _refusal(statuses, micros, tokens)
        if refused is None:  # a refusal still commits the alerts its figures fired
            expires_at = now + timedelta(seconds=ttl)
            rows.insert_hold(session, {
                "reservation_id": rid, "account_id": account, "user_id": user, "estimate_micros": micros,
                "estimate_tokens": tokens, "created_at": now, "expires_at": expires_at, "state": "held",
                "charge_id": rid,
            })
    if refused is not None:
        raise refused
    _after(ledger, account, statuses)
    return Reservation(rid, account, user, micros, tokens, expires_at)


def _refusal(statuses: list[BudgetStatus], micros: int | None, tokens: int | None) -> LedgerError | None:
    """Why the hard budgets among ``statuses`` refuse the estimate, or None when each can take it."""
    for status in (s for s in statuses if s.mode == "hard"):
        estimate = tokens if status.unit == "tokens" else micros
        if estimate is None:
            name = "estimate_tokens" if status.unit == "tokens" else "estimate_micros"
            return InvalidReservation({name: f"budget {status.budget_id!r} is limited in {status.suffix}: give {name}"})
        if refusal(status, estimate):
            return BudgetExceeded(status.budget_id, status.figures(), estimate)
    return None


def _reserve_in_one_call(
    ledger: Ledger, rid: str, account: str, user: str | None, micros: int | None, tokens: int | None, ttl: int
) -> Reservation | None:
    """PostgreSQL's one-call reservation (``reservations.sql``); None when the Python path must decide."""
    now = utc_now()
    expires_at = now + timedelta(seconds=ttl)
    answer = calls.reserve(
        ledger.store, reservation_id=rid, account_id=account, user_id=user, estimate_micros=micros,
        estimate_tokens=tokens, now=now, expires_at=expires_at, **_periods(ledger, now),
    )
    if answer.outcome != "granted":
        return None  # known, refused, a missing estimate or a credits budget: the Python path answers
    statuses = _statuses(answer.budgets)
    if alerts.may_fire(ledger, statuses):
        with ledger.store.transaction(commit=True) as session:
            alerts.check_in(ledger, session, [], now, statuses)
    _after(ledger, account, statuses)
    _remember(ledger, {"reservation_id": rid, "account_id": account, "user_id": user, "charge_id": rid,
                       "state": "held", "expires_at": expires_at})
    return Reservation(rid, account, user, micros, tokens, expires_at)


#: Reservations a ledger remembers having made (their account, user and expiry never change), so the
#: process that reserved captures without reading the hold first; the capture still checks its state.
MADE_HERE_LIMIT = 10_000


def _remember(ledger: Ledger, hold: dict[str, Any]) -> None:
    made = ledger.made_here
    if len(made) >= MADE_HERE_LIMIT:
        made.pop(next(iter(made)))
    made[hold["reservation_id"]] = hold


def _periods(ledger: Ledger, now: datetime) -> dict[str, Period]:
    zone = ledger.settings.zone
    return {"day": current_period("day", zone, now), "month": current_period("month", zone, now)}


def _statuses(budget_rows: list[dict[str, Any]]) -> list[BudgetStatus]:
    """Statuses of budget rows answered with their usage (credits budgets left to the Python path's checks)."""
    return [status_of(row, row["period_start"], usage_of(row)) for row in budget_rows if row["unit"] != "credits"]


def _after(ledger: Ledger, account: str, statuses: list[BudgetStatus]) -> None:
    """After a reservation: fold the account's spend when its reads have grown long."""
    if any(status.unfolded > FOLD_AFTER for status in statuses):
        fold_spend(ledger, account)


def _repeat(known: dict[str, Any], account: str, user: str | None, micros: int | None, tokens: int | None) -> Reservation:
    """The reservation already made under this id; other terms under the same id are a conflict."""
    if (known["account_id"], known["user_id"], known["estimate_micros"], known["estimate_tokens"]) != (
        account, user, micros, tokens
    ):
        raise ReservationConflict(known["reservation_id"], "was made with other terms: use a new reservation id")
    return Reservation(known["reservation_id"], account, user, micros, tokens, known["expires_at"], duplicate=True)


def capture(ledger: Ledger, reservation_id: Any, fields: dict[str, Any]) -> Capture:
    """Record the reserved call's charge (account and user from the reservation) and settle its hold.

    One transaction: the hold's row is locked, the charge recorded and the
    hold marked captured, so the estimate stops counting exactly when the
    charge starts to. The charge id defaults to the reservation id. A cost
    above the estimate is recorded and counted all the same; a capture after
    expiry records the charge too (the call happened) and says the hold had
    expired. Capturing again with the same facts answers the same receipt
    (``duplicate``); other facts, or another charge id, are a conflict.
    """
    rid = _reservation_id(reservation_id)
    if ledger.store.is_postgres:
        captured = _capture_in_one_call(ledger, rid, fields)
        if captured is not None:
            return captured
    now = utc_now()
    with ledger.store.transaction(commit=True) as session:
        hold = rows.find_hold(session, rid, lock=True)
        charge = _capturable(rid, hold, fields)
        assert hold is not None
        receipt = ledger.record_in_transaction(charge)
        if hold["state"] == "held":
            rows.settle_hold(session, rid, "captured", receipt.charge_id, now)
    return _capture_of(receipt, rid, hold, now)


def _capture_in_one_call(ledger: Ledger, rid: str, fields: dict[str, Any]) -> Capture | None:
    """PostgreSQL's one-call capture (``reservations.sql``); None when the Python path must settle it."""
    store = ledger.store
    hold = ledger.made_here.get(rid) or calls.find_hold(store, rid)
    charge = ledger.validated(_capturable(rid, hold, fields))
    assert hold is not None
    for _ in range(STALE_CATALOGUE_RETRIES):
        now = utc_now()
        batch, costs = ledger.appender.batch_of([charge], ledger.price_table(), now)
        answer = calls.capture(store, reservation_id=rid, now=now, batch=batch)
        if answer.outcome != "stale":
            break
        ledger.price_table(refresh=True)
    else:
        raise BusyAccount("prices kept changing while the charge was costed; nothing was stored, retry")
    if answer.outcome == "decide":
        return None
    if answer.outcome != "recorded":  # the hold changed since it was read: answer as the Python path would
        _capturable(rid, {**hold, "state": answer.outcome, "charge_id": answer.hold_charge_id}, fields)
        raise AssertionError(f"ledger_capture answered {answer.outcome!r} for a capturable hold")
    store.took_in()  # type: ignore[attr-defined]
    ledger.made_here.pop(rid, None)
    assert answer.appended is not None
    (result,) = ledger.receipts_of([charge], ledger.appender.costed([answer.appended], costs), now)
    if isinstance(result, LedgerError):
        raise result
    return _capture_of(result, rid, hold, now)


def _capturable(rid: str, hold: dict[str, Any] | None, fields: dict[str, Any]) -> dict[str, Any]:
    """The charge a capture of ``hold`` records, or why it may not: unknown, released, or captured by another id."""
    if hold is None or hold["state"] == "unknown":
        raise UnknownReservation(rid)
    if hold["state"] == "released":
        raise ReservationConflict(rid, "was released: nothing was recorded; reserve again for a new call")
    charge = _charge_fields(hold, fields)
    if hold["state"] == "captured" and charge["charge_id"] != hold["charge_id"]:
        raise ReservationConflict(rid, f"was already captured by charge {hold['charge_id']!r}: nothing was recorded")
    return charge


def _capture_of(receipt: Receipt, rid: str, hold: dict[str, Any], now: datetime) -> Capture:
    """The capture's receipt: the charge's, the reservation, and whether the hold had expired."""
    return Capture(**{**receipt.__dict__, "reservation_id": rid, "hold_expired": hold["expires_at"] <= now})


def _charge_fields(hold: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    charge = dict(fields)
    for name in ("account_id", "user_id"):
        if name in charge and charge[name] is not None and hold[name] is not None and charge[name] != hold[name]:
            raise InvalidReservation({name: (
                f"the reservation was made for {name} {hold[name]!r}; a capture records its charge there"
            )})
    charge["account_id"] = hold["account_id"]
    if hold["user_id"] is not None:
        charge["user_id"] = hold["user_id"]
    if charge.get("charge_id") is None:
        charge["charge_id"] = hold["charge_id"]
    return charge


def release(ledger: Ledger, reservation_id: Any) -> None:
    """Release a hold that was not captured; releasing twice is harmless. Refused once it was captured."""
    rid = _reservation_id(reservation_id)
    with ledger.store.transaction(commit=True) as session:
        result = session.execute(
            holds.update()
            .where(holds.c.reservation_id == rid, holds.c.state == "held")
            .values(state="released", settled_at=utc_now())
        )
        if result.rowcount:  # type: ignore[attr-defined]
            return
        hold = rows.find_hold(session, rid)
    if hold is None:
        raise UnknownReservation(rid)
    if hold["state"] == "released":
        return
    raise ReservationConflict(rid, f"was captured by charge {hold['charge_id']!r}: there is no hold to release")


def get_reservation(ledger: Ledger, reservation_id: str) -> Reservation:
    """The reservation as made. Raises :class:`UnknownReservation`."""
    with ledger.store.transaction(commit=False) as session:
        hold = rows.find_hold(session, reservation_id)
    if hold is None:
        raise UnknownReservation(reservation_id)
    return Reservation(hold["reservation_id"], hold["account_id"], hold["user_id"], hold["estimate_micros"],
                       hold["estimate_tokens"], hold["expires_at"])


def hold_state(ledger: Ledger, reservation_id: str) -> str:
    """"held", "captured", "released" or "expired": what a reservation is now."""
    with ledger.store.transaction(commit=False) as session:
        hold = rows.find_hold(session, reservation_id)
    if hold is None:
        raise UnknownReservation(reservation_id)
    if hold["state"] == "held" and hold["expires_at"] <= utc_now():
        return "expired"
    return str(hold["state"])


def _reservation_id(value: Any) -> str:
    errors: dict[str, str] = {}
    rid = identifier(errors, "reservation_id", value)
    if errors:
        raise InvalidReservation(errors)
    assert rid is not None
    return rid


class ReservationScope:
    """What ``Ledger.reservation`` yields: the reservation, and ``capture`` for the call's real charge."""

    def __init__(self, ledger: Ledger, reservation: Reservation) -> None:
        self.ledger = ledger
        self.reservation = reservation
        self.receipt: Capture | None = None

    @property
    def reservation_id(self) -> str:
        return self.reservation.reservation_id

    @property
    def expires_at(self) -> datetime:
        return self.reservation.expires_at

    def capture(self, **charge_fields: Any) -> Capture:
        self.receipt = self.ledger.capture(self.reservation_id, **charge_fields)
        return self.receipt


@contextmanager
def reservation_scope(ledger: Ledger, account_id: Any, **terms: Any) -> Iterator[ReservationScope]:
    """Reserve; yield; release the hold if the block raised or ended without a capture."""
    scope = ReservationScope(ledger, ledger.reserve(account_id, **terms))  # the ledger's: retried through a failover
    try:
        yield scope
    finally:
        if scope.receipt is None:
            ledger.release(scope.reservation_id)
