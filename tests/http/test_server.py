"""The main paths through a real ``ledger serve`` (uvicorn on a loopback port), on SQLite and PostgreSQL.

The SDK tests share one server per store (accounts of their own); the tests that read the whole store
(``ledger report``, ``keys list``) or record documented events byte for byte start their own."""

from __future__ import annotations

import csv
import io
import json
import time

import httpx
import pytest
from cloudevents.conversion import to_structured
from cloudevents.http import CloudEvent
from openmeter import Client

from ledger.settings import HttpSettings

from http_helpers import bearer, ledger_command, module_store_url, server, shared_server  # noqa: F401 - fixtures

#: One worker runs the module, so its shared server starts once per store.
pytestmark = pytest.mark.xdist_group("http-server")

CHARGE = {"account_id": "acme", "user_id": "ada", "charge_type": "completion", "provider": "openai",
          "model": "gpt-4o", "prompt_tokens": 120, "completion_tokens": 30, "charge_id": "req-1",
          "occurred_at": "2026-01-31T12:00:00Z"}


def test_record_read_and_revoke_through_a_real_server(server):
    admin = server.new_key("--role", "admin")
    reader = server.new_key("--role", "read", "--account", "acme")
    with httpx.Client(base_url=server.url, timeout=30) as http:
        health = http.get("/healthz").json()
        assert {k: health[k] for k in ("status", "database")} == {"status": "ok", "database": "ok"}
        assert "/v1/charges" in http.get("/openapi.json").json()["paths"]
        assert http.get("/docs").status_code == 200

        created = http.post("/v1/charges", json=CHARGE, headers=bearer(admin))
        assert created.status_code == 201
        assert created.json()["duplicate"] is False and created.json()["account_id"] == "acme"
        again = http.post("/v1/charges", json=CHARGE, headers=bearer(admin))
        assert again.status_code == 200
        assert again.json() == {**created.json(), "duplicate": True}

        conflict = http.post("/v1/charges", json={**CHARGE, "prompt_tokens": 121}, headers=bearer(admin))
        assert conflict.status_code == 409
        assert conflict.headers["content-type"] == "application/problem+json"
        assert {e["field"] for e in conflict.json()["errors"]} == {"prompt_tokens", "total_tokens"}

        invalid = http.post("/v1/charges", json={**CHARGE, "charge_id": "req-2", "prompt_tokens": -1,
                                                  "charge_type": "bogus"}, headers=bearer(admin))
        assert invalid.status_code == 422
        assert {e["field"] for e in invalid.json()["errors"]} == {"prompt_tokens", "charge_type"}

        batch = http.post("/v1/charges/batch", headers=bearer(admin), json={"charges": [
            {**CHARGE, "charge_id": "req-3"}, {**CHARGE, "charge_id": "req-4", "model": ""},
            {**CHARGE, "charge_id": "req-5", "prompt_tokens": "many"}, CHARGE]})
        assert batch.status_code == 200
        assert [o["status"] for o in batch.json()["outcomes"]] == ["recorded", "recorded", "invalid", "duplicate"]
        assert batch.json()["outcomes"][2]["errors"][0]["field"] == "prompt_tokens"

        reversed_ = http.post("/v1/charges/req-4/reversal", json={"reason": "failed call", "account_id": "acme"},
                             headers=bearer(admin))
        assert reversed_.status_code == 200 and reversed_.json()["charge_id"] == "req-4"

        totals = http.get("/v1/accounts/acme/totals", headers=bearer(reader)).json()
        assert totals == {"account_id": "acme", "charges": 2, "prompt_tokens": 240, "completion_tokens": 60,
                          "total_tokens": 300, "cost_micros": 0, "unpriced_charges": 2}

        usage = http.get("/v1/usage", params={"group_by": "account_id,billing_date"}, headers=bearer(reader))
        assert usage.status_code == 200
        assert usage.json()["data"] == [{"account_id": "acme", "user_id": None, "billing_date": "2026-01-31",
                                         "charge_type": None, "provider": None, "model": None, "charges": 2,
                                         "prompt_tokens": 240, "completion_tokens": 60, "total_tokens": 300,
                                         "cost_micros": 0, "unpriced_charges": 2}]
        as_csv = http.get("/v1/usage", params={"group_by": "model"},
                          headers={**bearer(reader), "Accept": "text/csv"})
        assert as_csv.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(as_csv.text)))
        assert rows == [{"model": "gpt-4o", "charges": "2", "prompt_tokens": "240", "completion_tokens": "60",
                         "total_tokens": "300", "cost_micros": "0", "unpriced_charges": "2"}]

        # The same keys as `ledger report --format json`, and the same rows.
        report = json.loads(ledger_command(server.database_url, "report", "--group-by", "account_id,billing_date",
                                           "--format", "json"))
        assert report == usage.json()["data"]

        key_id = json.loads(ledger_command(server.database_url, "keys", "list", "--json"))[1]["id"]
        ledger_command(server.database_url, "keys", "revoke", key_id)
        time.sleep(HttpSettings().key_cache_seconds)  # the server trusts a verified key this long
        refused = http.get("/v1/accounts/acme/totals", headers=bearer(reader))
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Bearer")


def test_openmeter_sdk_ingests_unchanged_and_totals_follow(shared_server):
    key = shared_server.new_key("--role", "ingest")
    reader = shared_server.new_key("--role", "read", "--account", "customer-1")
    events = [
        {"specversion": "1.0", "id": f"call-{n}", "source": "gateway", "type": "prompt", "subject": "customer-1",
         "time": "2026-02-01T10:00:00Z", "data": {"tokens": tokens, "type": kind, "model": "gpt-4o"}}
        for n, (tokens, kind) in enumerate([(100, "input"), (40, "output"), (7, "input")])
    ]
    with Client(endpoint=shared_server.url, token=key) as client:
        client.events.ingest_events(events)
        client.events.ingest_events(events)  # a resend: duplicates, counted once
        client.events.ingest_event({**events[0], "id": "call-9", "data": {"prompt_tokens": 5,
                                                                          "completion_tokens": 6}})
    totals = httpx.get(f"{shared_server.url}/v1/accounts/customer-1/totals", headers=bearer(reader)).json()
    assert (totals["charges"], totals["prompt_tokens"], totals["completion_tokens"]) == (4, 112, 46)


def test_cloudevents_sdk_structured_event_is_recorded_once(shared_server):
    key = shared_server.new_key("--role", "ingest", "--account", "customer-2")
    reader = shared_server.new_key("--role", "read", "--account", "customer-2")
    event = CloudEvent({"type": "usage", "source": "billing-proxy", "id": "evt-1", "subject": "customer-2",
                        "time": "2026-02-02T08:30:00+00:00"},
                       {"prompt_tokens": 10, "completion_tokens": 3, "model": "claude", "provider": "anthropic"})
    headers, body = to_structured(event)
    for _ in range(2):
        answer = httpx.post(f"{shared_server.url}/api/v1/events", content=body, headers={**headers, **bearer(key)})
        assert answer.status_code == 204, answer.text
    totals = httpx.get(f"{shared_server.url}/v1/accounts/customer-2/totals", headers=bearer(reader)).json()
    assert (totals["charges"], totals["total_tokens"]) == (1, 13)
    usage = httpx.get(f"{shared_server.url}/v1/usage", params={"group_by": "charge_type,provider"},
                      headers=bearer(reader)).json()["data"]
    assert [(r["charge_type"], r["provider"]) for r in usage] == [("usage", "anthropic")]


@pytest.mark.parametrize("content_type", ["application/cloudevents+json", "application/cloudevents-batch+json"])
def test_openmeter_curl_examples_work(server, content_type):
    """The requests OpenMeter's documentation sends with curl, byte for byte."""
    key = server.new_key("--role", "admin")
    event = ('{"specversion": "1.0", "type": "prompt", "id": "00001", "time": "2026-01-01T00:00:00.001Z", '
             '"source": "chat-app", "subject": "customer-1", '
             '"data": {"tokens": "1234", "model": "gpt-4-turbo", "type": "input"}}')
    body = event if content_type.endswith("cloudevents+json") else f"[{event}]"
    answer = httpx.post(f"{server.url}/api/v1/events", content=body,
                        headers={"Content-Type": content_type, **bearer(key)})
    assert answer.status_code == 204, answer.text
    totals = httpx.get(f"{server.url}/v1/accounts/customer-1/totals", headers=bearer(key)).json()
    assert totals["prompt_tokens"] == 1234
