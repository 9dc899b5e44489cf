"""Lua and SQL used by the ledger's queue storages, one file each."""

from __future__ import annotations

from functools import cache
from pathlib import Path

HERE = Path(__file__).resolve().parent


@cache
def script(name: str) -> str:
    """The text of ``jobs/scripts/<name>``."""
    return (HERE / name).read_text()
