"""Prepaid credits: grants (events), and the balance they leave after the spend they covered.

A grant adds ``amount_micros`` of credit to an account, optionally until
``expires_at``. Credit is counted per billing day: spend is covered day by
day in billing-date order, each day's cost taken from the grants that cover
that day (granted on or before it, and expiring on a later billing date),
the earliest-expiring first (a grant that never expires last; ties by grant
time). The balance is what the
unexpired grants have left. Spend no grant covers is not owed to any grant:
it shows as overage, and a credits budget then refuses reservations.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import TYPE_CHECKING, Any
from uuid import NAMESPACE_URL, UUID, uuid5
from zoneinfo import ZoneInfo

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import IntegrityError
from sqlalchemy.orm import Session

from ledger.backoff import backoff
from ledger.billing_keys import billing_date
from ledger.budget_rules import identifier, positive_amount, utc_now
from ledger.errors import BusyAccount, InvalidCredit
from ledger.store import budgets as rows
from ledger.store.spend import daily_spend

if TYPE_CHECKING:
    from ledger.application import Ledger

CREDITS_NAMESPACE = uuid5(NAMESPACE_URL, "urn:llm-usage-ledger:credits")


class CreditLine(Aggregate):
    """An account's credit grants, in the order they were made."""

    @staticmethod
    def create_id(account_id: str) -> UUID:
        return uuid5(CREDITS_NAMESPACE, account_id)

    @event("Opened")
    def __init__(self, account_id: str) -> None:
        self.account_id = account_id
        self.grants: list[str] = []

    @event("Granted")
    def grant(self, grant_id: str, amount_micros: int, granted_at: datetime, expires_at: datetime | None) -> None:
        self.grants.append(grant_id)


@dataclass(frozen=True)
class CreditGrant:
    """A grant as stored, and (in a balance) what it has left now."""

    grant_id: str
    account_id: str
    amount_micros: int
    granted_at: datetime
    expires_at: datetime | None
    remaining_micros: int | None = None
    duplicate: bool = False

    #: Whether the grant no longer counts (its expiry date has begun), as of the balance that listed it.
    expired: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "grant_id": self.grant_id,
            "account_id": self.account_id,
            "amount_micros": self.amount_micros,
            "granted_at": self.granted_at.isoformat(),
            "expires_at": None if self.expires_at is None else self.expires_at.isoformat(),
            "remaining_micros": self.remaining_micros,
            "expired": self.expired,
        }


@dataclass(frozen=True)
class Balance:
    """An account's credit now: unexpired grants, what they covered, what is left, and uncovered spend."""

    account_id: str
    balance_micros: int
    granted_micros: int
    used_micros: int
    overage_micros: int
    grants: list[CreditGrant] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "balance_micros": self.balance_micros,
            "granted_micros": self.granted_micros,
            "used_micros": self.used_micros,
            "overage_micros": self.overage_micros,
            "grants": [g.to_dict() for g in self.grants],
        }


def grant_credits(
    ledger: Ledger, account_id: Any, amount_micros: Any, expires_at: Any = None, grant_id: Any = None
) -> CreditGrant:
    """Grant credit (an event); the same ``grant_id`` again returns the first grant, marked duplicate."""
    errors: dict[str, str] = {}
    account = identifier(errors, "account_id", account_id)
    amount = positive_amount(errors, "amount_micros", amount_micros)
    if amount is None and "amount_micros" not in errors:
        errors["amount_micros"] = "is required"
    gid = identifier(errors, "grant_id", grant_id, required=False) or f"grant_{uuid.uuid4().hex}"
    now = utc_now()
    expiry = _expiry(errors, expires_at, now, ledger.settings.zone)
    if errors:
        raise InvalidCredit(errors)
    assert account is not None and amount is not None
    for attempt in range(ledger.settings.retry_attempts):
        try:
            return _grant(ledger, account, amount, expiry, gid, now)
        except IntegrityError:
            backoff(attempt)
    raise BusyAccount(f"could not grant credits to {account!r}: concurrent grants kept conflicting")


def _expiry(errors: dict[str, str], value: Any, now: datetime, zone: ZoneInfo) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            errors["expires_at"] = "must be an ISO 8601 time with its offset, e.g. 2027-01-01T00:00:00Z"
            return None
    if not isinstance(value, datetime) or value.tzinfo is None:
        errors["expires_at"] = "must be a time with its offset (timezone-aware)"
        return None
    if value <= now:
        errors["expires_at"] = "must be in the future"
        return None
    if billing_date(value, zone) <= billing_date(now, zone):
        errors["expires_at"] = (
            "must fall on a later billing date than today: credit is counted per billing day, and a grant "
            "stops covering spend at the start of its expiry date"
        )
        return None
    return value.astimezone(UTC)


def _grant(
    ledger: Ledger, account_id: str, amount: int, expires_at: datetime | None, grant_id: str, now: datetime
) -> CreditGrant:
    with ledger.store.transaction(commit=True) as session:
        known = rows.grant_row(session, grant_id)
        if known is not None:
            if known["account_id"] != account_id or known["amount_micros"] != amount or (
                expires_at is not None and known["expires_at"] != expires_at
            ):
                raise InvalidCredit({"grant_id": (
                    f"grant {grant_id!r} was made with other terms (account {known['account_id']!r}, "
                    f"{known['amount_micros']} micros): use a new grant id"
                )})
            return _grant_of(known, duplicate=True)
        try:
            line: CreditLine = ledger.repository.get(CreditLine.create_id(account_id))
        except AggregateNotFoundError:
            line = CreditLine(account_id)
        line.grant(grant_id, amount, now, expires_at)
        ledger.save(line)
        values = {"grant_id": grant_id, "account_id": account_id, "amount_micros": amount,
                  "granted_at": now, "expires_at": expires_at}
        rows.insert_grant(session, ledger.store.dialect, values)
    return _grant_of(values)


def _grant_of(
    row: dict[str, Any], *, remaining: int | None = None, duplicate: bool = False, expired: bool = False
) -> CreditGrant:
    return CreditGrant(row["grant_id"], row["account_id"], int(row["amount_micros"]), row["granted_at"],
                       row["expires_at"], remaining, duplicate, expired)


def credit_line(ledger: Ledger, session: Session, account_id: str, now: datetime) -> Balance:
    """The account's :class:`Balance` at ``now``, read in ``session``."""
    grants = rows.grant_rows(session, account_id)
    if not grants:
        return Balance(account_id, 0, 0, 0, 0, [])
    zone = ledger.settings.zone
    first = min(billing_date(g["granted_at"], zone) for g in grants)
    since_at = datetime.combine(first, time(0), tzinfo=zone).astimezone(UTC)
    spent = daily_spend(session, account_id, first, since_at, zone)
    return allocate(account_id, grants, spent, zone, now)


def allocate(
    account_id: str, grants: list[dict[str, Any]], spent: dict[date, int], zone: ZoneInfo, now: datetime
) -> Balance:
    """Cover each day's spend from the grants covering it, earliest expiry first; the balance left at ``now``.

    Credit is counted per billing day: a grant covers the billing dates from
    the one it was granted on up to, not including, the billing date of its
    ``expires_at``, and counts in the balance over the same days. So spend is
    never taken from a grant the balance no longer shows, nor the reverse.
    """
    left = {g["grant_id"]: int(g["amount_micros"]) for g in grants}
    never = date.max
    first = {g["grant_id"]: billing_date(g["granted_at"], zone) for g in grants}
    last = {g["grant_id"]: never if g["expires_at"] is None else billing_date(g["expires_at"], zone) for g in grants}
    order = sorted(grants, key=lambda g: (last[g["grant_id"]], g["granted_at"], g["grant_id"]))
    overage = 0
    for day in sorted(spent):
        cost = spent[day]
        for g in order:
            if cost <= 0:
                break
            if not first[g["grant_id"]] <= day < last[g["grant_id"]]:
                continue
            take = min(left[g["grant_id"]], cost)
            left[g["grant_id"]] -= take
            cost -= take
        overage += max(cost, 0)
    today = billing_date(now, zone)
    live = [g for g in grants if today < last[g["grant_id"]]]
    granted = sum(int(g["amount_micros"]) for g in live)
    balance = sum(left[g["grant_id"]] for g in live)
    listed = [_grant_of(g, remaining=left[g["grant_id"]], expired=today >= last[g["grant_id"]]) for g in grants]
    return Balance(account_id, balance, granted, granted - balance, overage, listed)


def balance(ledger: Ledger, account_id: str) -> Balance:
    """The account's prepaid balance now (0 with no grants)."""
    with ledger.store.transaction(commit=False) as session:
        return credit_line(ledger, session, account_id, utc_now())
