"""OTLP JSON (the OTLP/HTTP ``application/json`` encoding), read straight into the spans the mapping takes.

protobuf's generic JSON parser (``json_format``) reads a 100-span export in
tens of milliseconds, and it takes ids as base64 where OTLP JSON writes them
in hex. This reader walks the decoded JSON once and checks, as the OTLP
specification asks, every field it reads, by the proto3 JSON rules:

- keys in lowerCamelCase (the proto field names, ``trace_id``, are accepted too);
- ``traceId`` and ``spanId`` in hex (16 and 8 bytes, or empty);
- 64-bit integers (times, ``intValue``) as decimal strings or numbers;
- enums (``kind``, ``status.code``) as integers, or their names;
- an ``AnyValue`` holding one of ``stringValue``, ``boolValue``,
  ``intValue``, ``doubleValue``, ``arrayValue``, ``kvlistValue``, ``bytesValue`` (base64).

Unknown fields, and attributes the mapping does not read, are skipped, as a
receiver must. A malformed field read raises :class:`BadOtlpJson` naming its path.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Iterator
from typing import Any

from ledger_service.integrations.otel import READ, ResourceSpan, SpanFacts

INT64 = (-(2**63), 2**63 - 1)
INT32 = (-(2**31), 2**31 - 1)
UINT64 = (0, 2**64 - 1)
SPAN_KINDS = {"SPAN_KIND_UNSPECIFIED": 0, "SPAN_KIND_INTERNAL": 1, "SPAN_KIND_SERVER": 2, "SPAN_KIND_CLIENT": 3,
              "SPAN_KIND_PRODUCER": 4, "SPAN_KIND_CONSUMER": 5}
STATUS_CODES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
#: JSON's names for a double's special values.
SPECIAL_DOUBLES = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
#: How deep an ``arrayValue`` / ``kvlistValue`` may nest in an attribute the mapping reads.
MAX_DEPTH = 32


class BadOtlpJson(ValueError):
    """The body is not an ``ExportTraceServiceRequest`` in OTLP JSON: the path and what is wrong."""


def json_spans(body: Any) -> list[ResourceSpan]:
    """Every span of an OTLP JSON export (already parsed) with its resource's attributes."""
    if not isinstance(body, dict):
        raise BadOtlpJson("the body must be a JSON object (an ExportTraceServiceRequest)")
    return list(_spans(body))


def _spans(body: dict[str, Any]) -> Iterator[ResourceSpan]:
    for r, resource_spans in enumerate(_list(body, "resourceSpans", "resource_spans", path="")):
        where = f"resourceSpans[{r}]"
        resource_spans = _object(resource_spans, where)
        resource_obj = _field(resource_spans, "resource", where=where)
        resource = _attributes(_object(resource_obj, f"{where}.resource"), f"{where}.resource") \
            if resource_obj is not None else {}
        for s, scope_spans in enumerate(_list(resource_spans, "scopeSpans", "scope_spans", path=where)):
            scope_where = f"{where}.scopeSpans[{s}]"
            for n, span in enumerate(_list(scope_spans, "spans", path=scope_where)):
                yield resource, _span(span, f"{scope_where}.spans[{n}]")


def _span(span: Any, where: str) -> SpanFacts:
    span = _object(span, where)
    status = _field(span, "status", where=where)
    status_code = 0
    if status is not None:
        status_code = _enum(_field(_object(status, f"{where}.status"), "code", where=f"{where}.status"),
                            STATUS_CODES, f"{where}.status.code")
    return SpanFacts(
        trace_id=_hex_id(_field(span, "traceId", "trace_id", where=where), 16, f"{where}.traceId"),
        span_id=_hex_id(_field(span, "spanId", "span_id", where=where), 8, f"{where}.spanId"),
        kind=_enum(_field(span, "kind", where=where), SPAN_KINDS, f"{where}.kind"),
        status_code=status_code,
        start_time_unix_nano=_integer(_field(span, "startTimeUnixNano", "start_time_unix_nano", where=where),
                                      UINT64, f"{where}.startTimeUnixNano"),
        end_time_unix_nano=_integer(_field(span, "endTimeUnixNano", "end_time_unix_nano", where=where),
                                    UINT64, f"{where}.endTimeUnixNano"),
        attributes=_attributes(span, where),
    )


def _attributes(owner: dict[str, Any], where: str) -> dict[str, Any]:
    """The attributes the mapping reads (the last value of a repeated key, as protobuf's reader keeps)."""
    found: dict[str, Any] = {}
    for i, pair in enumerate(_list(owner, "attributes", path=where)):
        here = f"{where}.attributes[{i}]"
        pair = _object(pair, here)
        key = pair.get("key", "")
        if not isinstance(key, str):
            raise BadOtlpJson(f"{here}.key: expected a string")
        if key in READ:
            value = pair.get("value")
            found[key] = None if value is None else _any_value(value, f"{here}.value", 0)
    return found


def _any_value(value: Any, where: str, depth: int) -> Any:
    """An ``AnyValue`` as Python (None when it holds nothing)."""
    value = _object(value, where)
    if depth > MAX_DEPTH:
        raise BadOtlpJson(f"{where}: nested more than {MAX_DEPTH} deep")
    held = [name for name in value if name in READERS]
    if len(held) > 1:
        raise BadOtlpJson(f"{where}: holds {' and '.join(held)}; an AnyValue holds one")
    if not held:
        return None
    name = held[0]
    return READERS[name](value[name], f"{where}.{name}", depth)


def _string(value: Any, where: str, depth: int) -> str:
    if not isinstance(value, str):
        raise BadOtlpJson(f"{where}: expected a string")
    return value


def _bool(value: Any, where: str, depth: int) -> bool:
    if not isinstance(value, bool):
        raise BadOtlpJson(f"{where}: expected true or false")
    return value


def _int_value(value: Any, where: str, depth: int) -> int:
    return _integer(value, INT64, where)


def _double(value: Any, where: str, depth: int) -> float:
    if isinstance(value, str) and value in SPECIAL_DOUBLES:
        return SPECIAL_DOUBLES[value]
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise BadOtlpJson(f"{where}: expected a number") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadOtlpJson(f"{where}: expected a number")
    return float(value)


def _array(value: Any, where: str, depth: int) -> list[Any]:
    items = _list(_object(value, where), "values", path=where)
    return [_any_value(item, f"{where}.values[{i}]", depth + 1) for i, item in enumerate(items)]


def _kvlist(value: Any, where: str, depth: int) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for i, pair in enumerate(_list(_object(value, where), "values", path=where)):
        here = f"{where}.values[{i}]"
        pair = _object(pair, here)
        key = _string(pair.get("key", ""), f"{here}.key", depth)
        found[key] = None if pair.get("value") is None else _any_value(pair["value"], f"{here}.value", depth + 1)
    return found


def _bytes(value: Any, where: str, depth: int) -> bytes:
    try:
        return base64.b64decode(_string(value, where, depth), validate=True)
    except binascii.Error:
        raise BadOtlpJson(f"{where}: expected base64") from None


READERS = {"stringValue": _string, "boolValue": _bool, "intValue": _int_value, "doubleValue": _double,
           "arrayValue": _array, "kvlistValue": _kvlist, "bytesValue": _bytes,
           "string_value": _string, "bool_value": _bool, "int_value": _int_value, "double_value": _double,
           "array_value": _array, "kvlist_value": _kvlist, "bytes_value": _bytes}


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadOtlpJson(f"{where or 'body'}: expected an object")
    return value


def _field(owner: dict[str, Any], *names: str, where: str) -> Any:
    """The first of ``names`` present (null counts as absent, as in proto3 JSON)."""
    for name in names:
        value = owner.get(name)
        if value is not None:
            return value
    return None


def _list(owner: Any, *names: str, path: str) -> list[Any]:
    value = _field(_object(owner, path), *names, where=path)
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadOtlpJson(f"{_join(path, names[0])}: expected an array")
    return value


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _hex_id(value: Any, size: int, where: str) -> bytes:
    if value is None:
        return b""
    if not isinstance(value, str):
        raise BadOtlpJson(f"{where}: expected a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise BadOtlpJson(f"{where}: must be hex (OTLP JSON), got {value[:40]!r}") from None
    if raw and len(raw) != size:
        raise BadOtlpJson(f"{where}: must be {size} bytes ({2 * size} hex digits), got {len(raw)}")
    return raw


def _integer(value: Any, bounds: tuple[int, int], where: str) -> int:
    """A 64-bit integer, as a decimal string or a number (a whole one: ``1e3`` and ``5.0`` are accepted)."""
    if value is None:
        return 0
    number: Any = value
    if isinstance(value, str):
        try:
            number = int(value)
        except ValueError:
            try:
                number = float(value)
            except ValueError:
                raise BadOtlpJson(f"{where}: expected an integer") from None
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        raise BadOtlpJson(f"{where}: expected an integer")
    if isinstance(number, float):
        if not number.is_integer():
            raise BadOtlpJson(f"{where}: expected an integer, got {value!r}")
        number = int(number)
    if not bounds[0] <= number <= bounds[1]:
        raise BadOtlpJson(f"{where}: out of range")
    return number


def _enum(value: Any, names: dict[str, int], where: str) -> int:
    if value is None:
        return 0
    if isinstance(value, str) and value in names:
        return names[value]
    if isinstance(value, bool) or not isinstance(value, int) or not INT32[0] <= value <= INT32[1]:
        raise BadOtlpJson(f"{where}: expected one of {', '.join(names)} or its number")
    return value
