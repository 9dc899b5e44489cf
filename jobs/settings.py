"""Deprecated: the delivery settings are the ``jobs`` section of :mod:`ledger.settings`."""

from ledger.store._moved import moved

__getattr__ = moved(__name__, {"DeliverySettings": "ledger.settings:JobsSettings"})
