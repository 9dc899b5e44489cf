"""Request bodies: the content type checked, the size bounded, the JSON parsed, before any work.

A body over the limit is refused as soon as the limit is passed (413), a
wrong content type is 415, malformed JSON is 400: nothing is stored for any of them.
A body is refused only to a caller whose key holds: an unknown key is 401
(and a key outside its role 403) whatever the body, so a refusal never
tells an unauthenticated caller anything about the endpoint. The key is
looked up here only when the body is refused; a request whose body is
accepted looks its key up once, in the thread that does its work.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import orjson
from fastapi import Request

from ledger_service.http.auth import check_caller
from ledger_service.http.problems import Problem


def media_type(request: Request) -> str:
    """The content type without parameters, lower case ('' when absent)."""
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_json(request: Request, accepted: Iterable[str], limit: int, *, optional: bool = False) -> Any:
    """The body as JSON, when its content type is one of ``accepted`` and it fits in ``limit`` bytes.

    ``optional``: an empty body (with or without a content type) is None.
    A refusal (400, 413, 415) is raised after the caller's key is checked.
    """
    try:
        raw = await read_limited(request, limit)
        if optional and not raw.strip():
            return None
        accepted = tuple(accepted)
        if media_type(request) not in accepted:
            shown = media_type(request) or "none"
            raise Problem(415, f"content type {shown!r} is not accepted here; send {' or '.join(accepted)}",
                          headers={"Accept-Post": ", ".join(accepted)})
        return parse_json(raw)
    except Problem:
        await check_caller(request)
        raise


def parse_json(raw: bytes) -> Any:
    """JSON as the standard says: integers of any size (the ledger bounds them, naming the field), no NaN."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass  # orjson stops at 64-bit integers; the standard library does not
    try:
        return json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise Problem(400, f"the body is not valid JSON: {exc}",
                      errors=[{"field": "body", "detail": "not valid JSON"}]) from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


async def read_limited(request: Request, limit: int) -> bytes:
    """The raw body, refused with 413 once it exceeds ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> Problem:
    return Problem(413, f"the body is larger than {limit:,} bytes", errors=[{"field": "body", "detail": f"at most {limit} bytes"}])
