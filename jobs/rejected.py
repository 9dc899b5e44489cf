"""The rejected-charges store: charges a task could not record, kept with why.

A ``create_charge`` task that meets invalid input or a conflicting charge id
does not retry (the same input fails the same way) and does not drop the
charge either: it keeps the original fields and the errors here, in the
ledger's own database (table ``rejected_charges``, read and written by
:mod:`ledger.store.rejected`).
An operator lists them and re-submits each one, corrected if need be
(``ledger rejected``); a row is marked resolved only once the ledger took
the charge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Mapping

from ledger.errors import ChargeConflict, InvalidCharge, LedgerError
from ledger.store import rejected as stored

if TYPE_CHECKING:
    from ledger.application import Ledger, Receipt


class UnknownRejection(LedgerError, LookupError):
    """No rejected charge has this id."""

    def __init__(self, rejected_id: int) -> None:
        self.rejected_id = rejected_id
        super().__init__(f"no rejected charge with id {rejected_id}")


class AlreadyResolved(LedgerError):
    """The rejected charge was resolved already; re-submitting it again is refused."""

    def __init__(self, rejected_id: int, resolution: str | None) -> None:
        self.rejected_id = rejected_id
        super().__init__(f"rejected charge {rejected_id} is already resolved: {resolution}")


@dataclass(frozen=True)
class RejectedCharge:
    """One kept charge: what was submitted, why it failed, and what became of it."""

    id: int
    received_at: datetime
    task_id: str | None
    payload: dict[str, Any]
    errors: dict[str, str]
    resubmitted_at: datetime | None = None
    resolution: str | None = None

    @property
    def resolved(self) -> bool:
        return self.resolution is not None


def errors_of(exc: BaseException) -> dict[str, str]:
    """Field -> message for a rejection; ``charge`` for what concerns the whole charge."""
    if isinstance(exc, InvalidCharge):
        return dict(exc.errors)
    if isinstance(exc, ChargeConflict):
        return {
            name: f"charge id {exc.charge_id!r} was recorded with {old!r}; this charge has {new!r}"
            for name, (old, new) in exc.differences.items()
        }
    return {"charge": f"{type(exc).__name__}: {exc}"}


def jsonable(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The submitted fields as JSON values (datetimes as ISO 8601, the rest as text).

    Whatever was submitted must be keepable, or the charge would be lost with
    its rejection: a non-finite float or an integer too long to write as
    text (over 4,300 digits) is kept as a description instead.
    """

    def plain(value: Any) -> Any:
        if isinstance(value, bool) or value is None or isinstance(value, str):
            return value
        if isinstance(value, int):
            return value if abs(value) < 10**4000 else f"<an integer of {value.bit_length()} bits>"
        if isinstance(value, float):
            return value if math.isfinite(value) else repr(value)
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, Mapping):
            return {_key(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        try:
            return str(value)
        except Exception:  # a hostile object's own __str__ failed
            return f"<{type(value).__name__}>"

    def _key(key: Any) -> str:
        return key if isinstance(key, str) else str(plain(key))

    return plain(dict(payload))


def reject(
    ledger: "Ledger",
    payload: Mapping[str, Any],
    errors: Mapping[str, str],
    *,
    task_id: str | None = None,
) -> int | None:
    """Keep a charge the ledger refused; return its id (None if this task's row exists)."""
    return stored.insert(
        ledger.store,
        received_at=datetime.now(timezone.utc),
        task_id=task_id,
        payload=jsonable(payload),
        errors={str(k): str(v) for k, v in errors.items()},
    )


def list_rejected(ledger: "Ledger", include_resolved: bool = False) -> list[RejectedCharge]:
    """Kept charges, oldest first; unresolved only unless asked."""
    return [RejectedCharge(**row) for row in stored.select(ledger.store, include_resolved)]


def get_rejected(ledger: "Ledger", rejected_id: int) -> RejectedCharge:
    """One kept charge, or :class:`UnknownRejection`."""
    row = stored.select_one(ledger.store, rejected_id)
    if row is None:
        raise UnknownRejection(rejected_id)
    return RejectedCharge(**row)


def resubmit(
    ledger: "Ledger", rejected_id: int, overrides: Mapping[str, Any] | None = None
) -> "Receipt":
    """Record a kept charge through the service, with ``overrides`` applied.

    Marks the row resolved only when the ledger took the charge (a new one,
    or the same charge recorded meanwhile). Errors propagate and the row stays
    open: :class:`~ledger.errors.InvalidCharge`, :class:`~ledger.errors.ChargeConflict`.
    Recording is idempotent by charge id, so a crash between recording and
    marking is repaired by re-submitting again.
    """
    kept = get_rejected(ledger, rejected_id)
    if kept.resolved:
        raise AlreadyResolved(rejected_id, kept.resolution)
    fields = {**kept.payload, **dict(overrides or {})}
    receipt = ledger.record_charge(**fields)
    how = "duplicate of the recorded" if receipt.duplicate else "recorded as"
    _resolve(ledger, rejected_id, f"{how} charge {receipt.charge_id}")
    return receipt


def dismiss(ledger: "Ledger", rejected_id: int, reason: str) -> RejectedCharge:
    """Mark a kept charge resolved without recording it (e.g. a test call), saying why."""
    kept = get_rejected(ledger, rejected_id)
    if kept.resolved:
        raise AlreadyResolved(rejected_id, kept.resolution)
    _resolve(ledger, rejected_id, f"dismissed: {reason}".strip())
    return get_rejected(ledger, rejected_id)


def _resolve(ledger: "Ledger", rejected_id: int, resolution: str) -> None:
    stored.resolve(ledger.store, rejected_id, resolution, datetime.now(timezone.utc))
