"""The ledger's domain errors: what a caller can act on, with the field named."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class LedgerError(Exception):
    """Base of every error the ledger raises on purpose."""


class InvalidInput(LedgerError, ValueError):
    """Input failed validation; ``errors`` maps each bad field to why."""

    what = "input"

    def __init__(self, errors: Mapping[str, str]) -> None:
        self.errors = dict(errors)
        super().__init__(str(self))

    def __str__(self) -> str:
        listed = "; ".join(f"{name}: {message}" for name, message in sorted(self.errors.items()))
        return f"invalid {self.what}: {listed}"


class InvalidCharge(InvalidInput):
    """A charge failed validation: nothing was stored."""

    what = "charge"


class InvalidPrice(InvalidInput):
    """A price or a catalogue file failed validation: no price was set."""

    what = "price"


class Unpriced(InvalidCharge):
    """No price covers the charge, and the ledger is set to refuse unpriced charges."""


class ChargeConflict(LedgerError):
    """A charge id already recorded arrived again with different facts."""

    def __init__(self, charge_id: str, differences: Mapping[str, tuple[Any, Any]]) -> None:
        self.charge_id = charge_id
        self.differences = dict(differences)
        super().__init__(str(self))

    @property
    def fields(self) -> list[str]:
        return sorted(self.differences)

    def __str__(self) -> str:
        listed = "; ".join(
            f"{name}: recorded {old!r}, now {new!r}"
            for name, (old, new) in sorted(self.differences.items())
        )
        return f"charge {self.charge_id!r} was already recorded with different fields: {listed}"


class UnknownCharge(LedgerError, LookupError):
    """No charge with this id was ever recorded (for the account, when one is named)."""

    def __init__(self, charge_id: str, account_id: str | None = None) -> None:
        self.charge_id = charge_id
        self.account_id = account_id
        if account_id is None:
            super().__init__(f"unknown charge {charge_id!r}: no charge with this id was recorded")
        else:
            super().__init__(
                f"unknown charge {charge_id!r} in account {account_id!r}: "
                "no charge with this id was recorded for it"
            )


class AmbiguousCharge(LedgerError, LookupError):
    """A charge id used by several accounts, given without the account that names one."""

    def __init__(self, charge_id: str) -> None:
        self.charge_id = charge_id
        super().__init__(
            f"charge id {charge_id!r} was recorded by more than one account "
            "(ids are unique per account): name the account"
        )


class AlreadyReversed(LedgerError):
    """A charge can be reversed once; a second reversal would count it twice."""

    def __init__(self, charge_id: str) -> None:
        self.charge_id = charge_id
        super().__init__(f"charge {charge_id!r} is already reversed")


class UnknownAccount(LedgerError, LookupError):
    """No charge was ever recorded for this account."""

    def __init__(self, account_id: str) -> None:
        self.account_id = account_id
        super().__init__(f"unknown account {account_id!r}: no charge was recorded for it")


class BusyAccount(LedgerError):
    """Concurrent writers kept winning the race for one account; the charge was not stored.

    Transient: the same call may be retried (it is idempotent by charge id).
    """


class InvalidBudget(InvalidInput):
    """A budget failed validation: nothing was set."""

    what = "budget"


class InvalidReservation(InvalidInput):
    """A reservation, capture or release was refused for its input: nothing was held or recorded."""

    what = "reservation"


class InvalidCredit(InvalidInput):
    """A credit grant failed validation: nothing was granted."""

    what = "credit grant"


class InvalidWebhook(InvalidInput):
    """A webhook endpoint failed validation: nothing was registered."""

    what = "webhook"


class UnknownBudget(LedgerError, LookupError):
    """No budget with this id is set."""

    def __init__(self, budget_id: str) -> None:
        self.budget_id = budget_id
        super().__init__(f"unknown budget {budget_id!r}: no budget with this id is set")


class UnknownReservation(LedgerError, LookupError):
    """No reservation with this id was made."""

    def __init__(self, reservation_id: str) -> None:
        self.reservation_id = reservation_id
        super().__init__(f"unknown reservation {reservation_id!r}: no reservation with this id was made")


class UnknownWebhook(LedgerError, LookupError):
    """No webhook endpoint with this id is registered."""

    def __init__(self, endpoint_id: str) -> None:
        self.endpoint_id = endpoint_id
        super().__init__(f"unknown webhook {endpoint_id!r}: no endpoint with this id is registered")


class ReservationConflict(LedgerError):
    """A reservation cannot do what was asked: released, captured by another charge, or reused with other terms."""

    def __init__(self, reservation_id: str, reason: str) -> None:
        self.reservation_id = reservation_id
        self.reason = reason
        super().__init__(f"reservation {reservation_id!r} {reason}")


class BudgetExceeded(LedgerError):
    """A hard budget cannot hold the estimate: nothing was reserved.

    ``figures`` names the budget's limit, spent, held and remaining in its
    unit (``limit_micros`` … or ``limit_tokens`` …), as a status does.
    """

    def __init__(self, budget_id: str, figures: dict[str, int], estimate: int) -> None:
        self.budget_id = budget_id
        self.figures = dict(figures)
        self.estimate = estimate
        listed = ", ".join(f"{name} {value}" for name, value in self.figures.items())
        super().__init__(f"budget {budget_id!r} cannot hold an estimate of {estimate}: {listed}")


class LedgerUnavailable(LedgerError):
    """The database could not be reached (or stayed read-only) until the retry deadline passed.

    Transient: the call may be retried with the same charge ids (``charge_ids``
    names them; a charge recorded by an attempt whose outcome was unknown is
    then answered as a duplicate, never counted twice).
    """

    def __init__(self, seconds: float, charge_ids: Sequence[str] = (), cause: str = "") -> None:
        self.seconds = seconds
        self.charge_ids = list(charge_ids)
        self.cause = cause
        ids = ""
        if self.charge_ids:
            shown = ", ".join(repr(charge_id) for charge_id in self.charge_ids[:10])
            more = f" and {len(self.charge_ids) - 10} more" if len(self.charge_ids) > 10 else ""
            ids = f" (charge ids {shown}{more})"
        why = f": {cause}" if cause else ""
        super().__init__(
            f"the database could not be reached within {seconds:g} s{why}; the charge may be retried "
            f"with the same charge id{ids}: it is recorded at most once"
        )
