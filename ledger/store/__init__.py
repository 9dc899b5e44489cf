"""The ledger's storage: the only code that touches engines, tables, SQL files and the library's recorder.

:mod:`ledger.store.base` defines the :class:`~ledger.store.base.Store`
protocol (``Ledger.store``); :mod:`ledger.store.postgres` and
:mod:`ledger.store.sqlite` implement it on the shared recorder of
:mod:`ledger.store.recorder`. Every table beside the library's log is in
:mod:`ledger.store.schema`, created by its ``ensure_schema`` under the one
schema lock; every advisory-lock key is in :mod:`ledger.store.locks`. Each
area's SQL is in a store module of its own, called with the store.
"""
