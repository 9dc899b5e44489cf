"""Deprecated: the store's set-up and recorder moved to :mod:`ledger.store`.

The datastore and driver errors are in :mod:`ledger.store.engine`, the
recorder in :mod:`ledger.store.recorder` (each dialect's store in
:mod:`ledger.store.postgres` and :mod:`ledger.store.sqlite`), the factory in
:mod:`ledger.store.factory`, the tables and the schema lock in
:mod:`ledger.store.schema`.
"""

from ledger.store._moved import moved

__getattr__ = moved(__name__, {
    "APPLICATION_NAME": "ledger.store.recorder:APPLICATION_NAME",
    "LedgerRecorder": "ledger.store.recorder:LedgerRecorder",
    "stored_payload": "ledger.store.recorder:stored_payload",
    "LedgerFactory": "ledger.store.factory:LedgerFactory",
    "make_datastore": "ledger.store.engine:make_datastore",
    "persistence_error": "ledger.store.engine:persistence_error",
    "DBAPI_ERRORS": "ledger.store.engine:DBAPI_ERRORS",
    "CONNECTION_ERRORS": "ledger.store.engine:CONNECTION_ERRORS",
    "create_tables": "ledger.store.schema:create_tables",
    "schema_lock": "ledger.store.schema:schema_lock",
    "charge_index": "ledger.store.schema:charge_index",
    "charge_ids": "ledger.store.schema:charge_index",
})
