"""``POST /v1/traces`` on a real ``ledger serve``, fed by the real OpenTelemetry SDK.

Spans are made by the SDK's tracer and sent by its OTLP/HTTP exporter
(protobuf, plain and gzip); JSON bodies are the same spans in OTLP JSON
(lowerCamelCase keys, hex ids, 64-bit integers as strings, enums as integers),
as the specification writes them. Charges are read back through the ledger.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from ledger import Ledger, Settings, UnknownAccount
from ledger.store.schema import charge_index
from ledger_service.keys import create_key
from tests.http.http_helpers import bearer, module_store_url, serving  # noqa: F401 - fixture
from tests.integrations.otlp_support import message_json

#: One worker runs the module, so its server starts once per store.
pytestmark = pytest.mark.xdist_group("otlp-receiver")

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


@dataclass
class Receiver:
    """A running ``ledger serve``, a ledger on its store, and its keys."""

    url: str
    ledger: Ledger
    ingest: str
    ingest_a: str
    read_k: str


@pytest.fixture(scope="module")
def receiver(module_store_url) -> Iterator[Receiver]:  # noqa: F811 - the fixture imported above
    """One server per store for the module: each test uses accounts of its own."""
    ledger = Ledger(Settings(database_url=module_store_url))
    try:
        keys = [create_key(ledger, *args)[1] for args in (("ingest",), ("ingest", "acct-a"), ("read", "acct-k"))]
        with serving(module_store_url) as server:
            yield Receiver(server.url, ledger, *keys)
    finally:
        ledger.close()


def call(provider: str, model: str, prompt: int, completion: int, *, old: bool = False, **extra: Any) -> dict[str, Any]:
    """A GenAI client span's attributes, in the current or the older semantic conventions."""
    if old:
        return {"gen_ai.system": provider, "gen_ai.request.model": model, "gen_ai.usage.prompt_tokens": prompt,
                "gen_ai.usage.completion_tokens": completion, **extra}
    return {"gen_ai.provider.name": provider, "gen_ai.request.model": model,
            "gen_ai.usage.input_tokens": prompt, "gen_ai.usage.output_tokens": completion, **extra}


def finished_spans(calls: Sequence[Mapping[str, Any]], resource: Mapping[str, Any]) -> list[ReadableSpan]:
    """The SDK's finished spans: one CLIENT span per call, each under an HTTP server span (not GenAI)."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(dict(resource)))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests.otlp")
    for attributes in calls:
        name = f"chat {attributes.get('gen_ai.request.model')}"
        with (tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER, attributes={"http.method": "POST"}),
              tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes=dict(attributes))):
            pass
    provider.shutdown()
    return list(memory.get_finished_spans())


def otlp_json(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """The spans as an OTLP JSON ExportTraceServiceRequest: ids in hex, enums as integers."""
    return message_json(encode_spans(spans))


def post(url: str, key: str, body: bytes, kind: str, *, gzipped: bool = False) -> httpx.Response:
    headers = {**bearer(key), "Content-Type": kind}
    if gzipped:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    return httpx.post(f"{url}/v1/traces", content=body, headers=headers, timeout=30)


def exporter(url: str, key: str, compression: Compression = Compression.NoCompression) -> OTLPSpanExporter:
    return OTLPSpanExporter(endpoint=f"{url}/v1/traces", headers=bearer(key), compression=compression, timeout=30)


def expected(account: str, calls: Iterable[Mapping[str, Any]]) -> dict[str, tuple[int, int, int]]:
    """{account: (charges, prompt tokens, completion tokens)} for calls in either convention."""
    calls = list(calls)
    prompt = sum(c.get("gen_ai.usage.input_tokens", c.get("gen_ai.usage.prompt_tokens", 0)) for c in calls)
    completion = sum(c.get("gen_ai.usage.output_tokens", c.get("gen_ai.usage.completion_tokens", 0)) for c in calls)
    return {account: (len(calls), prompt, completion)}


def totals(ledger: Ledger, *accounts: str) -> dict[str, tuple[int, int, int]]:
    found = {}
    for account in accounts:
        try:
            t = ledger.account_totals(account)
        except UnknownAccount:
            continue
        found[account] = (t.charges, t.prompt_tokens, t.completion_tokens)
    return found


def payloads(ledger: Ledger, account: str) -> list[dict[str, Any]]:
    """The facts of each charge recorded for ``account``, as the charge-id index keeps them."""
    query = sa.select(charge_index.c.payload).where(charge_index.c.account_id == account)
    with ledger.store.engine.connect() as connection:
        return [json.loads(row) for row in connection.execute(query).scalars()]


def partial_success(response: httpx.Response) -> tuple[int, str]:
    """(rejected spans, error message) of a 200 answer, in the request's encoding."""
    assert response.status_code == 200, response.text
    if response.headers["content-type"].startswith(JSON):
        found = response.json().get("partialSuccess", {})
        return int(found.get("rejectedSpans", "0")), found.get("errorMessage", "")
    assert response.headers["content-type"] == PROTOBUF
    message = ExportTraceServiceResponse.FromString(response.content)
    return message.partial_success.rejected_spans, message.partial_success.error_message


def test_the_sdk_exporter_sends_protobuf_plain_and_gzip_in_both_conventions_and_a_resend_counts_once(receiver):
    url, key, ledger = receiver.url, receiver.ingest, receiver.ledger
    new = [call("openai", "gpt-4o", 1200, 300, **{"enduser.id": "u-1"}), call("anthropic", "claude-3-5-sonnet", 80, 9)]
    old = [call("openai", "gpt-4o-mini", 500, 50, old=True), call("openai", "gpt-4o", 7, 3, old=True)]
    plain = finished_spans(new, {"service.name": "chat", "ledger.account_id": "acct-new"})
    zipped = finished_spans(old, {"service.name": "chat", "ledger.account_id": "acct-old"})
    assert exporter(url, key).export(plain) is SpanExportResult.SUCCESS
    assert exporter(url, key, Compression.Gzip).export(zipped) is SpanExportResult.SUCCESS
    wanted = {**expected("acct-new", new), **expected("acct-old", old)}
    assert totals(ledger, "acct-new", "acct-old") == wanted
    facts = {(p["provider"], p["model"], p["user_id"]) for p in payloads(ledger, "acct-new")}
    assert facts == {("openai", "gpt-4o", "u-1"), ("anthropic", "claude-3-5-sonnet", "")}

    # The exporter retries an export it thinks failed: the same spans again are the same charges.
    assert exporter(url, key, Compression.Deflate).export(plain) is SpanExportResult.SUCCESS
    resent = post(url, key, encode_spans(zipped).SerializeToString(), PROTOBUF)
    assert partial_success(resent) == (0, "")
    assert totals(ledger, "acct-new", "acct-old") == wanted
    assert len(payloads(ledger, "acct-new")) + len(payloads(ledger, "acct-old")) == len(new) + len(old)


def test_otlp_json_plain_and_gzip_answers_in_json_and_a_resend_counts_once(receiver):
    url, key, ledger = receiver.url, receiver.ingest, receiver.ledger
    calls = [call("openai", "gpt-4o", 100 + i, 10 + i, **{"gen_ai.response.id": f"chatcmpl-{i}"}) for i in range(3)]
    old = [call("openai", "gpt-4o", 40, 4, old=True)]
    body = json.dumps(otlp_json(finished_spans(calls, {"ledger.account_id": "acct-json"}))).encode()
    old_body = json.dumps(otlp_json(finished_spans(old, {"ledger.account_id": "acct-json-old"}))).encode()
    for gzipped in (False, True):
        for each in (body, old_body):
            answer = post(url, key, each, JSON, gzipped=gzipped)
            assert answer.headers["content-type"].startswith(JSON)
            assert partial_success(answer) == (0, "")
    assert totals(ledger, "acct-json", "acct-json-old") == {**expected("acct-json", calls),
                                                            **expected("acct-json-old", old)}
    assert sorted(p["charge_id"] for p in payloads(ledger, "acct-json")) == [f"chatcmpl-{i}" for i in range(3)]


def test_a_scoped_keys_spans_for_another_account_are_rejected_in_partial_success(receiver):
    own = [call("openai", "gpt-4o", 10, 1), call("openai", "gpt-4o", 20, 2, **{"ledger.account_id": "acct-a"})]
    foreign = [call("openai", "gpt-4o", 30, 3, **{"ledger.account_id": "acct-b"})]
    spans = finished_spans(own + foreign, {"service.name": "tenant-a"})
    for kind, body in ((PROTOBUF, encode_spans(spans).SerializeToString()), (JSON, json.dumps(otlp_json(spans)).encode())):
        rejected, message = partial_success(post(receiver.url, receiver.ingest_a, body, kind))
        assert rejected == len(foreign)
        assert "ledger.account_id: outside this key's account ('acct-a')" in message
    assert totals(receiver.ledger, "acct-a", "acct-b") == expected("acct-a", own)


def test_invalid_genai_spans_are_rejected_with_reasons_and_the_valid_ones_recorded(receiver):
    good = [call("openai", "gpt-4o", 10, 1)]
    bad = [{"gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o"},  # no tokens
           call("openai", "gpt-4o", -5, 1),  # the ledger refuses negative tokens
           call("openai", "gpt-4o", 10, 1, **{"ledger.account_id": ""})]
    spans = finished_spans(good + bad, {"ledger.account_id": "acct-mixed"})
    answer = post(receiver.url, receiver.ingest, encode_spans(spans).SerializeToString(), PROTOBUF)
    rejected, message = partial_success(answer)
    assert rejected == len(bad)
    for reason in ("no token counts", "gen_ai.usage.input_tokens:", "ledger.account_id:"):
        assert reason in message
    assert totals(receiver.ledger, "acct-mixed") == expected("acct-mixed", good)


@pytest.mark.parametrize("kind", [PROTOBUF, JSON])
def test_malformed_bodies_get_400_in_the_requests_encoding_and_nothing_is_stored(receiver, kind):
    url, key = receiver.url, receiver.ingest
    account = f"acct-bad-{kind.rsplit('-', 1)[-1].rsplit('/', 1)[-1]}"
    spans = finished_spans([call("openai", "gpt-4o", 10, 1)], {"ledger.account_id": account})
    valid = encode_spans(spans).SerializeToString() if kind == PROTOBUF else json.dumps(otlp_json(spans)).encode()
    broken_hex = json.dumps(otlp_json(spans)).replace('"traceId": "', '"traceId": "zz').encode()
    bodies = [valid[: len(valid) // 2] + b"\xff\xff\xff", b"\x0a\xff\xff\xff\xff\x0f", b"{not json", b"[1, 2]",
              broken_hex, b'{"resourceSpans": {"scopeSpans": 1}}']
    for body in bodies:
        for gzipped in (False, True):
            answer = post(url, key, body, kind, gzipped=gzipped)
            if answer.status_code == 200:  # a body that happens to decode as this kind: its spans are not GenAI
                assert partial_success(answer) == (0, "")
                continue
            assert answer.status_code == 400, (body, answer.text)
            assert answer.headers["content-type"].startswith(kind)
    headers = {**bearer(key), "Content-Type": kind, "Content-Encoding": "gzip"}
    assert httpx.post(f"{url}/v1/traces", content=valid, headers=headers, timeout=30).status_code == 400
    truncated = gzip.compress(valid)[:-12]
    assert httpx.post(f"{url}/v1/traces", content=truncated, headers=headers, timeout=30).status_code == 400
    assert payloads(receiver.ledger, account) == []


def test_a_gzip_bomb_is_refused_without_inflating_it(receiver):
    bomb = gzip.compress(b"\x00" * 64 * 1024 * 1024)  # 64 MiB of zeros in about 64 KiB
    answer = httpx.post(f"{receiver.url}/v1/traces", content=bomb, timeout=30,
                        headers={**bearer(receiver.ingest), "Content-Type": PROTOBUF, "Content-Encoding": "gzip"})
    assert answer.status_code == 413
    assert "once decompressed" in answer.text


def test_the_key_is_checked_first_then_the_content_type(receiver):
    url = receiver.url
    spans = finished_spans([call("openai", "gpt-4o", 10, 1)], {"ledger.account_id": "acct-k"})
    body = encode_spans(spans).SerializeToString()
    assert httpx.post(f"{url}/v1/traces", content=b"junk", headers={"Content-Type": PROTOBUF}).status_code == 401
    assert post(url, receiver.read_k, body, PROTOBUF).status_code == 403
    assert post(url, "lk_unknown", b"junk", "text/plain").status_code == 401
    refused = post(url, receiver.ingest, body, "text/plain")
    assert refused.status_code == 415
    assert refused.headers["content-type"] == "application/problem+json"
    assert payloads(receiver.ledger, "acct-k") == []


def test_two_spans_of_one_response_are_one_charge_and_a_differing_one_is_a_conflict(receiver):
    """An instrumented SDK and a framework each report the call: same response id, other span ids and times."""
    same = call("openai", "gpt-4o", 64, 8, **{"gen_ai.response.id": "chatcmpl-shared"})
    differing = call("openai", "gpt-4o", 65, 8, **{"gen_ai.response.id": "chatcmpl-shared"})
    spans = finished_spans([same, same], {"ledger.account_id": "acct-shared"})
    assert partial_success(post(receiver.url, receiver.ingest, encode_spans(spans).SerializeToString(), PROTOBUF)) \
        == (0, "")
    later = finished_spans([differing], {"ledger.account_id": "acct-shared"})
    rejected, message = partial_success(post(receiver.url, receiver.ingest, json.dumps(otlp_json(later)).encode(), JSON))
    assert rejected == 1
    assert "charge 'chatcmpl-shared' was recorded before with another gen_ai.usage.input_tokens" in message
    assert "total_tokens" not in message
    assert totals(receiver.ledger, "acct-shared") == expected("acct-shared", [same])
