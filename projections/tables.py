"""Deprecated: the read model's tables are defined in :mod:`ledger.store.schema`, their SQL in
:mod:`ledger.store.read_model`; the ledger creates every table when it starts."""

from ledger.store._moved import moved

__getattr__ = moved(__name__, {
    name: f"ledger.store.schema:{name}"
    for name in (
        "KEY_COLUMNS",
        "LIVE_NAME",
        "SCRATCH_NAME",
        "UNSPECIFIED",
        "VALUE_COLUMNS",
        "daily_billing_records",
        "daily_billing_records_rebuild",
        "metadata",
        "projection_tracking",
    )
} | {"ensure_tables": "ledger.store.schema:ensure_schema"})
