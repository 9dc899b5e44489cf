"""Deprecated: the sequencer moved to :mod:`ledger.store.sequencer` (it belongs to the PostgreSQL store)."""

from ledger.store._moved import moved

__getattr__ = moved(__name__, {
    "Sequencer": "ledger.store.sequencer:Sequencer",
    "Drain": "ledger.store.sequencer:Drain",
})
