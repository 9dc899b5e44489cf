"""OTLP ingestion: ``POST /v1/traces`` (100 GenAI spans per export) against ``POST /api/v1/events``
(100 CloudEvents per batch), both into a real ``ledger serve``, in the same run.

The same charges go each way, each side with ids of its own: a GenAI
client span per charge (its attributes as the current semantic conventions
name them, as the OpenTelemetry SDK's OTLP/HTTP exporter encodes them in
protobuf; also in OTLP JSON, for comparison), or a CloudEvent per charge in
OpenMeter's shape. Bodies are encoded before the clock starts, so the
figures are the server's: decode, map, validate, record. The sides take
turns in blocks (ABBA, :mod:`bench.pairing`) with ``CLIENTS`` clients each,
waiting for each answer (an acknowledged export is durable) before the next.
Every charge must then be in the store exactly once.
"""

from __future__ import annotations

import base64
import http.client
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from functools import partial
from typing import Any

from bench.checks import check_recorded
from bench.context import Context
from bench.http import _concurrently, _serving
from bench.pairing import alternate, blocks_of
from bench.recording import open_accounts
from bench.rows import POSTGRESQL, SQLITE, Inconsistent, Row, at_least, missing
from bench.workload import account_ids, charges, tally_of
from ledger import Ledger

#: Spans per export, and events per CloudEvents batch.
PER_REQUEST = 100
CLIENTS = 2
TURNS = 4
REQUEST_SECONDS = 60.0
OTLP_TARGET = at_least(0.5, ">= 0.5x the CloudEvents batch path", (POSTGRESQL, SQLITE))


def otlp_ingestion(ctx: Context) -> list[Row]:
    name = f"POST /v1/traces protobuf, {PER_REQUEST} spans/export, {CLIENTS} clients"
    try:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,  # noqa: F401
        )

        from ledger_service.keys import create_key
    except ImportError as exc:
        return [missing(name, ctx.kind, exc.name or "opentelemetry-proto")]
    accounts = account_ids(ctx.sizes.accounts)
    count = max(PER_REQUEST, ctx.sizes.batch // 5 // PER_REQUEST * PER_REQUEST)
    sides = {"ce": list(charges("ce", count, accounts)), "otlp": list(charges("otlp", count, accounts)),
             "otlpjson": list(charges("otlpjson", count, accounts))}
    requests = {
        "ce": [_cloudevents(chunk) for chunk in _chunks(sides["ce"])],
        "otlp": [_export(chunk).SerializeToString() for chunk in _chunks(sides["otlp"])],
        "otlpjson": [_otlp_json(_export(chunk)) for chunk in _chunks(sides["otlpjson"])],
    }
    paths = {"ce": ("/api/v1/events", "application/cloudevents-batch+json", 204),
             "otlp": ("/v1/traces", "application/x-protobuf", 200),
             "otlpjson": ("/v1/traces", "application/json", 200)}
    with ctx.fresh("otlp") as url, _serving(url, fork=ctx.sizes.fork_starts) as server:
        expected = open_accounts(url, accounts, "otlp")
        ledger = Ledger.from_url(url)
        try:
            key = create_key(ledger, "ingest", name="benchmark")[1]
        finally:
            ledger.close()
        base_url = server.url()
        posters = {side: _poster(base_url, key, *paths[side]) for side in sides}
        latencies: dict[str, list[float]] = {side: [] for side in sides}
        exports = len(requests["ce"])
        size = max(1, -(-exports // TURNS))
        seconds = alternate([
            tuple(partial(_concurrently, posters[side], requests[side], block, CLIENTS, latencies[side])
                  for side in sides)
            for block in blocks_of(exports, size)
        ])
        server.hang_up()  # every export was answered: it stops while the results are checked
        for items in sides.values():
            expected.merge(tally_of(items))
        check_recorded(url, accounts, expected)
    timed = dict(zip(sides, seconds))
    events = Row(f"POST /api/v1/events, {PER_REQUEST} CloudEvents/batch, {CLIENTS} clients", ctx.kind, count,
                 timed["ce"], unit="events", key="otlp-cloudevents")
    protobuf = Row(name, ctx.kind, count, timed["otlp"], unit="spans", target=OTLP_TARGET)
    as_json = Row(f"POST /v1/traces OTLP JSON, {PER_REQUEST} spans/export, {CLIENTS} clients", ctx.kind, count,
                  timed["otlpjson"], unit="spans")
    return [events, protobuf.against(events), as_json.against(events)]


def _chunks(items: Sequence[dict[str, Any]]) -> list[Sequence[dict[str, Any]]]:
    return [items[i:i + PER_REQUEST] for i in range(0, len(items), PER_REQUEST)]


def _cloudevents(items: Sequence[Mapping[str, Any]]) -> bytes:
    """A CloudEvents batch of the charges, in OpenMeter's shape."""
    return json.dumps([{
        "specversion": "1.0", "id": item["charge_id"], "source": "bench", "type": item["charge_type"],
        "subject": item["account_id"], "time": item["occurred_at"].isoformat(),
        "data": {name: item[name] for name in ("prompt_tokens", "completion_tokens", "model", "provider",
                                                "user_id", "session_key", "reference") if item[name] is not None},
    } for item in items]).encode()


def _export(items: Sequence[Mapping[str, Any]]) -> Any:
    """An ExportTraceServiceRequest: one GenAI client span per charge, as an instrumented client sends it."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    def text(key: str, value: str) -> KeyValue:
        return KeyValue(key=key, value=AnyValue(string_value=value))

    def number(key: str, value: int) -> KeyValue:
        return KeyValue(key=key, value=AnyValue(int_value=value))

    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend([text("service.name", "bench"), text("telemetry.sdk.language", "python")])
    scope = resource_spans.scope_spans.add()
    scope.scope.name = "opentelemetry.instrumentation.openai_v2"
    for item in items:
        end = _nanos(item["occurred_at"])
        attributes = [text("gen_ai.operation.name", "chat"), text("gen_ai.response.id", item["charge_id"]),
                      number("gen_ai.usage.input_tokens", item["prompt_tokens"]),
                      number("gen_ai.usage.output_tokens", item["completion_tokens"]),
                      text("ledger.account_id", item["account_id"]), text("enduser.id", item["user_id"]),
                      text("ledger.charge_type", item["charge_type"]),
                      text("gen_ai.conversation.id", item["session_key"])]
        if item["provider"] is not None:
            attributes += [text("gen_ai.provider.name", item["provider"]), text("gen_ai.request.model", item["model"]),
                           text("gen_ai.response.model", item["model"])]
        digest = item["charge_id"].encode().hex().rjust(48, "0")[-48:]
        scope.spans.append(Span(trace_id=bytes.fromhex(digest[:32]), span_id=bytes.fromhex(digest[32:]),
                                name=f"chat {item['model']}", kind=Span.SPAN_KIND_CLIENT,
                                start_time_unix_nano=end - 850_000_000, end_time_unix_nano=end, attributes=attributes))
    return request


def _otlp_json(request: Any) -> bytes:
    """The request in OTLP JSON: hex ids, enums as integers, 64-bit integers as strings."""
    from google.protobuf.json_format import MessageToDict

    body = MessageToDict(request, use_integers_for_enums=True)
    for resource_spans in body["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                for field in ("traceId", "spanId"):
                    span[field] = base64.b64decode(span[field]).hex()
    return json.dumps(body).encode()


def _nanos(moment: datetime) -> int:
    """A datetime as nanoseconds since the epoch, by integer arithmetic."""
    delta = moment - datetime(1970, 1, 1, tzinfo=moment.tzinfo)
    return (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1000


def _poster(base_url: str, key: str, path: str, content_type: str, ok: int) -> Callable[[bytes], None]:
    """POST one body on this thread's keep-alive connection; anything but ``ok``, or a rejected span, is inconsistent."""
    host, port = base_url.removeprefix("http://").split(":")
    local = threading.local()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": content_type}

    def post(body: bytes) -> None:
        connection = getattr(local, "connection", None)
        if connection is None:
            connection = local.connection = http.client.HTTPConnection(host, int(port), timeout=REQUEST_SECONDS)
        connection.request("POST", path, body=body, headers=headers)
        answer = connection.getresponse()
        text = answer.read()
        if answer.status != ok or (content_type == "application/json" and text != b"{}") or (
                content_type == "application/x-protobuf" and text):
            raise Inconsistent(f"POST {path} answered {answer.status}: {text[:300]!r}")

    return post
