"""Refusals say what happened in the project's words: titles, CloudEvents refusals, the reversal's answer.

One server per store serves the module; each test sends events and charges of its own."""

from __future__ import annotations

import json

import httpx
import pytest
from openmeter import Client

from http_helpers import bearer, module_store_url, shared_server  # noqa: F401 - fixtures

#: One worker runs the module, so its shared server starts once per store.
pytestmark = pytest.mark.xdist_group("http-refusal-wording")

EVENT = {"specversion": "1.0", "id": "e-1", "source": "gateway", "type": "completion", "subject": "acme",
         "time": "2026-02-01T10:00:00Z", "data": {"prompt_tokens": 5, "completion_tokens": 1}}
SINGLE = {"Content-Type": "application/cloudevents+json"}


def test_a_wrong_method_is_titled_as_such(shared_server):
    answer = httpx.delete(f"{shared_server.url}/v1/charges")
    assert answer.status_code == 405 and answer.json()["title"] == "Method not allowed"


def test_a_lone_conflicting_event_says_nothing_was_stored(shared_server):
    key = shared_server.new_key("--role", "ingest")
    with httpx.Client(base_url=shared_server.url, headers=bearer(key), timeout=30) as http:
        assert http.post("/api/v1/events", content=json.dumps(EVENT), headers=SINGLE).status_code == 204
        changed = {**EVENT, "data": {"prompt_tokens": 6, "completion_tokens": 1}}
        answer = http.post("/api/v1/events", content=json.dumps(changed), headers=SINGLE)
    assert answer.status_code == 409
    assert "nothing was stored" in answer.json()["detail"] and "others" not in answer.json()["detail"]
    assert [e["field"] for e in answer.json()["errors"]] == [
        "events[0].data.prompt_tokens", "events[0].data.total_tokens"]


def test_the_openmeter_sdk_shows_which_event_and_field_were_refused(shared_server):
    key = shared_server.new_key("--role", "ingest")
    with Client(endpoint=shared_server.url, token=key) as client:
        with pytest.raises(Exception) as caught:
            sent = {**EVENT, "id": "e-2"}
            client.events.ingest_events([sent, {k: v for k, v in sent.items() if k != "subject"}])
    assert "events[1].subject" in str(caught.value), str(caught.value)


def test_a_reversal_answers_with_what_it_took_back(shared_server):
    key = shared_server.new_key("--role", "ingest", "--account", "acme")
    with httpx.Client(base_url=shared_server.url, headers=bearer(key), timeout=30) as http:
        http.post("/v1/charges", json={"charge_id": "c-1", "charge_type": "usage", "prompt_tokens": 3})
        answer = http.post("/v1/charges/c-1/reversal", json={"reason": "refund"})
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"charge_id", "account_id", "reversed_at", "reason", "cost_micros", "price_version"}
    assert (body["charge_id"], body["account_id"], body["reason"]) == ("c-1", "acme", "refund")
