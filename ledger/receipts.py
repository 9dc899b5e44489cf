"""What recording and reversing answer: proof of what was stored, per charge or per batch item."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from datetime import datetime, timezone
from typing import Any

from ledger.charges import Charge
from ledger.errors import ChargeConflict, LedgerError


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


def _as_json(proof: Receipt | Reversal) -> dict[str, Any]:
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


def known_charge(charge: Charge, stored: Mapping[str, Any], recorded_at: datetime | None) -> Receipt | LedgerError:
    """For an id already recorded: the original receipt if the facts are the same, else a conflict naming what differs."""
    differences = charge.differences(stored)
    if differences:
        return ChargeConflict(charge.charge_id, differences)
    if recorded_at is not None and recorded_at.tzinfo is None:
        recorded_at = recorded_at.replace(tzinfo=timezone.utc)  # noqa: UP017 - SQLite drops the zone
    return Receipt(
        charge.charge_id,
        stored["account_id"],
        True,
        recorded_at,
        stored.get("cost_micros"),
        stored.get("price_version"),
    )
