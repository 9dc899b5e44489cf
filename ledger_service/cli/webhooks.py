"""``ledger webhooks``: see the module's commands."""

from __future__ import annotations
