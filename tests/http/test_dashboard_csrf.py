"""Every dashboard form post needs its token and a same-origin browser: otherwise 403 and nothing changes.
Through a real ``ledger serve``, on SQLite and PostgreSQL: one per store for the module, each test starting with
no dashboard session on it."""

from __future__ import annotations

import httpx
import pytest
from dashboard_helpers import end_sessions, sessions_in
from fastapi.testclient import TestClient
from http_helpers import Server, keys, module_store_url, shared_server  # noqa: F401 - fixtures
from test_dashboard_session import form_token, sign_in

from ledger_service.http import create_app

# One worker runs the module, so its shared server starts once per store.
pytestmark = pytest.mark.xdist_group("dashboard-csrf")

CROSS_SITE = [{"Origin": "http://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"},
              {"Sec-Fetch-Site": "same-site"}, {"Origin": "http://evil.example", "Sec-Fetch-Site": "same-origin"}]


@pytest.fixture
def server(shared_server) -> Server:  # noqa: F811 - the fixture imported above
    """The module's server with no dashboard session on it, as when it started."""
    end_sessions(shared_server.database_url)
    return shared_server


def browser_like(server) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30, follow_redirects=False)


def test_sign_in_from_another_site_or_without_the_token_is_403_and_makes_no_session(server):
    admin = server.new_key("--role", "admin")
    own = {"Origin": server.url, "Sec-Fetch-Site": "same-origin"}
    with browser_like(server) as http:
        token = form_token(http.get("/dashboard/sign-in").text)
        for headers in CROSS_SITE:
            refused = http.post("/dashboard/sign-in", data={"key": admin, "csrf_token": token}, headers=headers)
            assert refused.status_code == 403, headers
            assert "ledger_session" not in refused.headers.get("set-cookie", "") and admin not in refused.text
        for data in ({"key": admin}, {"key": admin, "csrf_token": ""}, {"key": admin, "csrf_token": token[:-1] + ("1" if token.endswith("0") else "0")}):
            assert http.post("/dashboard/sign-in", data=data, headers=own).status_code == 403
    with browser_like(server) as stranger:  # the token without the nonce cookie it was made for
        assert stranger.post("/dashboard/sign-in", data={"key": admin, "csrf_token": token}).status_code == 403
    assert sessions_in(server.database_url) == []
    with browser_like(server) as http:
        token = form_token(http.get("/dashboard/sign-in").text)
        accepted = http.post("/dashboard/sign-in", data={"key": admin, "csrf_token": token}, headers=own)
        assert accepted.status_code == 303 and accepted.headers["location"] == "/dashboard"
    assert len(sessions_in(server.database_url)) == 1


def test_sign_out_from_another_site_or_without_the_token_is_403_and_the_session_stays(server):
    admin = server.new_key("--role", "admin")
    with httpx.Client(base_url=server.url, timeout=30, follow_redirects=True) as http:
        sign_in(http, admin)
        token = form_token(http.get("/dashboard/overview").text)
        sign_in_token = form_token(httpx.get(f"{server.url}/dashboard/sign-in").text)
        for headers in CROSS_SITE:
            refused = http.post("/dashboard/sign-out", data={"csrf_token": token}, headers=headers)
            assert refused.status_code == 403, headers
        for data in ({}, {"csrf_token": ""}, {"csrf_token": sign_in_token}):
            assert http.post("/dashboard/sign-out", data=data).status_code == 403
        assert http.get("/dashboard/overview").status_code == 200
        assert len(sessions_in(server.database_url)) == 1
        signed_out = http.post("/dashboard/sign-out", data={"csrf_token": token},
                               headers={"Origin": server.url, "Sec-Fetch-Site": "same-origin"})
        assert signed_out.status_code == 200 and signed_out.url.path == "/dashboard/sign-in"
    assert sessions_in(server.database_url) == []


@pytest.mark.parametrize("origin", ["https://ledger.example", "https://ledger.example:443", "HTTPS://Ledger.Example"])
def test_the_own_origin_is_matched_with_its_default_port_and_in_any_case(ledger, keys, origin):  # noqa: F811
    with TestClient(create_app(ledger), base_url="https://ledger.example") as https:
        token = form_token(https.get("/dashboard/sign-in").text)
        answer = https.post("/dashboard/sign-in", data={"key": keys.admin, "csrf_token": token},
                            headers={"Origin": origin}, follow_redirects=False)
        assert answer.status_code == 303
        other = https.post("/dashboard/sign-in", data={"key": keys.admin, "csrf_token": token},
                           headers={"Origin": "http://ledger.example"}, follow_redirects=False)
        assert other.status_code == 403  # another scheme is another origin
