"""When the store is gone, ``POST /v1/traces`` answers 503 with ``Retry-After`` in the request's encoding,
and the exporter's retry once it is back counts each span once.

The server runs on a PostgreSQL database of this test's own, which the test
makes unreachable (``ALLOW_CONNECTIONS false`` and its sessions ended), then
reachable again, and drops at the end. The retry deadline is one second so
the refusal comes at once.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa
from conftest import PG_URL, admin_sql, scratch_database
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)

from ledger import Ledger, Settings
from ledger_service.keys import create_key
from tests.http.http_helpers import bearer, serving
from tests.integrations.test_otlp_receiver import (
    PROTOBUF,
    call,
    expected,
    finished_spans,
    totals,
)

pytestmark = pytest.mark.postgres


@pytest.fixture
def own_database() -> Iterator[str]:
    with scratch_database("otlp_down") as name:
        yield name


def test_an_unreachable_store_is_503_with_retry_after_and_the_retry_counts_once(own_database, monkeypatch):
    url = sa.engine.make_url(PG_URL).set(database=own_database).render_as_string(hide_password=False)
    monkeypatch.setenv("LEDGER_RETRY_DEADLINE_SECONDS", "1")
    monkeypatch.setenv("LEDGER_HTTP_KEY_CACHE_SECONDS", "0")
    ledger = Ledger(Settings(database_url=url))
    key = create_key(ledger, "ingest")[1]
    ledger.close()
    calls = [call("openai", "gpt-4o", 70, 7), call("openai", "gpt-4o-mini", 20, 2, old=True)]
    body = encode_spans(finished_spans(calls, {"ledger.account_id": "acct-down"})).SerializeToString()
    headers = {**bearer(key), "Content-Type": PROTOBUF}
    with serving(url) as server:
        admin_sql(f'ALTER DATABASE "{own_database}" ALLOW_CONNECTIONS false')
        admin_sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{own_database}'")
        down = httpx.post(f"{server.url}/v1/traces", content=body, headers=headers, timeout=60)
        assert down.status_code == 503, down.text
        assert int(down.headers["retry-after"]) >= 1
        assert down.headers["content-type"] == PROTOBUF
        admin_sql(f'ALTER DATABASE "{own_database}" ALLOW_CONNECTIONS true')
        for _ in range(2):  # the exporter's retry, and a resend of it
            back = httpx.post(f"{server.url}/v1/traces", content=body, headers=headers, timeout=60)
            assert back.status_code == 200, back.text
            assert ExportTraceServiceResponse.FromString(back.content).partial_success.rejected_spans == 0
    ledger = Ledger(Settings(database_url=url))
    try:
        assert totals(ledger, "acct-down") == expected("acct-down", calls)
    finally:
        ledger.close()
