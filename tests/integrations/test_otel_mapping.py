"""The mapping of decoded OTLP spans to charge fields (ledger_service.integrations.otel), no HTTP.

Spans are real ``opentelemetry-proto`` messages, built field by field as an
exporter sends them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from ledger_service.integrations.otel import charges_of, instant

TRACE = bytes.fromhex("5b8efff798038103d269b633813fc60c")
END = 1_764_900_001_234_567_891  # 2025-12-05T02:00:01.234567891Z
NEW = {"gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
       "gen_ai.usage.input_tokens": 120, "gen_ai.usage.output_tokens": 30}


def value(python: Any) -> AnyValue:
    if isinstance(python, bool):
        return AnyValue(bool_value=python)
    if isinstance(python, int):
        return AnyValue(int_value=python)
    if isinstance(python, float):
        return AnyValue(double_value=python)
    return AnyValue(string_value=python)


def pairs(attributes: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=value(v)) for k, v in attributes.items()]


def export(*spans: Span, resource: dict[str, Any] | None = None) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend(pairs(resource if resource is not None else
                                                    {"service.name": "chat", "ledger.account_id": "acct-r"}))
    resource_spans.scope_spans.add().spans.extend(spans)
    return request


def span(attributes: dict[str, Any], number: int = 1, *, kind: int = Span.SPAN_KIND_CLIENT, start: int = END - 10**9,
         end: int = END, status: int = Status.STATUS_CODE_UNSET) -> Span:
    return Span(trace_id=TRACE, span_id=number.to_bytes(8, "big"), name="chat gpt-4o", kind=kind,
                start_time_unix_nano=start, end_time_unix_nano=end, attributes=pairs(attributes),
                status=Status(code=status))


def test_new_attribute_names_map_to_every_charge_field():
    mapped = charges_of(export(span({**NEW, "gen_ai.response.model": "gpt-4o-2024-08-06",
                                     "gen_ai.response.id": "chatcmpl-1", "enduser.id": "u-7",
                                     "gen_ai.conversation.id": "conv-3"})))
    assert mapped.rejected == []
    assert mapped.charges == [{
        "provider": "openai", "model": "gpt-4o-2024-08-06", "prompt_tokens": 120, "completion_tokens": 30,
        "account_id": "acct-r", "user_id": "u-7", "charge_type": "completion", "session_key": "conv-3",
        "charge_id": "chatcmpl-1", "reference": f"trace:{TRACE.hex()} span:0000000000000001",
        "occurred_at": datetime(2025, 12, 5, 2, 0, 1, 234567, tzinfo=UTC),
    }]


def test_older_attribute_names_give_the_same_charge():
    old = {"gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o",
           "gen_ai.usage.prompt_tokens": 120, "gen_ai.usage.completion_tokens": 30}
    assert charges_of(export(span(old))).charges == charges_of(export(span(NEW))).charges


def test_new_names_win_over_old_ones_and_the_response_model_over_the_request_model():
    both = {**NEW, "gen_ai.system": "azure", "gen_ai.usage.prompt_tokens": 1, "gen_ai.response.model": "gpt-4o-mini"}
    [fields] = charges_of(export(span(both))).charges
    assert (fields["provider"], fields["model"], fields["prompt_tokens"]) == ("openai", "gpt-4o-mini", 120)


def test_without_a_response_id_the_charge_id_is_the_spans_ids():
    [first, second] = charges_of(export(span(NEW, 1), span(NEW, 2))).charges
    assert first["charge_id"] == f"otel:{TRACE.hex()}:0000000000000001"
    assert second["charge_id"] == f"otel:{TRACE.hex()}:0000000000000002"


def test_occurred_at_is_the_end_time_else_the_start_time_in_utc():
    [fields] = charges_of(export(span(NEW, end=0, start=END))).charges
    assert fields["occurred_at"] == instant(END) == datetime(2025, 12, 5, 2, 0, 1, 234567, tzinfo=UTC)


def test_account_and_user_precedence_span_before_resource():
    resource = {"ledger.account_id": "acct-r", "enduser.id": "u-resource", "user.id": "u-r2"}
    spans = [span({**NEW, "ledger.account_id": "acct-s"}, 1), span({**NEW, "user.id": "u-span"}, 2),
             span({**NEW, "ledger.user_id": "u-ledger", "enduser.id": "u-end"}, 3), span(NEW, 4)]
    charges = charges_of(export(*spans, resource=resource)).charges
    assert [(c["account_id"], c["user_id"]) for c in charges] == [
        ("acct-s", "u-resource"), ("acct-r", "u-span"), ("acct-r", "u-ledger"), ("acct-r", "u-resource")]


def test_a_scoped_key_gives_its_account_and_rejects_spans_naming_another():
    spans = [span(NEW, 1), span({**NEW, "ledger.account_id": "acct-a"}, 2), span({**NEW, "ledger.account_id": "acct-b"}, 3)]
    mapped = charges_of(export(*spans, resource={}), scope="acct-a")
    assert [c["account_id"] for c in mapped.charges] == ["acct-a", "acct-a"]
    [rejected] = mapped.rejected
    assert rejected.span.endswith("0000000000000003")
    assert "ledger.account_id: outside this key's account ('acct-a')" in rejected.reason


def test_an_unscoped_key_needs_an_account_attribute():
    mapped = charges_of(export(span(NEW), resource={}))
    assert mapped.charges == []
    assert "ledger.account_id: no account" in mapped.rejected[0].reason


def test_other_spans_are_ignored_not_rejected():
    ignored = [
        span({"http.method": "POST", "url.full": "https://api.example/v1"}, 1),
        span(NEW, 2, kind=Span.SPAN_KIND_SERVER),
        span({**NEW, "gen_ai.operation.name": "invoke_agent"}, 3),
        span({**NEW, "gen_ai.operation.name": "execute_tool"}, 4),
        span({"gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o"}, 5, status=Status.STATUS_CODE_ERROR),
    ]
    mapped = charges_of(export(*ignored, span({**NEW, "gen_ai.operation.name": "chat"}, 6)))
    assert mapped.rejected == []
    assert [c["charge_id"] for c in mapped.charges] == [f"otel:{TRACE.hex()}:0000000000000006"]


@pytest.mark.parametrize(("attributes", "why"), [
    ({"gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o"}, "gen_ai.usage.input_tokens: no token counts"),
    ({**NEW, "gen_ai.usage.input_tokens": "120"}, "gen_ai.usage.input_tokens: must be an integer"),
    ({**NEW, "gen_ai.usage.output_tokens": 2.5}, "gen_ai.usage.output_tokens: must be an integer"),
    ({**NEW, "gen_ai.provider.name": 7}, "gen_ai.provider.name: must be a string"),
    ({**NEW, "gen_ai.response.id": ""}, "gen_ai.response.id: must not be empty"),
    ({**NEW, "ledger.account_id": True}, "ledger.account_id: must be a string"),
])
def test_a_genai_span_with_bad_values_is_rejected_naming_the_attribute(attributes, why):
    mapped = charges_of(export(span(attributes, 9)))
    assert mapped.charges == []
    [rejected] = mapped.rejected
    assert rejected.span == f"{TRACE.hex()}/0000000000000009"
    assert why in rejected.reason


def test_a_whole_float_token_count_is_an_integer():
    [fields] = charges_of(export(span({**NEW, "gen_ai.usage.input_tokens": 120.0}))).charges
    assert fields["prompt_tokens"] == 120 and isinstance(fields["prompt_tokens"], int)


def test_a_span_without_ids_or_times_is_rejected():
    no_ids = Span(name="chat", kind=Span.SPAN_KIND_CLIENT, end_time_unix_nano=END, attributes=pairs(NEW))
    no_time = span(NEW, 2, start=0, end=0)
    reasons = [r.reason for r in charges_of(export(no_ids, no_time)).rejected]
    assert "span_id: without gen_ai.response.id" in reasons[0]
    assert "end_time_unix_nano: the span has no end or start time" in reasons[1]


def test_a_span_without_ids_but_with_a_response_id_is_charged():
    no_ids = Span(name="chat", kind=Span.SPAN_KIND_CLIENT, end_time_unix_nano=END,
                  attributes=pairs({**NEW, "gen_ai.response.id": "resp-9"}))
    [fields] = charges_of(export(no_ids)).charges
    assert fields["charge_id"] == "resp-9" and "reference" not in fields
