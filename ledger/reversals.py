"""Reversing a charge: a ChargeReversed event on the account, and the index row marked, in one transaction.

The charge is named by its account and id (ids are unique per account).
The reversal takes the account's append lock first, so it never races an
append to the same stream, and carries the charge's own facts (cost and
price version included, from the charge-id index), so it takes back exactly
what the charge added. Marking the index row in the event's transaction
(:meth:`ledger.store.recorder.LedgerRecorder._insert_events`) makes a second
reversal fail with :class:`AlreadyReversed`.
"""

from __future__ import annotations

import warnings
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from ledger.backoff import backoff
from ledger.charge_fields import EVENT_DEFAULTS, REVERSED_EVENT_FIELDS
from ledger.charges import optional_str
from ledger.domain import Account, account_uuid
from ledger.errors import AmbiguousCharge, BusyAccount, InvalidCharge, UnknownCharge
from ledger.receipts import Reversal
from ledger.store.recorder import stored_payload

if TYPE_CHECKING:
    from ledger.application import Ledger
    from ledger.settings import Settings
    from ledger.store.base import Store


def reverse_charge(ledger: Ledger, charge_id: Any, reason: Any, account_id: Any) -> Reversal:
    """Reverse a charge (see :meth:`ledger.Ledger.reverse_charge`), retrying writers' races."""
    charge_id, reason = _reversal_input(ledger.settings, charge_id, reason)
    ledger.sequence()  # the charge's own event precedes its reversal in the stream
    account_id = _reversal_account(ledger, charge_id, account_id)
    for attempt in range(ledger.settings.retry_attempts):
        try:
            with ledger.store.transaction(commit=True) as session:
                ledger.store.lock_for_append(session)
                return _reverse(ledger, account_id, charge_id, reason)
        except IntegrityError:
            backoff(attempt)
    raise BusyAccount(f"could not reverse {charge_id!r}: concurrent writers kept conflicting")


def account_of_charge(store: Store, charge_id: str) -> str:
    """The one account that recorded a charge with this id (see :meth:`ledger.Ledger.account_of_charge`)."""
    owners = store.accounts_of_charge(charge_id)
    if not owners:
        raise UnknownCharge(charge_id)
    if len(owners) > 1:
        raise AmbiguousCharge(charge_id)
    return owners[0]


def _reversal_account(ledger: Ledger, charge_id: str, account_id: Any) -> str:
    """The account whose charge is meant: as given (normalised), or the only one that used the id."""
    if account_id is not None:
        given = _recorded_id(ledger.settings, "account_id", account_id)
        if given is None:
            raise UnknownCharge(charge_id, _shown(account_id))
        return given
    warnings.warn(
        "reverse_charge without account_id is deprecated: charge ids are unique per account, "
        "name the account (reverse_charge(charge_id, reason, account_id=...))",
        DeprecationWarning,
        stacklevel=4,  # the caller of Ledger.reverse_charge
    )
    return account_of_charge(ledger.store, charge_id)


def _reversal_input(settings: Settings, charge_id: Any, reason: Any) -> tuple[str, str]:
    """The id as recording normalises it, and the reason as text (by the charges' own rules).

    An id validation would refuse can never have been recorded: it is
    unknown, whatever its type or content (drivers would refuse it).
    """
    given = _recorded_id(settings, "charge_id", charge_id)
    if given is None:
        raise UnknownCharge(_shown(charge_id))
    if reason is None:
        return given, ""
    if isinstance(reason, str):
        reason = reason.strip()[: settings.max_reference_length]
    errors: dict[str, str] = {}
    text = optional_str({"reason": reason}, "reason", errors, settings.max_reference_length)
    if errors:
        raise InvalidCharge(errors)
    return given, text or ""


def _recorded_id(settings: Settings, name: str, value: Any) -> str | None:
    """An id as recording normalises it; None when recording would refuse it, so it never was."""
    return optional_str({name: value}, name, {}, settings.max_string_length)


def _reverse(ledger: Ledger, account_id: str, charge_id: str, reason: str) -> Reversal:
    """In the caller's locked transaction: the event from the index row's facts, saved with the row's mark."""
    row = ledger.store.find_charge(account_id, charge_id)
    if row is None:
        raise UnknownCharge(charge_id, account_id)
    facts = stored_payload(row)
    try:
        account: Account = ledger.repository.get(account_uuid(row.account_id))
    except AggregateNotFoundError:
        account = Account(account_id=row.account_id)
    now = datetime.now(timezone.utc)  # noqa: UP017 - as the rest of the ledger spells it
    given = {"charge_id": charge_id, "reason": reason, "account_id": row.account_id, "recorded_at": now,
             "occurred_at": datetime.fromisoformat(facts["occurred_at"])}
    account.reverse_charge(**{
        name: given[name] if name in given else facts.get(name, EVENT_DEFAULTS.get(name))
        for name in REVERSED_EVENT_FIELDS
    })
    ledger.save(account, reversed_charges=[(row.account_id, charge_id)], reversed_at=now)
    return Reversal(charge_id, row.account_id, now, reason, facts.get("cost_micros"), facts.get("price_version"))


def _shown(value: Any) -> str:
    """A caller's id for an error message: its first 80 characters, or its type when it is no text."""
    return value[:80] if isinstance(value, str) else f"<{type(value).__name__}>"
