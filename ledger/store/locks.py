"""Every PostgreSQL advisory-lock key the ledger takes, in one registry.

Advisory locks are one number per database: two features picking the same
number would block each other for no reason, so each key is named here and
nowhere else. The SQL files read the same numbers (``intake.sql`` defines
``ledger_prices_lock_key()`` and ``ledger_sequencer_lock_key()`` from them
when it is installed); :func:`check_unique` keeps them distinct.
"""

from __future__ import annotations

from enum import IntEnum


class LockKey(IntEnum):
    """Advisory-lock keys (``pg_advisory_xact_lock(key)``)."""

    #: Table creation and upgrades at start: processes starting together take turns.
    SCHEMA = 7_243_001
    #: Price changes (exclusive) against writers' catalogue checks (shared).
    PRICES = 7_243_002
    #: One sequencer at a time moves the intake into the log.
    SEQUENCER = 7_243_003
    #: One fold of budget spend per account at a time (with the account's hash as second key).
    SPEND_FOLD = 7_243_004
    #: Reservations on one budget take turns (with the budget id's hash as second key); no WAL is written.
    BUDGET = 7_243_005


def check_unique() -> None:
    """Raise if two names share a key (an IntEnum would silently alias them)."""
    values = [member.value for member in LockKey.__members__.values()]
    if len(values) != len(set(values)):
        raise RuntimeError(f"advisory-lock keys repeat: {sorted(values)}")


check_unique()
