"""JSON answers that can always be encoded.

An answer is written after the work it reports: a batch's outcomes after
its charges committed. An answer that failed to encode would turn a stored
charge into a 500, and its retry into a guess. Errors already show callers'
text escaped (:func:`ledger.text.printable`); this encoder is the backstop
for anything else: a lone surrogate, which UTF-8 cannot carry, is written
as the text of its escape (``\\ud800``) instead of failing.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import orjson
from fastapi.responses import JSONResponse


def encode(content: Any) -> bytes:
    """``content`` as compact UTF-8 JSON; never fails on text or on integers of any size."""
    try:
        return orjson.dumps(content)
    except TypeError:  # a lone surrogate, or an integer beyond 64 bits
        return json.dumps(_encodable(content), ensure_ascii=False, separators=(",", ":"),
                          default=_iso).encode()


class JsonAnswer(JSONResponse):
    """A JSON response written by :func:`encode`."""

    def render(self, content: Any) -> bytes:
        return encode(content)


def _encodable(value: Any) -> Any:
    """``value`` with every string (keys too) made encodable as UTF-8."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_encodable(k) if isinstance(k, str) else k: _encodable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encodable(v) for v in value]
    return value


def _iso(value: Any) -> str:
    """Dates and times as orjson writes them (ISO 8601)."""
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")
