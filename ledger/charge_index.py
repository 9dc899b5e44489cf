"""Deprecated: the charge-id index moved to :mod:`ledger.store` (table in ``ledger.store.schema``)."""

from ledger.store._moved import moved

__getattr__ = moved(__name__, {
    "charge_index": "ledger.store.schema:charge_index",
    "install": "ledger.store.charge_index:install",
    "RETIRED_TABLE": "ledger.store.charge_index:RETIRED_TABLE",
})
