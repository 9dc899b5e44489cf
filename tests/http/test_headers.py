"""Every response carries nosniff, a referrer policy and frame-ancestors 'none'; no redirect echoes Host.
Through a real ``ledger serve``, one per store for the module (and the app in process for an unexpected error)."""

from __future__ import annotations

import httpx
import pytest
from fastapi.testclient import TestClient

from http_helpers import bearer, module_store_url, shared_server  # noqa: F401 - fixtures
from ledger_service.http import charges, create_app
from ledger_service.keys import create_key
from test_dashboard_session import form_token, sign_in

#: One worker runs the module, so its shared server starts once per store.
pytestmark = pytest.mark.xdist_group("http-headers")

CHARGE = {"account_id": "acme", "user_id": "ada", "charge_type": "completion", "provider": "openai",
          "model": "gpt-4o", "prompt_tokens": 12, "completion_tokens": 3, "charge_id": "h-1"}


def assert_secure(response: httpx.Response, what: str) -> None:
    assert response.headers.get("x-content-type-options") == "nosniff", what
    assert response.headers.get("referrer-policy") in ("no-referrer", "same-origin"), what
    policies = response.headers.get_list("content-security-policy")
    assert any("frame-ancestors 'none'" in policy for policy in policies), what
    assert len(response.headers.get_list("referrer-policy")) == 1, what


def test_every_kind_of_response_carries_the_security_headers(shared_server):
    admin = shared_server.new_key("--role", "admin")
    with httpx.Client(base_url=shared_server.url, timeout=30) as http:
        answers = {
            "health": http.get("/healthz"),
            "openapi": http.get("/openapi.json"),
            "charge 201 (direct path)": http.post("/v1/charges", json=CHARGE, headers=bearer(admin)),
            "charge 200 duplicate": http.post("/v1/charges", json=CHARGE, headers=bearer(admin)),
            "charge 401": http.post("/v1/charges", json=CHARGE),
            "charge 422": http.post("/v1/charges", json={**CHARGE, "prompt_tokens": -1}, headers=bearer(admin)),
            "charge 415": http.post("/v1/charges", content=b"x", headers={**bearer(admin), "Content-Type": "text/plain"}),
            "charge 400": http.post("/v1/charges", content=b"{", headers={**bearer(admin), "Content-Type": "application/json"}),
            "batch": http.post("/v1/charges/batch", json={"charges": [CHARGE]}, headers=bearer(admin)),
            "usage 401": http.get("/v1/usage"),
            "usage csv": http.get("/v1/usage", headers={**bearer(admin), "Accept": "text/csv"}),
            "totals 404": http.get("/v1/accounts/nobody/totals", headers=bearer(admin)),
            "usage 422": http.get("/v1/usage", params={"from": "soon"}, headers=bearer(admin)),
            "unknown path 404": http.get("/no/such/page"),
            "405": http.delete("/healthz"),
            "slash redirect": http.get("/healthz/"),
            "sign-in page": http.get("/dashboard/sign-in"),
            "dashboard 401": http.get("/dashboard/overview"),
            "dashboard redirect": http.get("/dashboard"),
            "stylesheet": http.get("/dashboard/static/dashboard.css"),
            "missing static 404": http.get("/dashboard/static/nope.css"),
            "docs": http.get("/docs"),
        }
        sign_in(http, admin)
        answers["dashboard page"] = http.get("/dashboard/overview")
        answers["dashboard csv"] = http.get("/dashboard/overview/usage.csv")
    assert answers["charge 201 (direct path)"].status_code == 201 and answers["charge 401"].status_code == 401
    assert answers["unknown path 404"].status_code == 404 and answers["slash redirect"].status_code == 307
    for what, response in answers.items():
        assert_secure(response, what)
    assert answers["health"].headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
    docs_policy = answers["docs"].headers["content-security-policy"]  # Swagger UI's scripts, from this server only
    assert docs_policy.startswith("default-src 'none'; script-src 'self' 'sha256-") and "http" not in docs_policy
    assert "default-src 'self'" in answers["dashboard page"].headers["content-security-policy"]


def test_an_unexpected_error_on_the_direct_charge_path_is_a_500_with_the_headers(ledger, monkeypatch):
    async def broken(request):
        raise RuntimeError("boom")

    monkeypatch.setattr(charges, "record_charge_directly", broken)
    with TestClient(create_app(ledger), raise_server_exceptions=False) as http:
        answer = http.post("/v1/charges", json=CHARGE, headers=bearer(create_key(ledger, "admin")[1]))
    assert answer.status_code == 500
    assert_secure(answer, "500")


@pytest.mark.parametrize(("path", "location"), [
    ("/v1/usage/?from=2026-01-01", "/v1/usage?from=2026-01-01"),
    ("/healthz/", "/healthz"),
    ("/dashboard/", "/dashboard"),
    ("/dashboard/sign-in/", "/dashboard/sign-in"),
    ("/dashboard/accounts/%E8%B4%A6/", "/dashboard/accounts/%E8%B4%A6"),
])
def test_trailing_slash_redirects_are_relative_whatever_the_host_header(shared_server, path, location):
    answer = httpx.get(f"{shared_server.url}{path}", headers={"Host": "evil.example"}, timeout=30)
    assert answer.status_code == 307 and answer.headers["location"] == location
    assert "evil" not in str(answer.headers) and "evil" not in answer.text


@pytest.mark.parametrize("path", ["//evil.example/", "//evil.example/v1/usage/", "/\\evil.example/", "/no/such/"])
def test_no_redirect_leaves_the_site(shared_server, path):
    answer = httpx.get(f"{shared_server.url}{path}", headers={"Host": "evil.example"}, timeout=30)
    assert answer.status_code == 404 and "location" not in answer.headers


def test_the_dashboards_redirects_are_relative_whatever_the_host_header(shared_server):
    reader = shared_server.new_key("--role", "read", "--account", "acme")
    with httpx.Client(base_url=shared_server.url, timeout=30, headers={"Host": "evil.example"}) as http:
        assert http.get("/dashboard").headers["location"] == "/dashboard/sign-in"
        signed_in = sign_in(http, reader)
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/dashboard"
        assert http.get("/dashboard").headers["location"] == "/dashboard/accounts/acme"
        token = form_token(http.get("/dashboard/accounts/acme").text)
        signed_out = http.post("/dashboard/sign-out", data={"csrf_token": token})
        assert signed_out.status_code == 303 and signed_out.headers["location"] == "/dashboard/sign-in"
