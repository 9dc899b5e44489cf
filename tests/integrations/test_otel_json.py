"""OTLP JSON read into spans (ledger_service.integrations.otel_json): the same charges as the same
export in protobuf, and a malformed field named by its path.

Exports are made by the OpenTelemetry SDK's own encoder (the one its OTLP
exporters use), then written as OTLP JSON: protobuf's JSON with hex ids.
"""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from ledger_service.integrations.otel import charges_of, charges_of_spans
from ledger_service.integrations.otel_json import BadOtlpJson, json_spans
from tests.integrations.otlp_support import message_json


def sdk_export() -> Any:
    """An ExportTraceServiceRequest from the SDK: GenAI spans in both conventions, and others."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"ledger.account_id": "acct-j", "enduser.id": "u-r"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests.otel_json")
    spans = [
        ("chat", SpanKind.CLIENT, {"gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
                                   "gen_ai.usage.input_tokens": 9_000_000_000, "gen_ai.usage.output_tokens": 5,
                                   "gen_ai.response.id": "r-1", "user.id": "u-1", "tags": ["a", "b"]}),
        ("chat", SpanKind.INTERNAL, {"gen_ai.system": "anthropic", "gen_ai.response.model": "claude",
                                     "gen_ai.usage.prompt_tokens": 12, "gen_ai.usage.completion_tokens": 3}),
        ("embed", SpanKind.CLIENT, {"gen_ai.system": "openai", "gen_ai.usage.input_tokens": 7.0,
                                    "gen_ai.operation.name": "embeddings"}),
        ("agent", SpanKind.INTERNAL, {"gen_ai.operation.name": "invoke_agent", "gen_ai.usage.input_tokens": 99}),
        ("GET", SpanKind.SERVER, {"http.method": "GET"}),
        ("bad", SpanKind.CLIENT, {"gen_ai.provider.name": "openai", "gen_ai.usage.input_tokens": "12"}),
    ]
    for name, kind, attributes in spans:
        with tracer.start_as_current_span(name, kind=kind, attributes=attributes) as span:
            if name == "embed":
                span.set_status(Status(StatusCode.ERROR))
    provider.shutdown()
    return encode_spans(memory.get_finished_spans())


def test_otlp_json_gives_the_same_charges_and_rejections_as_protobuf():
    message = sdk_export()
    from_protobuf = charges_of(message)
    from_json = charges_of_spans(json_spans(message_json(message)))
    assert from_json == from_protobuf
    assert len(from_json.charges) == 3 and len(from_json.rejected) == 1  # the agent and HTTP spans are ignored


def test_enum_names_snake_case_keys_and_numbers_are_read_as_protobufs_json_reader_reads_them():
    message = sdk_export()
    body = MessageToDict(message, preserving_proto_field_name=True)  # enum names, snake_case keys
    for resource_spans in body["resource_spans"]:
        for span in resource_spans["scope_spans"][0]["spans"]:
            span["trace_id"] = base64.b64decode(span["trace_id"]).hex()
            span["span_id"] = base64.b64decode(span["span_id"]).hex()
            span.pop("parent_span_id", None)
            span["start_time_unix_nano"] = int(span["start_time_unix_nano"])  # a number, not a string
    assert charges_of_spans(json_spans(body)) == charges_of(message)


def spoiled(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    body = copy.deepcopy(message_json(sdk_export()))
    target: Any = body
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return body


SPAN = ("resourceSpans", 0, "scopeSpans", 0, "spans", 0)


@pytest.mark.parametrize(("path", "value", "named"), [
    (("resourceSpans",), {"a": 1}, "resourceSpans: expected an array"),
    (("resourceSpans", 0), None, "resourceSpans[0]: expected an object"),
    (("resourceSpans", 0, "scopeSpans", 0), [], "scopeSpans[0]: expected an object"),
    ((*SPAN,), "span", "spans[0]: expected an object"),
    ((*SPAN, "traceId"), "AAECAwQFBgcICQoLDA0ODw==", "traceId: must be hex"),
    ((*SPAN, "spanId"), "00112233", "spanId: must be 8 bytes"),
    ((*SPAN, "kind"), "CLIENT", "kind: expected one of"),
    ((*SPAN, "endTimeUnixNano"), "soon", "endTimeUnixNano: expected an integer"),
    ((*SPAN, "endTimeUnixNano"), "-1", "endTimeUnixNano: out of range"),
    ((*SPAN, "attributes", 0, "value"), {"intValue": "1.5"}, "value.intValue: expected an integer"),
    ((*SPAN, "attributes", 0, "value"), {"stringValue": "a", "intValue": "1"}, "an AnyValue holds one"),
    ((*SPAN, "attributes", 0), "gen_ai.system=openai", "attributes[0]: expected an object"),
    ((*SPAN, "status"), {"code": "BROKEN"}, "status.code: expected one of"),
])
def test_a_malformed_field_is_named_by_its_path(path, value, named):
    body = spoiled(path, value)
    if path[-1] == "value":  # make sure the spoiled attribute is one the mapping reads
        body["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"][0]["key"] = "gen_ai.usage.input_tokens"
    with pytest.raises(BadOtlpJson, match=named.replace("(", r"\(").replace("[", r"\[")):
        json_spans(body)


def test_unknown_fields_and_unread_attributes_are_skipped():
    message = sdk_export()
    body = message_json(message)
    span = body["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    span["futureField"] = {"anything": [1, 2]}
    span["attributes"].append({"key": "http.route", "value": {"unknownValue": True}})
    assert charges_of_spans(json_spans(body)) == charges_of(message)


def test_the_body_must_be_an_object():
    with pytest.raises(BadOtlpJson, match="must be a JSON object"):
        json_spans([1, 2])


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20)
#: The names the reader looks for, so that generated bodies reach its every branch.
NAMES = st.sampled_from(["resourceSpans", "resource", "attributes", "scopeSpans", "spans", "traceId", "spanId",
                         "kind", "status", "code", "startTimeUnixNano", "endTimeUnixNano", "key", "value",
                         "stringValue", "intValue", "doubleValue", "boolValue", "arrayValue", "kvlistValue",
                         "bytesValue", "values", "gen_ai.usage.input_tokens", "gen_ai.system", "ledger.account_id"])
SHAPED = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) | NAMES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(NAMES, inner, max_size=4),
    max_leaves=30)


@settings(max_examples=300 * settings.default.max_examples // 100, deadline=None)
@given(body=st.one_of(JSON_VALUES, SHAPED))
def test_any_json_is_spans_or_a_named_refusal_never_another_error(body):
    try:
        spans = json_spans(body)
    except BadOtlpJson as exc:
        assert str(exc)
        return
    mapped = charges_of_spans(spans)
    assert len(mapped.charges) + len(mapped.rejected) <= len(spans)
