"""An event-sourced usage ledger for LLM platforms: the write side.

Record each model call's token usage as an immutable charge, exactly once::

    from ledger import Ledger
    ledger = Ledger.from_url("sqlite:///ledger.db")
    receipt = ledger.record_charge(account_id="acme", charge_type="completion",
                                   prompt_tokens=100, completion_tokens=50)
"""

from ledger.application import Ledger, Outcome, Receipt
from ledger.charges import Charge
from ledger.domain import Account, Totals
from ledger.errors import (
    AlreadyReversed,
    BusyAccount,
    ChargeConflict,
    InvalidCharge,
    LedgerError,
    UnknownAccount,
    UnknownCharge,
)
from ledger.settings import Settings

__all__ = [
    "Account",
    "AlreadyReversed",
    "BusyAccount",
    "Charge",
    "ChargeConflict",
    "InvalidCharge",
    "Ledger",
    "LedgerError",
    "Outcome",
    "Receipt",
    "Settings",
    "Totals",
    "UnknownAccount",
    "UnknownCharge",
]
