"""A billing date as the entry points take it: exactly ``YYYY-MM-DD``.

``date.fromisoformat`` alone also takes ``20240131`` and ``2024-W05-3``; the
CLI, the HTTP query and the dashboard accept only the dashed form, so they
all parse through here and differ only in how they word a refusal.
"""

from __future__ import annotations

import re
from datetime import date

_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_day(text: str) -> date:
    """The date ``text`` names (surrounding spaces ignored); ValueError unless it is a real YYYY-MM-DD date."""
    value = text.strip()
    if not _DAY.fullmatch(value):
        raise ValueError(f"not a date in YYYY-MM-DD form: {text!r}")
    return date.fromisoformat(value)
