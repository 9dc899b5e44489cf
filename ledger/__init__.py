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

from types import ModuleType
from typing import TYPE_CHECKING, Any

__all__ = [
    "Account",
    "AlreadyReversed",
    "AmbiguousCharge",
    "BusyAccount",
    "Charge",
    "ChargeConflict",
    "InvalidCharge",
    "InvalidPrice",
    "Ledger",
    "LedgerError",
    "LedgerUnavailable",
    "Outcome",
    "Price",
    "PriceTable",
    "Receipt",
    "Reversal",
    "Settings",
    "Totals",
    "UnknownAccount",
    "UnknownCharge",
    "Unpriced",
]

_ERRORS = {"AlreadyReversed", "AmbiguousCharge", "BusyAccount", "ChargeConflict", "InvalidCharge",
           "InvalidPrice", "LedgerError", "LedgerUnavailable", "UnknownAccount", "UnknownCharge", "Unpriced"}


def _module_of(name: str) -> ModuleType | None:
    """The module that defines a public name, imported now (None for a name the package lacks)."""
    if name == "Ledger":
        from ledger import application as module
    elif name in ("Outcome", "Receipt", "Reversal"):
        from ledger import receipts as module
    elif name == "Charge":
        from ledger import charges as module
    elif name in ("Account", "Totals"):
        from ledger import domain as module
    elif name in ("Price", "PriceTable"):
        from ledger import pricing as module
    elif name == "Settings":
        from ledger import settings as module
    elif name in _ERRORS:
        from ledger import errors as module
    else:
        return None
    return module


def __getattr__(name: str) -> Any:
    module = _module_of(name)
    if module is None:
        raise AttributeError(f"module 'ledger' has no attribute {name!r}")
    value = getattr(module, name)
    globals()[name] = value
    return value


if TYPE_CHECKING:  # pragma: no cover
    from ledger.application import Ledger
    from ledger.charges import Charge
    from ledger.domain import Account, Totals
    from ledger.errors import (
        AlreadyReversed,
        AmbiguousCharge,
        BusyAccount,
        ChargeConflict,
        InvalidCharge,
        InvalidPrice,
        LedgerError,
        UnknownAccount,
        UnknownCharge,
        Unpriced,
    )
    from ledger.pricing import Price, PriceTable
    from ledger.receipts import Outcome, Receipt, Reversal
    from ledger.settings import Settings
