"""Without the ``[otel]`` extra, ``POST /v1/traces`` says what to install (501) and the rest of the API works.

The extra's modules are made unimportable for the test (``sys.modules[name] = None``
is how Python marks a module that must not be imported), as on a base install.
"""

from __future__ import annotations

import sys

import pytest
from fastapi.testclient import TestClient

from ledger_service.http import create_app
from ledger_service.http.otlp import decoder
from ledger_service.keys import create_key

BLOCKED = ("opentelemetry.proto", "opentelemetry.proto.collector", "opentelemetry.proto.collector.trace",
           "opentelemetry.proto.collector.trace.v1", "opentelemetry.proto.collector.trace.v1.trace_service_pb2")


@pytest.fixture
def without_otel(monkeypatch):
    for name in BLOCKED:
        monkeypatch.setitem(sys.modules, name, None)
    decoder.cache_clear()
    yield
    decoder.cache_clear()


def test_without_the_extra_traces_are_501_naming_the_extra_and_charges_still_record(ledger, without_otel):
    key = create_key(ledger, "ingest")[1]
    headers = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(ledger)) as client:
        refused = client.post("/v1/traces", content=b"\x0a\x00", headers={**headers, "Content-Type": "application/x-protobuf"})
        assert refused.status_code == 501
        assert "pip install 'llm-usage-ledger[otel]'" in refused.json()["detail"]
        assert client.post("/v1/traces", content=b"{}", headers={"Content-Type": "application/json"}).status_code == 401
        recorded = client.post("/v1/charges", headers=headers, json={
            "account_id": "acct-base", "charge_type": "completion", "prompt_tokens": 3, "completion_tokens": 1})
        assert recorded.status_code == 201
    assert ledger.account_totals("acct-base").total_tokens == 4
