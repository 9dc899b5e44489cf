"""Unknown query parameters are refused (422 naming each), never silently ignored; ``format=csv|json`` picks
``/v1/usage``'s representation and wins over ``Accept``."""

from __future__ import annotations

import csv
import io

import httpx
import pytest

from http_helpers import bearer, client, keys, server  # noqa: F401 - fixtures
from ledger_service.http import reading
from ledger_service.http.query import declared_query

CHARGES = [{"account_id": account, "user_id": "ada", "charge_type": "completion", "provider": "openai",
            "model": "gpt-4o", "prompt_tokens": 10, "completion_tokens": 2, "charge_id": f"q-{account}",
            "occurred_at": "2026-03-02T10:00:00Z"} for account in ("acct-a", "globex")]


def assert_unknown(answer, *names: str) -> None:
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert body["status"] == 422 and body["title"] == "Invalid input"
    assert body["errors"] == [{"field": name, "detail": "unknown query parameter"} for name in sorted(names)]
    for name in names:
        assert name in body["detail"]


@pytest.fixture
def recorded(client, keys):  # noqa: F811 - the fixtures imported above
    answer = client.post("/v1/charges/batch", json={"charges": CHARGES}, headers=bearer(keys.admin))
    assert answer.json()["recorded"] == len(CHARGES)
    return client


def test_a_misspelt_filter_is_refused_not_ignored(recorded, keys):  # noqa: F811
    answer = recorded.get("/v1/usage", params={"acount": "globex"}, headers=bearer(keys.admin))
    assert_unknown(answer, "acount")
    assert "did you mean account?" in answer.json()["detail"]
    narrowed = recorded.get("/v1/usage", params={"account": "globex"}, headers=bearer(keys.admin)).json()["data"]
    assert {row["account_id"] for row in narrowed} == {"globex"}


@pytest.mark.parametrize(("path", "params"), [
    ("/v1/usage", {"acount": "globex", "from": "2026-01-01", "limt": "5"}),
    ("/v1/usage", {"account": "acct-a", "x": "", "offset": "0"}),
    ("/v1/accounts/acct-a/totals", {"since": "2026-01-01"}),
    ("/healthz", {"verbose": "1"}),
])
def test_every_get_endpoint_names_each_unknown_parameter(recorded, keys, path, params):  # noqa: F811
    known = {"account", "user", "from", "to", "charge_type", "provider", "model", "group_by", "offset", "limit",
             "format"}
    answer = recorded.get(path, params=params, headers=bearer(keys.admin))
    assert_unknown(answer, *sorted(set(params) - (known if path == "/v1/usage" else set())))


def test_a_hostile_parameter_name_is_named_printably(recorded, keys):  # noqa: F811
    answer = recorded.get("/v1/usage?ac%00count=1&%E2%80%AEx=2", headers=bearer(keys.admin))
    assert answer.status_code == 422
    assert [e["field"] for e in answer.json()["errors"]] == ["ac\\x00count", "\\u202ex"]


def test_a_key_is_checked_before_the_parameters(recorded, keys):  # noqa: F811
    unknown = "lk_0123456789abcdef_" + "x" * 43
    for headers in ({}, bearer(unknown)):
        assert recorded.get("/v1/usage", params={"acount": "x"}, headers=headers).status_code == 401
        assert recorded.get("/v1/accounts/acct-a/totals", params={"x": "1"}, headers=headers).status_code == 401
    assert recorded.get("/v1/usage", params={"acount": "x"}, headers=bearer(keys.ingest_any)).status_code == 403


def test_format_csv_or_json_wins_over_accept(recorded, keys):  # noqa: F811
    admin = bearer(keys.admin)
    as_csv = recorded.get("/v1/usage", params={"format": "csv", "group_by": "account_id"}, headers=admin)
    assert as_csv.status_code == 200 and as_csv.headers["content-type"].startswith("text/csv")
    assert {row["account_id"] for row in csv.DictReader(io.StringIO(as_csv.text))} == {"acct-a", "globex"}
    as_json = recorded.get("/v1/usage", params={"format": "json"}, headers={**admin, "Accept": "text/csv"})
    assert as_json.headers["content-type"] == "application/json" and len(as_json.json()["data"]) == 2
    by_accept = recorded.get("/v1/usage", headers={**admin, "Accept": "text/csv"})
    assert by_accept.headers["content-type"].startswith("text/csv") and "accept" in by_accept.headers["vary"].lower()
    bad = recorded.get("/v1/usage", params={"format": "xml"}, headers=admin)
    assert bad.status_code == 422 and [e["field"] for e in bad.json()["errors"]] == ["format"]


def test_the_next_page_link_keeps_the_format(recorded, keys):  # noqa: F811
    answer = recorded.get("/v1/usage", params={"format": "csv", "limit": "1"}, headers=bearer(keys.admin))
    assert "format=csv" in answer.headers["link"]


def test_the_names_come_from_each_routes_declaration():
    routes = {route.path: route for route in reading.router.routes}
    assert declared_query(routes["/v1/usage"].dependant) == {
        "account", "user", "from", "to", "charge_type", "provider", "model", "group_by", "offset", "limit", "format"}
    assert declared_query(routes["/v1/accounts/{account_id}/totals"].dependant) == frozenset()


def test_through_a_real_server(server):
    admin = server.new_key("--role", "admin")
    answer = httpx.get(f"{server.url}/v1/usage", params={"acount": "globex", "format": "csv"},
                       headers=bearer(admin), timeout=30)
    assert_unknown(answer, "acount")
