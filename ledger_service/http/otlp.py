"""``POST /v1/traces``: an OTLP/HTTP trace receiver; each GenAI client span is a charge.

As the OTLP/HTTP specification asks: the body is ``application/x-protobuf``
or ``application/json`` (lowerCamelCase keys, hex trace and span ids),
gzip-compressed or not (``Content-Encoding: gzip``; the Python
exporter's ``deflate`` too), and the answer is in
the request's encoding:

- 200 with an ``ExportTraceServiceResponse``; its ``partial_success`` counts
  the GenAI spans rejected and says why (other spans are ignored, not rejected);
- 400 for a body that cannot be decoded (nothing is stored), 413 for one too
  large (compressed or once decompressed), 503 with ``Retry-After`` when the
  store is busy or unavailable (a retry is exact: a resent span counts once);
  each with a ``google.rpc.Status`` body.

A missing or unknown key is 401 and a key without ``write`` is 403, as on
every write endpoint (problem+json); so is an unsupported content type (415),
and a server installed without the ``[otel]`` extra answers 501.
Protobuf is decoded by ``opentelemetry-proto``; OTLP JSON by
:mod:`ledger_service.integrations.otel_json` (hex ids, in a fraction of the
time of protobuf's generic JSON parser). The mapping of spans to charges is
:mod:`ledger_service.integrations.otel`.
"""

from __future__ import annotations

import functools
import logging
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from ledger.errors import BusyAccount, ChargeConflict, InvalidCharge, LedgerError
from ledger.store.engine import SQLALCHEMY_UNAVAILABLE
from ledger_service.http.auth import Caller, WriteCaller, check_caller
from ledger_service.http.bodies import media_type, parse_json, read_limited
from ledger_service.http.encoding import encode
from ledger_service.http.problems import Problem
from ledger_service.http.schemas import AUTH_PROBLEMS, problem
from ledger_service.integrations.otel import (
    Rejection,
    ResourceSpan,
    SpanCharges,
    charges_of_spans,
    proto_spans,
)
from ledger_service.integrations.otel_json import BadOtlpJson, json_spans
from projections.errors import ProjectionError

if TYPE_CHECKING:
    from ledger import Ledger

log = logging.getLogger("ledger_service.http.otlp")
router = APIRouter(tags=["opentelemetry"])

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
ACCEPTED = (PROTOBUF, JSON)
#: gRPC status codes for the ``google.rpc.Status`` of a refusal.
GRPC_CODES = {400: 3, 413: 8, 429: 8, 503: 14}  # INVALID_ARGUMENT, RESOURCE_EXHAUSTED, UNAVAILABLE
#: Charge fields that may differ between two spans of the same model response (``gen_ai.response.id``):
#: an instrumented client and its framework each report the call; the first recorded counts.
SAME_CALL = frozenset({"occurred_at", "reference"})
#: zlib's window bits for each accepted Content-Encoding (HTTP's deflate is the zlib format).
WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
#: How many rejection reasons ``error_message`` lists before saying how many more, and their longest.
SHOWN_REASONS = 10
REASON_CHARACTERS = 400

STATUS_SCHEMA: dict[str, Any] = {
    "type": "object", "description": "google.rpc.Status",
    "properties": {"code": {"type": "integer"}, "message": {"type": "string"},
                   "details": {"type": "array", "items": {"type": "object"}}}}
RESPONSE_SCHEMA: dict[str, Any] = {
    "type": "object", "description": "ExportTraceServiceResponse",
    "properties": {"partialSuccess": {"type": "object", "properties": {
        "rejectedSpans": {"type": "string", "pattern": "^[0-9]+$"}, "errorMessage": {"type": "string"}}}}}
REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object", "description": "ExportTraceServiceRequest in OTLP JSON: lowerCamelCase keys, hex "
    "trace and span ids, 64-bit integers as strings. The same message in protobuf is application/x-protobuf.",
    "properties": {"resourceSpans": {"type": "array", "items": {"type": "object"}}}}
BINARY: dict[str, Any] = {"schema": {"type": "string", "format": "binary"}}


def otlp(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI response entry in both OTLP encodings."""
    return {"description": description, "content": {JSON: {"schema": schema}, PROTOBUF: BINARY}}


class OtlpRefusal(Exception):
    """A refusal answered as OTLP asks: a ``google.rpc.Status`` in the request's encoding."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass(frozen=True)
class Decoder:
    """The ``opentelemetry-proto`` classes this receiver needs, imported once, on first use."""

    request: Any
    response: Any


@functools.cache
def decoder() -> Decoder:
    """The OTLP classes; ImportError when the ``[otel]`` extra is not installed."""
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

    return Decoder(trace_service_pb2.ExportTraceServiceRequest, trace_service_pb2.ExportTraceServiceResponse)


@router.post(
    "/v1/traces",
    summary="Receive OpenTelemetry traces (OTLP/HTTP); each GenAI client span becomes a charge",
    response_class=Response,
    responses={200: otlp("Accepted; partialSuccess counts the GenAI spans rejected and says why.",
                         RESPONSE_SCHEMA),
               400: otlp("The body cannot be decoded (or its gzip is broken); nothing was stored.", STATUS_SCHEMA),
               413: otlp("The body is too large, compressed or once decompressed.", STATUS_SCHEMA),
               503: otlp("Busy or unavailable: retry after Retry-After seconds.", STATUS_SCHEMA),
               415: problem("Neither application/x-protobuf nor application/json, or an encoding other "
                            "than gzip or deflate."),
               501: problem("The server was installed without the [otel] extra."),
               **AUTH_PROBLEMS},
    openapi_extra={"requestBody": {"required": True, "content": {JSON: {"schema": REQUEST_SCHEMA}}}},
)
async def export_traces(request: Request, caller: WriteCaller) -> Response:
    kind = media_type(request)
    try:
        if kind not in ACCEPTED:
            raise Problem(415, f"content type {kind or 'none'!r} is not accepted here; send "
                          f"{PROTOBUF} or {JSON}", headers={"Accept-Post": ", ".join(ACCEPTED)})
        try:
            codec = decoder()
        except ImportError:
            raise Problem(501, "OTLP needs the [otel] extra: pip install 'llm-usage-ledger[otel]'") from None
        settings = request.app.state.http
        body = await body_of(request, settings.max_body_bytes)
        accepted = await run_in_threadpool(ingest, request.app.state.ledger, caller, Export(codec, body, kind),
                                           settings.max_batch)
    except Problem:
        await check_caller(request)  # an unknown key is 401 whatever the body
        raise
    except OtlpRefusal as refusal:
        await check_caller(request)
        return refused(refusal, kind)
    except BusyAccount as exc:
        return refused(OtlpRefusal(503, str(exc), {"Retry-After": "1"}), kind)
    except SQLALCHEMY_UNAVAILABLE as exc:
        log.warning("database unavailable on /v1/traces: %s", exc)
        return refused(OtlpRefusal(503, "the database is unavailable; retry later", {"Retry-After": "5"}), kind)
    except (LedgerError, ProjectionError) as exc:
        log.warning("ledger error on /v1/traces: %s", exc)
        return refused(OtlpRefusal(503, str(exc), {"Retry-After": "1"}), kind)
    return answer(codec, accepted, kind)


@dataclass(frozen=True)
class Body:
    """A request's body as sent: at most ``limit`` bytes, in ``encoding`` ("identity", "gzip" or "deflate")."""

    raw: bytes
    encoding: str
    limit: int

    def bytes(self) -> bytes:
        """The body decompressed, at most ``limit`` bytes (a gzip bomb stops there: 413)."""
        return self.raw if self.encoding == "identity" else inflate(self.raw, self.limit, self.encoding)


@dataclass(frozen=True)
class Export:
    """An export to decode: the classes, the body, and its content type."""

    codec: Decoder
    body: Body
    kind: str

    def spans(self) -> Iterable[ResourceSpan]:
        return decode(self.codec, self.body.bytes(), self.kind)


async def body_of(request: Request, limit: int) -> Body:
    """The body as sent, refused (413) past ``limit`` bytes, and its content encoding (415 unless known)."""
    try:
        raw = await read_limited(request, limit)
    except Problem as too_large:
        raise OtlpRefusal(413, too_large.detail) from None
    encoding = request.headers.get("content-encoding", "identity").strip().lower() or "identity"
    if encoding != "identity" and encoding not in WBITS:
        raise Problem(415, f"content encoding {encoding!r} is not accepted here; send gzip, deflate or none",
                      headers={"Accept-Encoding": ", ".join(WBITS)})
    return Body(raw, encoding, limit)


def inflate(raw: bytes, limit: int, encoding: str = "gzip") -> bytes:
    """A gzip (one member or several) or deflate body, refused once past ``limit`` bytes (never inflated further)."""
    out = bytearray()
    rest = raw
    try:
        while rest:
            stream = zlib.decompressobj(wbits=WBITS[encoding])
            out += stream.decompress(rest, limit + 1 - len(out))
            if len(out) > limit:
                raise OtlpRefusal(413, f"the body is larger than {limit:,} bytes once decompressed")
            if not stream.eof:
                raise OtlpRefusal(400, f"the {encoding} body is truncated (or not {encoding})")
            rest = stream.unused_data if encoding == "gzip" else b""
    except zlib.error as exc:
        raise OtlpRefusal(400, f"the body is not valid {encoding}: {exc}") from None
    return bytes(out)


def decode(codec: Decoder, raw: bytes, kind: str) -> Iterable[ResourceSpan]:
    """The spans of a protobuf or OTLP JSON ``ExportTraceServiceRequest``; 400 when the body is neither.

    Protobuf spans are read as the mapping goes (a parsed message is whole);
    JSON ones are read and checked first: a malformed body stores nothing.
    """
    from google.protobuf.message import DecodeError

    if kind == PROTOBUF:
        message = codec.request()
        try:
            message.ParseFromString(raw)
        except (DecodeError, RuntimeError) as exc:
            raise OtlpRefusal(400, f"the body is not an OTLP ExportTraceServiceRequest in protobuf: {exc}") from None
        return proto_spans(message)
    try:
        return json_spans(parse_json(raw))
    except Problem as bad:
        raise OtlpRefusal(400, bad.detail) from None
    except BadOtlpJson as exc:
        raise OtlpRefusal(400, f"the body is not an OTLP ExportTraceServiceRequest in JSON: {exc}") from None


@dataclass(frozen=True)
class Accepted:
    """What an export came to: spans recorded or already recorded, and the rejected ones."""

    charged: int
    rejected: list[Rejection]


def ingest(ledger: Ledger, caller: Caller, export: Export, max_batch: int) -> Accepted:
    """Check the key, decode the export, and record its GenAI spans (in batches of ``max_batch``);
    the rest are named as rejected. All in the worker thread: the event loop only reads the body.

    A span the store could not take now (busy) raises, so the exporter retries
    the whole export: the spans already recorded are duplicates then, counted once.
    """
    key = caller.key(ledger)
    mapped = charges_of_spans(export.spans(), scope=key.account_id if key.scoped else None)
    rejected = list(mapped.rejected)
    charged = 0
    for start in range(0, len(mapped.charges), max_batch):
        outcomes = ledger.record_charges(mapped.charges[start:start + max_batch])
        for outcome in outcomes:
            index = start + outcome.index
            if outcome.error is None:
                charged += 1
            elif (refusal := refusal_of(mapped, index, outcome.error)) is not None:
                rejected.append(refusal)
            else:
                charged += 1
    return Accepted(charged, rejected)


def refusal_of(mapped: SpanCharges, index: int, error: LedgerError) -> Rejection | None:
    """Why the ledger refused span ``index``, naming attributes; None for a second span of a recorded call.

    Another error (the store busy) is raised: the export is retried.
    """
    origin = mapped.origins[index]
    span = mapped.spans[index]
    if isinstance(error, InvalidCharge):
        return Rejection(span, "; ".join(f"{origin.get(name, name)}: {why}" for name, why in sorted(error.errors.items())))
    if isinstance(error, ChargeConflict):
        differing = [name for name in error.fields if name not in SAME_CALL]
        if not differing:
            return None
        if "total_tokens" in differing and len(differing) > 1:  # it follows from the token counts named
            differing.remove("total_tokens")
        named = ", ".join(origin.get(name, name) for name in differing)
        return Rejection(span, f"charge {error.charge_id!r} was recorded before with another {named}")
    raise error


def answer(codec: Decoder, accepted: Accepted, kind: str) -> Response:
    """200 with an ``ExportTraceServiceResponse`` in the request's encoding."""
    rejected = accepted.rejected
    message = ""
    if rejected:
        shown = "; ".join(_clipped(str(r)) for r in rejected[:SHOWN_REASONS])
        more = f"; and {len(rejected) - SHOWN_REASONS} more" if len(rejected) > SHOWN_REASONS else ""
        message = f"{len(rejected)} GenAI span(s) rejected: {shown}{more}"
    if kind == JSON:
        body = {"partialSuccess": {"rejectedSpans": str(len(rejected)), "errorMessage": message}} if rejected else {}
        return Response(encode(body), media_type=JSON)
    response = codec.response()
    if rejected:
        response.partial_success.rejected_spans = len(rejected)
        response.partial_success.error_message = message
    return Response(response.SerializeToString(), media_type=PROTOBUF)


def _clipped(reason: str) -> str:
    """A reason cut to :data:`REASON_CHARACTERS` (it may quote a span's value, which may be long)."""
    return reason if len(reason) <= REASON_CHARACTERS else reason[:REASON_CHARACTERS - 1] + "…"


def refused(refusal: OtlpRefusal, kind: str) -> Response:
    """A ``google.rpc.Status`` in the request's encoding (protobuf written by hand: two fields)."""
    code = GRPC_CODES.get(refusal.status, 2)  # UNKNOWN
    if kind == JSON:
        return Response(encode({"code": code, "message": refusal.message}), status_code=refusal.status,
                        media_type=JSON, headers=refusal.headers)
    text = refusal.message.encode("utf-8", "backslashreplace")
    body = b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text
    return Response(body, status_code=refusal.status, media_type=PROTOBUF, headers=refusal.headers)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)
