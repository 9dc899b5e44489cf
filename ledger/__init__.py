"""An event-sourced usage ledger for LLM platforms: the write side.

Record each model call's token usage as an immutable charge, exactly once::

    from ledger import Ledger
    ledger = Ledger.from_url("sqlite:///ledger.db")
    receipt = ledger.record_charge(account_id="acme", charge_type="completion",
                                   prompt_tokens=100, completion_tokens=50)

Names are imported on first use, so ``ledger --help`` starts without loading
the event-sourcing stack.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Ledger": "ledger.application",
    "Outcome": "ledger.application",
    "Receipt": "ledger.application",
    "Reversal": "ledger.application",
    "Charge": "ledger.charges",
    "Account": "ledger.domain",
    "Totals": "ledger.domain",
    "AlreadyReversed": "ledger.errors",
    "AmbiguousCharge": "ledger.errors",
    "BusyAccount": "ledger.errors",
    "ChargeConflict": "ledger.errors",
    "InvalidCharge": "ledger.errors",
    "InvalidPrice": "ledger.errors",
    "Unpriced": "ledger.errors",
    "Price": "ledger.pricing",
    "PriceTable": "ledger.pricing",
    "LedgerError": "ledger.errors",
    "UnknownAccount": "ledger.errors",
    "UnknownCharge": "ledger.errors",
    "Settings": "ledger.settings",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'ledger' has no attribute {name!r}") from None
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:  # pragma: no cover
    from ledger.application import Ledger, Outcome, Receipt, Reversal
    from ledger.charges import Charge
    from ledger.domain import Account, Totals
    from ledger.errors import (
        AlreadyReversed,
        AmbiguousCharge,
        BusyAccount,
        ChargeConflict,
        InvalidCharge,
        LedgerError,
        UnknownAccount,
        UnknownCharge,
    )
    from ledger.settings import Settings
