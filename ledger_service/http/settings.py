"""Deprecated: the HTTP server's settings are the ``http`` section of :mod:`ledger.settings`."""

from ledger.store._moved import moved

__getattr__ = moved(__name__, {
    "HttpSettings": "ledger.settings:HttpSettings",
    "MIN_SECRET_KEY_LENGTH": "ledger.settings:MIN_SECRET_KEY_LENGTH",
})
