"""``ledger budgets``: see the module's commands."""

from __future__ import annotations
