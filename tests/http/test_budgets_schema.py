"""The budget, reservation and credit routes in the OpenAPI document, held to it by schemathesis.

``test_schema.py`` fuzzes every operation of the document, these included;
here the new operations get more examples of their own, hostile text in
their paths, query and bodies, and every status the flow reaches (201, 200,
204, 402, 404, 409, 422, 403, 401) is checked against what is documented.
One server per store serves the module; the flow uses accounts and ids no
generated request names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
import schemathesis
from http_helpers import Server, bearer, module_store_url, shared_server  # noqa: F401 - fixtures
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ledger import Ledger, Settings
from ledger_service.keys import create_key
from tests.reliability.hostile_corpus import HOSTILE_NAMES, HOSTILE_TEXT, url_safe

#: One worker runs the module, so its shared server starts once per store.
pytestmark = pytest.mark.xdist_group("http-budgets-schema")

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
SETTINGS: dict[str, Any] = {"deadline": None, "suppress_health_check": list(HealthCheck), "database": None}
OPERATIONS = {
    "PUT /v1/budgets/{budget_id}", "GET /v1/budgets/{budget_id}", "DELETE /v1/budgets/{budget_id}",
    "GET /v1/budgets", "POST /v1/reservations", "POST /v1/reservations/{reservation_id}/capture",
    "POST /v1/reservations/{reservation_id}/release", "POST /v1/accounts/{account_id}/credits",
    "GET /v1/accounts/{account_id}/balance",
}
TEXT_FIELDS = ["account_id", "user_id", "reservation_id", "grant_id", "expires_at", "limit", "period", "mode",
               "charge_id", "charge_type", "provider", "model"]


def new_operations(url: str) -> list[Any]:
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    return [op for op in (r.ok() for r in schema.get_all_operations())
            if f"{op.method.upper()} {op.path}" in OPERATIONS]


def test_the_routes_are_documented_with_their_statuses(api_server):
    spec = httpx.get(f"{api_server.url}/openapi.json").json()
    found = {f"{method.upper()} {path}" for path, item in spec["paths"].items() for method in item}
    assert found >= OPERATIONS
    statuses = {f"{method.upper()} {path}": set(op["responses"]) for path, item in spec["paths"].items()
                for method, op in item.items()}
    assert statuses["PUT /v1/budgets/{budget_id}"] >= {"200", "201", "401", "403", "422"}
    assert statuses["DELETE /v1/budgets/{budget_id}"] >= {"204", "404"}
    assert statuses["POST /v1/reservations"] >= {"200", "201", "402", "409", "422"}
    assert statuses["POST /v1/reservations/{reservation_id}/capture"] >= {"200", "201", "404", "409", "422"}
    assert statuses["POST /v1/accounts/{account_id}/credits"] >= {"200", "201", "422"}
    payment = spec["paths"]["/v1/reservations"]["post"]["responses"]["402"]["content"]["application/problem+json"]
    exceeded = spec["components"]["schemas"]["BudgetExceededBody"]
    assert payment["schema"]["$ref"].endswith("/BudgetExceededBody")
    assert {"budget_id", "estimate", "limit_micros", "spent_tokens", "remaining_micros"} <= set(exceeded["properties"])
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if f"{method.upper()} {path}" in OPERATIONS:
                assert op["security"] == [{"HTTPBearer": []}], (method, path)


@pytest.fixture(scope="module")
def api_server(shared_server) -> Server:  # noqa: F811 - the fixture imported above
    """The module's ``ledger serve`` on its store."""
    return shared_server


@pytest.fixture(scope="module")
def admin(api_server) -> str:
    return api_server.new_key("--role", "admin")


def test_every_new_operation_answers_as_documented(api_server, admin):
    operations = new_operations(api_server.url)
    assert len(operations) == len(OPERATIONS)
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(mode))
            @settings(max_examples=40 * settings.default.max_examples // 100, **SETTINGS)
            def answers_as_documented(case):
                response = case.call(headers=bearer(admin))
                case.validate_response(response, checks=CHECKS)
                anonymous = case.call()
                assert anonymous.status_code == 401
                case.validate_response(anonymous, checks=CHECKS)

            answers_as_documented()


def test_hostile_text_in_the_new_operations_is_refused_or_answered_never_a_5xx(api_server, admin):
    for operation in new_operations(api_server.url):

        @given(case=operation.as_strategy(GenerationMode.POSITIVE), data=st.data())
        @settings(max_examples=40 * settings.default.max_examples // 100, **SETTINGS)
        def never_5xx(case, data):
            spoiled = spoil(case, data.draw)
            response = case.call(headers=bearer(admin))
            assert response.status_code < 500, (case.method, case.path, spoiled, response.text[:300])
            case.validate_response(response, checks=CHECKS)

        never_5xx()


def test_each_status_of_the_flow_is_as_documented(api_server, admin):
    ledger = Ledger(Settings(database_url=api_server.database_url))
    try:
        reader = create_key(ledger, "read", "flow-acme")[1]
        scoped = create_key(ledger, "ingest", "flow-other")[1]
    finally:
        ledger.close()
    by_name = {f"{op.method.upper()} {op.path}": op for op in new_operations(api_server.url)}
    seen: set[tuple[str, int]] = set()

    def call(name: str, expected: int, key: str | None = admin, body: Any = None, **path: str) -> Any:
        operation = by_name[name]
        kwargs: dict[str, Any] = {"path_parameters": path}
        if body is not None:
            kwargs.update(body=body, media_type="application/json")
        if name == "GET /v1/budgets":
            kwargs["query"] = path.pop("query")
        case = operation.Case(**kwargs)
        response = case.call(headers=bearer(key) if key else {})
        assert response.status_code == expected, (name, response.text)
        case.validate_response(response, checks=CHECKS)
        seen.add((name, expected))
        return response

    put, reserve = "PUT /v1/budgets/{budget_id}", "POST /v1/reservations"
    capture, release = "POST /v1/reservations/{reservation_id}/capture", "POST /v1/reservations/{reservation_id}/release"
    call(put, 201, body={"account_id": "flow-acme", "limit_tokens": 100}, budget_id="flow-b")
    call(put, 200, body={"account_id": "flow-acme", "limit_tokens": 100}, budget_id="flow-b")
    call(put, 422, body={"account_id": "flow-acme", "limit_tokens": 0}, budget_id="flow-b")
    call(put, 403, key=reader, body={"account_id": "flow-acme", "limit_tokens": 1}, budget_id="flow-b")
    call(put, 401, key=None, body={"account_id": "flow-acme", "limit_tokens": 1}, budget_id="flow-b")
    call("GET /v1/budgets/{budget_id}", 200, key=reader, budget_id="flow-b")
    call("GET /v1/budgets/{budget_id}", 404, budget_id="flow-none")
    call("GET /v1/budgets", 200, key=reader, query={})
    call("GET /v1/budgets", 403, key=reader, query={"account": "flow-other"})
    call(reserve, 201, body={"account_id": "flow-acme", "estimate_tokens": 60, "reservation_id": "flow-r"})
    call(reserve, 200, body={"account_id": "flow-acme", "estimate_tokens": 60, "reservation_id": "flow-r"})
    call(reserve, 409, body={"account_id": "flow-acme", "estimate_tokens": 61, "reservation_id": "flow-r"})
    call(reserve, 402, body={"account_id": "flow-acme", "estimate_tokens": 41})
    call(reserve, 422, body={"account_id": "flow-acme", "estimate_tokens": 1, "ttl_seconds": 0})
    call(reserve, 403, key=scoped, body={"account_id": "flow-acme", "estimate_tokens": 1})
    charge = {"charge_type": "completion", "prompt_tokens": 10, "completion_tokens": 20}
    call(capture, 403, key=scoped, body=charge, reservation_id="flow-r")
    call(capture, 201, body=charge, reservation_id="flow-r")
    call(capture, 200, body=charge, reservation_id="flow-r")
    call(capture, 409, body={**charge, "prompt_tokens": 11}, reservation_id="flow-r")
    call(capture, 404, body=charge, reservation_id="flow-none")
    call(capture, 422, body={**charge, "prompt_tokens": -1}, reservation_id="flow-r")
    call(release, 409, reservation_id="flow-r")
    call(reserve, 201, body={"account_id": "flow-acme", "estimate_tokens": 10, "reservation_id": "flow-s"})
    call(release, 200, reservation_id="flow-s")
    call(release, 404, reservation_id="flow-none")
    credits = "POST /v1/accounts/{account_id}/credits"
    call(credits, 201, body={"amount_micros": 5, "grant_id": "flow-g"}, account_id="flow-acme")
    call(credits, 200, body={"amount_micros": 5, "grant_id": "flow-g"}, account_id="flow-acme")
    call(credits, 422, body={"amount_micros": -5}, account_id="flow-acme")
    call("GET /v1/accounts/{account_id}/balance", 200, key=reader, account_id="flow-acme")
    call("GET /v1/accounts/{account_id}/balance", 403, key=reader, account_id="flow-other")
    call("DELETE /v1/budgets/{budget_id}", 204, budget_id="flow-b")
    call("DELETE /v1/budgets/{budget_id}", 404, budget_id="flow-b")
    assert {status for _, status in seen} == {200, 201, 204, 401, 402, 403, 404, 409, 422}


def spoil(case: Any, draw: Callable[[Any], Any]) -> str:
    """Hostile text in one place of ``case``: a body value, a body field name, the query or a path parameter."""
    body = case.body if isinstance(case.body, dict) else None
    places = [*(["value", "name"] if body is not None else []), *(["query"] if case.path == "/v1/budgets" else []),
              *(["path"] if case.path_parameters else [])]
    if not places:
        return "nothing to spoil"
    place = draw(st.sampled_from(places))
    if place == "path":
        name = draw(st.sampled_from(sorted(case.path_parameters)))
        case.path_parameters[name] = draw(_hostile(url_safe(HOSTILE_TEXT)))
        return f"path {name}={case.path_parameters[name]!a}"
    if place == "query":
        case.query = {**(case.query or {}), "account": draw(_hostile(url_safe(HOSTILE_TEXT)))}
        return f"query account={case.query['account']!a}"
    assert body is not None
    if place == "name":
        name = draw(st.sampled_from(HOSTILE_NAMES))
        body[name] = draw(st.sampled_from([1, "x", None]))
        return f"field name {name!a}"
    name = draw(st.sampled_from(TEXT_FIELDS))
    body[name] = draw(_hostile(HOSTILE_TEXT))
    return f"field {name}={body[name]!a}"


def _hostile(texts: list[str]) -> st.SearchStrategy[str]:
    return st.builds(lambda text, before, after: f"{before}{text}{after}", st.sampled_from(texts),
                     st.sampled_from(["", "acme-"]), st.sampled_from(["", "-1"]))

