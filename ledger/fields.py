"""Field rules shared by charges, prices and reversals: one reading of each kind of value.

Each rule reads ``raw[name]``; a problem is written to ``errors[name]`` (the
caller's field name) and the value returned is then None, so a caller
collects every bad field before refusing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ledger.text import text_problem


def instant_field(
    raw: Mapping[str, Any], name: str, errors: dict[str, str], now: datetime | None
) -> tuple[datetime | None, bool]:
    """A timezone-aware instant, kept in UTC; absent means now. Also: whether it was given."""
    value = raw.get(name)
    if value is None:
        return (now or datetime.now(UTC)).astimezone(UTC), False
    if isinstance(value, str):
        text = value.strip()
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
        except ValueError:
            errors[name] = f"not an ISO 8601 date-time: {_shown(text)}"
            return None, True
    if not isinstance(value, datetime):
        errors[name] = f"expected an ISO 8601 date-time, got {type(value).__name__}"
        return None, True
    if value.tzinfo is None or value.utcoffset() is None:
        errors[name] = "must carry a time zone (e.g. 2026-01-31T12:00:00Z)"
        return None, True
    try:
        in_utc = value.astimezone(UTC)
    except (OverflowError, ValueError):  # e.g. 9999-12-31T23:00-05:00
        in_utc = None
    if in_utc is None or not 2000 <= in_utc.year <= 9998:
        errors[name] = f"out of range: {value.isoformat()}"
        return None, True
    return value.astimezone(UTC), True


def optional_int(
    raw: Mapping[str, Any],
    name: str,
    errors: dict[str, str],
    *,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int | None:
    """An integer field (an int, an integral float, or integer text) within bounds, or None."""
    value = raw.get(name)
    if value is None:
        return None
    if isinstance(value, bool):
        errors[name] = "expected an integer, got a boolean"
        return None
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            errors[name] = f"expected an integer, got {value!r}"
            return None
        value = int(value)
    elif isinstance(value, str):
        text = value.strip()
        if not _INTEGER_TEXT.fullmatch(text):
            errors[name] = f"expected an integer, got {_shown(value)}"
            return None
        value = int(text)
    elif not isinstance(value, int):
        errors[name] = f"expected an integer, got {type(value).__name__}"
        return None
    if minimum is not None and value < minimum:
        errors[name] = f"must be >= {minimum}, got {_shown_int(value)}"
        return None
    if maximum is not None and value > maximum:
        errors[name] = f"must be <= {maximum}, got {_shown_int(value)}"
        return None
    return value


def optional_str(
    raw: Mapping[str, Any],
    name: str,
    errors: dict[str, str],
    max_length: int,
    *,
    identifier: bool = False,
) -> str | None:
    """A storable text field (an int is taken as text) of at most ``max_length``, or None if blank.

    ``identifier``: the value names something (an account, a user, a charge),
    so invisible and direction-control characters are refused too (see
    :mod:`ledger.text`).
    """
    value = raw.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        errors[name] = f"expected a string, got {type(value).__name__}"
        return None
    if isinstance(value, int) and not -(10**max_length) < value < 10**max_length:
        errors[name] = f"longer than {max_length} characters (an integer of {value.bit_length()} bits)"
        return None
    text = str(value).strip()
    if not text:
        return None
    if len(text) > max_length:
        errors[name] = f"longer than {max_length} characters ({len(text)})"
        return None
    problem = text_problem(text, identifier=identifier)
    if problem is not None:
        errors[name] = problem
        return None
    return text


#: The seed's user profile ids are database bigints.
MAX_PROFILE_ID = 2**63 - 1
#: An integer written as text: optional minus, ASCII digits, at most 40 of them.
_INTEGER_TEXT = re.compile(r"-?[0-9]{1,40}")


def _shown_int(value: int) -> str:
    """An integer for an error message; a huge one by its size (str() refuses > 4300 digits)."""
    if -(10**40) < value < 10**40:
        return str(value)
    return f"{'a negative' if value < 0 else 'an'} integer of {value.bit_length()} bits"


def _shown(value: str, limit: int = 40) -> str:
    """A bad value, shortened and made printable, for an error message."""
    text = value if len(value) <= limit else value[:limit] + "…"
    return repr(text)
