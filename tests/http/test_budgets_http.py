"""Budgets, reservations and credits over HTTP, through a real ``ledger serve`` on SQLite and PostgreSQL.

Each status the routes answer, who may call them (an admin sets, a read key
of the account reads, an ingest key reserves and captures for its own
account only), the 402 body's figures, idempotent reservations and
captures, and hostile terms refused with the field named, holding nothing.
The tests that list every budget of the store start a server of their own;
the others share one per store and module, each with accounts of its own.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from http_helpers import Server, bearer, module_store_url, serving  # noqa: F401 - fixture

from ledger import Ledger, Settings
from ledger_service.keys import create_key

#: One worker runs the module, so its shared server starts once per store.
pytestmark = pytest.mark.xdist_group("http-budgets")

PROBLEM = "application/problem+json"
#: 1 micro per token, so a charge's cost is its token count.
PRICE = {"provider": "openai", "model": "gpt", "prompt_micros_per_million": 1_000_000,
         "completion_micros_per_million": 1_000_000, "effective_from": datetime(2020, 1, 1, tzinfo=UTC)}
FIGURES = {"limit_micros", "spent_micros", "held_micros", "remaining_micros"}
TOKEN_FIGURES = {"limit_tokens", "spent_tokens", "held_tokens", "remaining_tokens"}


def call(tokens: int, **extra):
    """A capture's charge fields: ``tokens`` tokens, costing ``tokens`` micros."""
    return {"charge_type": "completion", "provider": "openai", "model": "gpt",
            "prompt_tokens": tokens // 2, "completion_tokens": tokens - tokens // 2, **extra}


@dataclass
class Api:
    http: httpx.Client
    admin: dict[str, str]
    ingest_any: dict[str, str]
    ingest_a: dict[str, str]
    read_a: dict[str, str]
    a: str = "acct-a"  # the account of ingest_a and read_a
    b: str = "acct-b"  # another account

    def status(self, budget_id: str) -> dict:
        answer = self.http.get(f"/v1/budgets/{budget_id}", headers=self.admin)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def budget(self, budget_id: str, **body) -> dict:
        answer = self.http.put(f"/v1/budgets/{budget_id}", json=body, headers=self.admin)
        assert answer.status_code == 201, answer.text
        return answer.json()


def keys_for(ledger: Ledger, account: str) -> dict[str, dict[str, str]]:
    """Keys of each role: an admin, an ingest key for every account, and ingest and read keys for ``account``."""
    return {name: bearer(create_key(ledger, *args)[1]) for name, args in (
        ("admin", ("admin",)), ("ingest_any", ("ingest",)), ("ingest_a", ("ingest", account)),
        ("read_a", ("read", account)))}


@pytest.fixture
def own_api(ledger, store_url) -> Iterator[Api]:
    """A real server on the test's own store, priced, with keys of each role (scoped ones for acct-a):
    for the tests that list every budget in the store."""
    ledger.set_price(**PRICE)
    made = keys_for(ledger, "acct-a")
    with serving(store_url) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        yield Api(http, **made)


@pytest.fixture(scope="module")
def priced_server(module_store_url) -> Iterator[tuple[Ledger, Server]]:  # noqa: F811 - the fixture imported above
    """The module's server on its store, priced, and a ledger on that store to make keys with."""
    ledger = Ledger(Settings(database_url=module_store_url))
    try:
        ledger.set_price(**PRICE)
        with serving(module_store_url) as server:
            yield ledger, server
    finally:
        ledger.close()


_TESTS = itertools.count(1)


@pytest.fixture
def api(priced_server) -> Iterator[Api]:
    """The module's server, with keys of each role; the scoped ones for an account of this test's own."""
    ledger, server = priced_server
    n = next(_TESTS)
    a, b = f"acct-a{n}", f"acct-b{n}"
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield Api(http, **keys_for(ledger, a), a=a, b=b)


def refused(answer: httpx.Response, status: int, *fields: str) -> dict:
    """The answer is a problem of ``status`` naming exactly ``fields`` (when given); its body."""
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == PROBLEM
    body = answer.json()
    assert body["status"] == status and body["detail"]
    if fields:
        assert sorted(e["field"] for e in body["errors"]) == sorted(fields), body
    return body


def test_a_budget_is_set_changed_read_listed_and_removed(own_api):
    api = own_api
    http, admin = api.http, api.admin
    created = http.put("/v1/budgets/monthly", json={"account_id": "acct-a", "limit_micros": 1000}, headers=admin)
    assert created.status_code == 201
    status = created.json()
    assert status == {"budget_id": "monthly", "account_id": "acct-a", "user_id": None, "period": "month",
                      "period_start": status["period_start"], "mode": "hard", "thresholds": [50, 80, 100],
                      "limit": None, "unit": "micros", "limit_micros": 1000, "spent_micros": 0, "held_micros": 0,
                      "remaining_micros": 1000}
    assert status["period_start"].endswith("-01")
    same = http.put("/v1/budgets/monthly", json={"account_id": "acct-a", "limit_micros": 1000, "period": None},
                    headers=admin)
    assert (same.status_code, same.json()) == (200, status)
    changed = http.put("/v1/budgets/monthly", json={"account_id": "acct-a", "limit_micros": 2000, "thresholds": [90],
                                                    "mode": "soft"}, headers=admin)
    assert changed.status_code == 200
    assert (changed.json()["limit_micros"], changed.json()["thresholds"], changed.json()["mode"]) == (2000, [90], "soft")

    tokens = api.budget("ann-daily", account_id="acct-a", user_id="ann", limit_tokens=500, period="day")
    assert set(tokens) & (FIGURES | TOKEN_FIGURES) == TOKEN_FIGURES
    assert (tokens["user_id"], tokens["unit"], tokens["limit_tokens"]) == ("ann", "tokens", 500)
    prepaid = api.budget("prepaid", account_id="acct-b", limit="credits")
    assert (prepaid["limit"], prepaid["period"], prepaid["period_start"], prepaid["limit_micros"]) == (
        "credits", "total", None, 0)

    assert api.status("monthly") == changed.json()
    listed = http.get("/v1/budgets", params={"account": "acct-a"}, headers=admin)
    assert [s["budget_id"] for s in listed.json()["data"]] == ["ann-daily", "monthly"]
    everything = http.get("/v1/budgets", headers=admin).json()["data"]
    assert sorted(s["budget_id"] for s in everything) == ["ann-daily", "monthly", "prepaid"]

    assert http.delete("/v1/budgets/monthly", headers=admin).status_code == 204
    refused(http.delete("/v1/budgets/monthly", headers=admin), 404, "budget_id")
    refused(http.get("/v1/budgets/monthly", headers=admin), 404, "budget_id")
    refused(http.get("/v1/budgets/nothing-here", headers=admin), 404, "budget_id")
    assert [s["budget_id"] for s in http.get("/v1/budgets", params={"account": "acct-a"},
                                             headers=admin).json()["data"]] == ["ann-daily"]
    again = http.put("/v1/budgets/monthly", json={"account_id": "acct-a", "limit_micros": 5}, headers=admin)
    assert again.status_code == 201  # removed, then set again: created


def test_an_invalid_budget_names_each_field_and_sets_nothing(own_api):
    api = own_api
    http, admin = api.http, api.admin
    cases = [
        ({"account_id": "acct-a", "limit_micros": 10, "limit_tokens": 10}, ("limit_micros",)),
        ({"account_id": "acct-a"}, ("limit_micros",)),
        ({"account_id": "acct-a", "limit_micros": 0, "period": "week", "mode": "strict"},
         ("limit_micros", "period", "mode")),
        ({"account_id": "acct-a", "limit_micros": -1, "thresholds": [0, 50]}, ("limit_micros", "thresholds")),
        ({"account_id": "acct-a", "limit": "dollars"}, ("limit",)),
        ({"limit_micros": 10}, ("account_id",)),
        ({"account_id": "acct-a", "limit_micros": 10, "limt_micros": 10, "\x00": 1}, ("limt_micros", "\\x00")),
        ({"account_id": "acct-a", "limit_micros": "10"}, ("limit_micros",)),
    ]
    for body, fields in cases:
        refused(http.put("/v1/budgets/b", json=body, headers=admin), 422, *fields)
    refused(http.put("/v1/budgets/b", json=[1], headers=admin), 422, "body")
    refused(http.put("/v1/budgets/b\u200b", json={"account_id": "acct-a", "limit_micros": 10}, headers=admin),
            422, "budget_id")
    refused(http.put("/v1/budgets/b", content=b"{", headers={**admin, "content-type": "application/json"}), 400)
    refused(http.put("/v1/budgets/b", content=b"{}", headers={**admin, "content-type": "text/plain"}), 415)
    assert http.get("/v1/budgets", headers=admin).json() == {"data": []}
    api.budget("b", account_id="acct-a", limit_micros=10)
    refused(http.put("/v1/budgets/b", json={"account_id": "acct-b", "limit_micros": 10}, headers=admin),
            422, "account_id")


def test_only_an_admin_sets_and_removes_and_a_read_key_sees_its_own_account(api):
    http = api.http
    api.budget("a-budget", account_id=api.a, limit_micros=100)
    api.budget("b-budget", account_id=api.b, limit_micros=100)
    body = {"account_id": api.a, "limit_micros": 1}
    for key in (api.read_a, api.ingest_a, api.ingest_any):
        refused(http.put("/v1/budgets/a-budget", json=body, headers=key), 403)
        refused(http.put("/v1/budgets/a-budget", content=b"not json", headers={**key, "content-type": "text/plain"}),
                403)  # the role is refused before the body
        refused(http.delete("/v1/budgets/a-budget", headers=key), 403)
        refused(http.post(f"/v1/accounts/{api.a}/credits", json={"amount_micros": 5}, headers=key), 403)
    refused(http.put("/v1/budgets/a-budget", json=body), 401)
    assert api.status("a-budget")["limit_micros"] == 100

    own = http.get("/v1/budgets", headers=api.read_a)
    assert [s["budget_id"] for s in own.json()["data"]] == ["a-budget"]
    assert http.get("/v1/budgets", params={"account": api.a}, headers=api.read_a).json() == own.json()
    assert http.get("/v1/budgets/a-budget", headers=api.read_a).json()["budget_id"] == "a-budget"
    refused(http.get("/v1/budgets", params={"account": api.b}, headers=api.read_a), 403, "account")
    other = refused(http.get("/v1/budgets/b-budget", headers=api.read_a), 403, "budget_id")
    unknown = refused(http.get("/v1/budgets/no-such", headers=api.read_a), 403, "budget_id")
    assert other["detail"].replace("b-budget", "X") == unknown["detail"].replace("no-such", "X")
    assert api.b not in str(other)
    refused(http.get("/v1/budgets", headers=api.ingest_a), 403)
    refused(http.get("/v1/budgets", params={"acount": api.a}, headers=api.admin), 422, "acount")


def test_reserve_capture_and_release_with_the_402_figures(api):
    http, key = api.http, api.ingest_any
    api.budget("cap", account_id=api.a, limit_micros=1000)
    first = http.post("/v1/reservations", json={"account_id": api.a, "estimate_micros": 600,
                                                 "reservation_id": "r1", "ttl_seconds": 60}, headers=key)
    assert first.status_code == 201, first.text
    made = first.json()
    assert (made["reservation_id"], made["account_id"], made["estimate_micros"], made["duplicate"]) == (
        "r1", api.a, 600, False)
    expires = datetime.fromisoformat(made["expires_at"])
    assert timedelta(seconds=50) < expires - datetime.now(UTC) <= timedelta(seconds=60)
    assert api.status("cap")["held_micros"] == 600

    again = http.post("/v1/reservations", json={"account_id": api.a, "estimate_micros": 600,
                                                 "reservation_id": "r1"}, headers=key)
    assert (again.status_code, again.json()) == (200, {**made, "duplicate": True})
    refused(http.post("/v1/reservations", json={"account_id": api.a, "estimate_micros": 700,
                                                 "reservation_id": "r1"}, headers=key), 409, "reservation_id")
    assert api.status("cap")["held_micros"] == 600

    over = refused(http.post("/v1/reservations", json={"account_id": api.a, "estimate_micros": 401},
                             headers=key), 402, "estimate_micros")
    assert {k: over[k] for k in ("budget_id", *sorted(FIGURES), "estimate")} == {
        "budget_id": "cap", "held_micros": 600, "limit_micros": 1000, "remaining_micros": 400, "spent_micros": 0,
        "estimate": 401}
    assert api.status("cap")["held_micros"] == 600
    fits = http.post("/v1/reservations", json={"account_id": api.a, "estimate_micros": 400,
                                                "reservation_id": "r2"}, headers=key)
    assert fits.status_code == 201

    captured = http.post("/v1/reservations/r1/capture", json=call(650), headers=key)
    assert captured.status_code == 201, captured.text
    receipt = captured.json()
    assert (receipt["reservation_id"], receipt["charge_id"], receipt["account_id"], receipt["cost_micros"],
            receipt["hold_expired"], receipt["duplicate"]) == ("r1", "r1", api.a, 650, False, False)
    duplicate = http.post("/v1/reservations/r1/capture", json=call(650), headers=key)
    assert (duplicate.status_code, duplicate.json()) == (200, {**receipt, "duplicate": True})
    refused(http.post("/v1/reservations/r1/capture", json=call(700), headers=key), 409,
            "completion_tokens", "prompt_tokens", "total_tokens")
    refused(http.post("/v1/reservations/r1/capture", json=call(650, charge_id="other"), headers=key),
            409, "reservation_id")
    status = api.status("cap")
    assert (status["spent_micros"], status["held_micros"], status["remaining_micros"]) == (650, 400, 0)
    refused(http.post("/v1/reservations/r1/release", headers=key), 409, "reservation_id")

    released = http.post("/v1/reservations/r2/release", headers=key)
    assert (released.status_code, released.json()) == (200, {"reservation_id": "r2", "state": "released"})
    assert http.post("/v1/reservations/r2/release", headers=key).json()["state"] == "released"
    assert api.status("cap")["held_micros"] == 0
    refused(http.post("/v1/reservations/r2/capture", json=call(10), headers=key), 409, "reservation_id")
    refused(http.post("/v1/reservations/nope/capture", json=call(10), headers=key), 404, "reservation_id")
    refused(http.post("/v1/reservations/nope/release", headers=key), 404, "reservation_id")
    assert api.status("cap")["spent_micros"] == 650

    api.budget("tokens", account_id="acct-t", limit_tokens=100)
    tokens = refused(http.post("/v1/reservations", json={"account_id": "acct-t", "estimate_tokens": 101},
                               headers=key), 402, "estimate_tokens")
    assert {k: tokens[k] for k in sorted(TOKEN_FIGURES)} == {
        "held_tokens": 0, "limit_tokens": 100, "remaining_tokens": 100, "spent_tokens": 0}
    assert not FIGURES & set(tokens) and tokens["estimate"] == 101


def test_hostile_terms_are_refused_by_name_and_hold_nothing(api):
    http, key = api.http, api.ingest_any
    api.budget("hostile-cap", account_id=api.a, limit_micros=1000)
    base = {"account_id": api.a, "estimate_micros": 10}
    cases = [
        ({**base, "estimate_micros": 0}, ("estimate_micros",)),
        ({**base, "estimate_micros": -5}, ("estimate_micros",)),
        ({"account_id": api.a, "estimate_tokens": -1}, ("estimate_tokens",)),
        ({"account_id": api.a}, ("estimate_micros",)),
        ({**base, "ttl_seconds": 0}, ("ttl_seconds",)),
        ({**base, "ttl_seconds": 86_401}, ("ttl_seconds",)),
        ({**base, "ttl_seconds": 1.5}, ("ttl_seconds",)),
        ({**base, "estimate_micros": 10**30}, ("estimate_micros",)),
        ({**base, "estimate_micros": True}, ("estimate_micros",)),
        ({**base, "account_id": ""}, ("account_id",)),
        ({**base, "reservation_id": "r\u202e1"}, ("reservation_id",)),
        ({**base, "amount": 3}, ("amount",)),
        ({"estimate_micros": 10}, ("account_id",)),
    ]
    for body, fields in cases:
        refused(http.post("/v1/reservations", json=body, headers=key), 422, *fields)
    refused(http.post("/v1/reservations", json=api.a, headers=key), 422, "body")
    # a token budget needs a token estimate
    api.budget("tok", account_id=api.a, limit_tokens=1000)
    refused(http.post("/v1/reservations", json=base, headers=key), 422, "estimate_tokens")
    assert api.status("hostile-cap")["held_micros"] == 0

    ok = http.post("/v1/reservations", json={**base, "estimate_tokens": 5, "reservation_id": "h1"}, headers=key)
    assert ok.status_code == 201
    refused(http.post("/v1/reservations/h1/capture", json={**call(5), "prompt_tokens": -1}, headers=key),
            422, "prompt_tokens")
    refused(http.post("/v1/reservations/h1/capture", json={**call(5), "account_id": "acct-z"}, headers=key),
            422, "account_id")
    refused(http.post("/v1/reservations/h1/capture", json=[call(5)], headers=key), 422, "body")
    refused(http.post("/v1/reservations/h1/capture", json={**call(5), "reservation_id": "h2", "self": 1},
                      headers=key), 422, "reservation_id", "self")
    refused(http.post("/v1/reservations/r%7F/capture", json=call(5), headers=key), 422, "reservation_id")
    assert api.status("hostile-cap")["spent_micros"] == 0 and api.status("hostile-cap")["held_micros"] == 10


def test_an_ingest_key_reserves_captures_and_releases_for_its_own_account_only(api):
    http = api.http
    api.budget("a", account_id=api.a, limit_micros=1000)
    api.budget("b", account_id=api.b, limit_micros=1000)
    theirs = http.post("/v1/reservations", json={"account_id": api.b, "estimate_micros": 100,
                                                  "reservation_id": "b1"}, headers=api.ingest_any)
    assert theirs.status_code == 201
    refused(http.post("/v1/reservations", json={"account_id": api.b, "estimate_micros": 100},
                      headers=api.ingest_a), 403, "account_id")
    mine = http.post("/v1/reservations", json={"estimate_micros": 100, "reservation_id": "a1"}, headers=api.ingest_a)
    assert mine.status_code == 201 and mine.json()["account_id"] == api.a

    foreign = refused(http.post("/v1/reservations/b1/capture", json=call(50), headers=api.ingest_a), 403,
                      "reservation_id")
    unknown = refused(http.post("/v1/reservations/zz/capture", json=call(50), headers=api.ingest_a), 403,
                      "reservation_id")
    assert foreign["detail"].replace("b1", "X") == unknown["detail"].replace("zz", "X")
    refused(http.post("/v1/reservations/b1/release", headers=api.ingest_a), 403, "reservation_id")
    refused(http.post("/v1/reservations/zz/release", headers=api.ingest_a), 403, "reservation_id")
    refused(http.post("/v1/reservations/a1/capture", json=call(50, account_id=api.b), headers=api.ingest_a),
            403, "account_id")
    assert api.status("b")["held_micros"] == 100 and api.status("b")["spent_micros"] == 0

    for path, body in (("/v1/reservations", {"account_id": api.a, "estimate_micros": 1}),
                       ("/v1/reservations/a1/capture", call(50))):
        refused(http.post(path, json=body, headers=api.read_a), 403)
        refused(http.post(path, json=body), 401)
    refused(http.post("/v1/reservations/a1/release", headers=api.read_a), 403)
    assert api.status("a")["held_micros"] == 100

    captured = http.post("/v1/reservations/a1/capture", json=call(50, account_id=api.a), headers=api.ingest_a)
    assert captured.status_code == 201 and captured.json()["account_id"] == api.a
    assert api.status("a")["spent_micros"] == 50 and api.status("a")["held_micros"] == 0


def test_credits_are_granted_by_an_admin_and_bound_a_credits_budget(api):
    http, admin = api.http, api.admin
    later = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    granted = http.post(f"/v1/accounts/{api.a}/credits", json={"amount_micros": 500, "grant_id": "g1",
                                                             "expires_at": later}, headers=admin)
    assert granted.status_code == 201, granted.text
    grant = granted.json()
    assert (grant["grant_id"], grant["account_id"], grant["amount_micros"], grant["expired"], grant["duplicate"]) == (
        "g1", api.a, 500, False, False)
    assert datetime.fromisoformat(grant["expires_at"]) == datetime.fromisoformat(later)
    again = http.post(f"/v1/accounts/{api.a}/credits", json={"amount_micros": 500, "grant_id": "g1"}, headers=admin)
    assert (again.status_code, again.json()["duplicate"], again.json()["granted_at"]) == (200, True, grant["granted_at"])
    refused(http.post(f"/v1/accounts/{api.a}/credits", json={"amount_micros": 600, "grant_id": "g1"}, headers=admin),
            422, "grant_id")
    earlier = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    for body, fields in (({"amount_micros": 0}, ("amount_micros",)), ({}, ("amount_micros",)),
                         ({"amount_micros": 5, "expires_at": earlier}, ("expires_at",)),
                         ({"amount_micros": 5, "expires_at": "soon"}, ("expires_at",)),
                         ({"amount_micros": 5, "bonus": 1}, ("bonus",))):
        refused(http.post(f"/v1/accounts/{api.a}/credits", json=body, headers=admin), 422, *fields)

    balance = http.get(f"/v1/accounts/{api.a}/balance", headers=api.read_a)
    assert balance.status_code == 200
    assert {k: v for k, v in balance.json().items() if k != "grants"} == {
        "account_id": api.a, "balance_micros": 500, "granted_micros": 500, "used_micros": 0, "overage_micros": 0}
    assert [g["grant_id"] for g in balance.json()["grants"]] == ["g1"]
    assert http.get(f"/v1/accounts/{api.a}/balance", headers=admin).json() == balance.json()
    refused(http.get(f"/v1/accounts/{api.b}/balance", headers=api.read_a), 403, "account_id")
    refused(http.get(f"/v1/accounts/{api.a}/balance", headers=api.ingest_a), 403)
    assert http.get("/v1/accounts/fresh/balance", headers=admin).json()["balance_micros"] == 0

    api.budget("prepaid", account_id=api.a, limit="credits")
    over = refused(http.post("/v1/reservations", json={"account_id": api.a, "estimate_micros": 501},
                             headers=api.ingest_a), 402, "estimate_micros")
    assert (over["budget_id"], over["limit_micros"], over["remaining_micros"], over["estimate"]) == (
        "prepaid", 500, 500, 501)
    held = http.post("/v1/reservations", json={"estimate_micros": 300, "reservation_id": "p1"}, headers=api.ingest_a)
    assert held.status_code == 201
    assert http.post("/v1/reservations/p1/capture", json=call(300), headers=api.ingest_a).status_code == 201
    assert http.get(f"/v1/accounts/{api.a}/balance", headers=api.read_a).json()["balance_micros"] == 200
