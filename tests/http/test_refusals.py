"""Refusals: a refused request stores nothing and answers a problem naming what was wrong, never a 500."""

from __future__ import annotations

import json
import time

import pytest

from http_helpers import bearer, client, keys  # noqa: F401 - fixtures
from ledger.settings import HttpSettings
from ledger_service.http import create_app
from ledger_service.keys import create_key, revoke_key
from fastapi.testclient import TestClient

GOOD = {"account_id": "acme", "charge_type": "completion", "prompt_tokens": 1, "completion_tokens": 2}
EVENT = {"specversion": "1.0", "id": "e1", "source": "app", "type": "prompt", "subject": "acme",
         "data": {"tokens": 5, "type": "input"}}


def stored(ledger) -> int:
    return ledger.recorder.max_notification_id() or 0


@pytest.fixture
def small(ledger):
    """The app with small limits, to reach them cheaply."""
    app = create_app(ledger, HttpSettings(max_body_bytes=2048, max_batch=3))
    with TestClient(app) as client:
        yield client


def test_missing_malformed_unknown_and_revoked_keys_are_401(client, ledger, keys):
    key, secret = create_key(ledger, "admin")
    revoke_key(ledger, key.id)
    for headers in ({}, {"Authorization": "Basic abc"}, bearer("nope"), bearer(secret[:-1] + "x"), bearer(secret)):
        answer = client.post("/v1/charges", json=GOOD, headers=headers)
        assert answer.status_code == 401, headers
        assert answer.headers["content-type"] == "application/problem+json"
    assert stored(ledger) == 0


def test_a_revoked_key_is_refused_once_the_key_cache_time_has_passed(ledger):
    key, secret = create_key(ledger, "admin")
    with TestClient(create_app(ledger, HttpSettings(key_cache_seconds=0.5))) as client:
        assert client.post("/v1/charges", json={**GOOD, "charge_id": "c1"}, headers=bearer(secret)).status_code == 201
        before = stored(ledger)
        revoke_key(ledger, key.id)
        time.sleep(0.6)
        for path, body in (("/v1/charges", {**GOOD, "charge_id": "c2"}), ("/v1/charges/batch", {"charges": [GOOD]})):
            assert client.post(path, json=body, headers=bearer(secret)).status_code == 401, path
        assert client.get("/v1/accounts/acme/totals", headers=bearer(secret)).status_code == 401
    assert stored(ledger) == before


def test_without_the_key_cache_a_revoked_key_is_refused_on_the_next_request(ledger):
    key, secret = create_key(ledger, "admin")
    with TestClient(create_app(ledger, HttpSettings(key_cache_seconds=0))) as client:
        assert client.post("/v1/charges", json={**GOOD, "charge_id": "c1"}, headers=bearer(secret)).status_code == 201
        before = stored(ledger)
        revoke_key(ledger, key.id)
        assert client.post("/v1/charges", json={**GOOD, "charge_id": "c2"}, headers=bearer(secret)).status_code == 401
    assert stored(ledger) == before


def test_body_over_the_limit_is_413_and_stores_nothing(small, ledger, keys):
    padded = {**GOOD, "reference": "x" * 1000, "session_key": "y" * 2000}
    for path in ("/v1/charges", "/v1/charges/batch", "/api/v1/events"):
        answer = small.post(path, content=json.dumps(padded), headers={**bearer(keys.admin),
                                                                          "Content-Type": "application/json"})
        assert answer.status_code == 413, path
        assert answer.json()["errors"][0]["field"] == "body"
    assert stored(ledger) == 0


def test_batch_over_the_limit_is_413_and_stores_nothing(small, ledger, keys):
    answer = small.post("/v1/charges/batch", json={"charges": [GOOD] * 4}, headers=bearer(keys.admin))
    assert answer.status_code == 413 and answer.json()["errors"][0]["field"] == "charges"
    events = small.post("/api/v1/events", json=[{**EVENT, "id": str(n)} for n in range(4)],
                        headers={**bearer(keys.admin), "Content-Type": "application/cloudevents-batch+json"})
    assert events.status_code == 413
    assert stored(ledger) == 0


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_wrong_content_type_is_415(client, ledger, keys, content_type):
    for path in ("/v1/charges", "/v1/charges/batch", "/api/v1/events"):
        answer = client.post(path, content=json.dumps(GOOD), headers={**bearer(keys.admin),
                                                                      "Content-Type": content_type})
        assert answer.status_code == 415, (path, answer.text)
    assert stored(ledger) == 0


@pytest.mark.parametrize("body", [b"{", b"[1,", b"NaN", b"\xff\xfe", b'{"a": Infinity}'])
def test_malformed_json_is_400(client, ledger, keys, body):
    answer = client.post("/v1/charges", content=body, headers={**bearer(keys.admin), "Content-Type": "application/json"})
    assert answer.status_code == 400
    assert answer.json()["errors"] == [{"field": "body", "detail": "not valid JSON"}]


@pytest.mark.parametrize("body", [[], "text", 5, None, {"charges": 1}, {"prompt_tokens": 10**40},
                                  {**GOOD, "occurred_at": "yesterday"}, {**GOOD, "model": "a\x00b"},
                                  {**GOOD, "extra": 1}, {**GOOD, "prompt_tokens": 1.5}, {**GOOD, "\ud800": 1},
                                  {**GOOD, "reference": "x\udfff"}, {**GOOD, "account_id": "ac\u200bme"},
                                  {**GOOD, "user_id": "\u202eu1"}, {**GOOD, "session_key": "a\nb"}])
def test_odd_charges_are_422_naming_fields(client, ledger, keys, body):
    answer = client.post("/v1/charges", content=json.dumps(body),
                         headers={**bearer(keys.admin), "Content-Type": "application/json"})
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"] and all(e["field"] for e in answer.json()["errors"])
    assert stored(ledger) == 0


def test_bad_batches_and_reversals(client, ledger, keys):
    for body in ([GOOD], {"charges": GOOD}, {"charges": [GOOD], "more": 1}):
        assert client.post("/v1/charges/batch", json=body, headers=bearer(keys.admin)).status_code == 422
    answer = client.post("/v1/charges/batch", json={"charges": [GOOD, 7, {"x": 1}]}, headers=bearer(keys.admin))
    assert [o["status"] for o in answer.json()["outcomes"]] == ["recorded", "invalid", "invalid"]
    assert client.post("/v1/charges/nope/reversal", json={"account_id": "acme"},
                       headers=bearer(keys.admin)).status_code == 404
    assert client.post("/v1/charges/nope/reversal", json=["x"], headers=bearer(keys.admin)).status_code == 422
    assert client.post("/v1/charges/nope/reversal", json={"reason": 5, "x": 1},
                       headers=bearer(keys.admin)).status_code == 422


def test_bad_usage_queries_name_the_parameter(client, keys):
    for params, field in (({"from": "2026-13-01"}, "from"), ({"to": "tomorrow"}, "to"),
                          ({"from": "2026-02-02", "to": "2026-02-01"}, "from"), ({"group_by": "colour"}, "group_by"),
                          ({"limit": 0}, "limit"), ({"offset": -1}, "offset"), ({"model": "a\x00"}, "model")):
        answer = client.get("/v1/usage", params=params, headers=bearer(keys.admin))
        assert answer.status_code == 422, params
        assert [e["field"] for e in answer.json()["errors"]] == [field]


def test_a_bad_event_keeps_the_whole_batch_out_naming_each(client, ledger, keys):
    events = [EVENT, {**EVENT, "id": "e2", "subject": ""}, {**EVENT, "id": "e3", "time": "later",
                                                            "data": {"tokens": 1, "type": "system"}},
              {**EVENT, "id": "e4", "data": {"tokens": 1, "type": "input", "prompt_tokens": 1}}, "nonsense"]
    answer = client.post("/api/v1/events", json=events,
                         headers={**bearer(keys.admin), "Content-Type": "application/cloudevents-batch+json"})
    assert answer.status_code == 400
    fields = {e["field"] for e in answer.json()["errors"]}
    assert fields == {"events[1].subject", "events[2].data.type", "events[3].data.tokens", "events[4].event"}
    assert stored(ledger) == 0
    again = client.post("/api/v1/events", json=[{**EVENT, "time": "later"}],
                        headers={**bearer(keys.admin), "Content-Type": "application/cloudevents-batch+json"})
    assert {e["field"] for e in again.json()["errors"]} == {"events[0].time"}


def test_a_resent_event_with_other_facts_is_409(client, ledger, keys):
    headers = {**bearer(keys.admin), "Content-Type": "application/cloudevents+json"}
    assert client.post("/api/v1/events", json=EVENT, headers=headers).status_code == 204
    assert client.post("/api/v1/events", json=EVENT, headers=headers).status_code == 204
    changed = client.post("/api/v1/events", json={**EVENT, "data": {"tokens": 6, "type": "input"}}, headers=headers)
    assert changed.status_code == 409
    assert {e["field"] for e in changed.json()["errors"]} == {"events[0].data.prompt_tokens",
                                                             "events[0].data.total_tokens"}
    assert ledger.account_totals("acme").prompt_tokens == 5


def test_usage_pages_follow_the_link(client, keys):
    items = [{**GOOD, "user_id": f"u{n}", "charge_id": f"c{n}"} for n in range(5)]
    client.post("/v1/charges/batch", json={"charges": items}, headers=bearer(keys.admin))
    seen, url, params = [], "/v1/usage", {"limit": 2, "group_by": "user_id"}
    while True:
        answer = client.get(url, params=params, headers=bearer(keys.admin))
        seen += [row["user_id"] for row in answer.json()["data"]]
        if answer.json()["next_offset"] is None:
            assert "link" not in answer.headers
            break
        url, params = answer.headers["link"].split(";")[0].strip("<>"), None
    assert seen == [f"u{n}" for n in range(5)]
