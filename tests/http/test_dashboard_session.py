"""The dashboard's session: an opaque cookie (HttpOnly, SameSite, Secure over HTTPS) that never holds the key,
standing for a session kept on the server."""

from __future__ import annotations

import re

import httpx
from fastapi.testclient import TestClient

from http_helpers import client, keys  # noqa: F401 - fixtures
from ledger_service.http import create_app
from ledger_service.keys import create_key, revoke_key

TOKEN = re.compile(r'name="csrf_token" value="([^"]*)"')


def form_token(page: str) -> str:
    """The CSRF token of the (first) form on a dashboard page."""
    found = TOKEN.search(page)
    assert found, "the page has no form token"
    return found.group(1)


def sign_in(http: TestClient | httpx.Client, key: str, **kwargs) -> httpx.Response:
    """As a browser does: fetch the sign-in form (its token and nonce cookie), then post it."""
    token = form_token(http.get("/dashboard/sign-in").text)
    return http.post("/dashboard/sign-in", data={"key": key, "csrf_token": token}, **kwargs)


def test_the_cookie_is_httponly_strict_and_secure_over_https(ledger, keys):
    with TestClient(create_app(ledger), base_url="https://ledger.example") as https:
        answer = sign_in(https, keys.admin, follow_redirects=False)
    assert answer.status_code == 303
    cookie = next(value for value in answer.headers.get_list("set-cookie") if value.startswith("ledger_session="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" in cookie and "Path=/dashboard" in cookie
    assert keys.admin not in cookie and keys.admin.split("_", 2)[2] not in cookie


def test_plain_http_cookie_is_not_secure_and_a_tampered_one_is_no_session(client, keys):
    answer = sign_in(client, keys.read_a, follow_redirects=False)
    assert "Secure" not in answer.headers["set-cookie"]
    token = answer.cookies["ledger_session"]
    client.cookies.delete("ledger_session")  # the jar keeps the server's own (its domain varies by httpx version)
    client.cookies.set("ledger_session", token[:-2] + ("AA" if not token.endswith("AA") else "BB"), path="/dashboard")
    assert client.get("/dashboard/accounts/acct-a").status_code == 401


def test_an_ingest_key_cannot_sign_in_and_revoking_ends_the_session(client, ledger, keys):
    refused = sign_in(client, keys.ingest_a)
    assert refused.status_code == 401 and keys.ingest_a not in refused.text
    key, secret = create_key(ledger, "read", "acct-a")
    assert sign_in(client, secret).status_code == 200
    assert client.get("/dashboard/accounts/acct-a").status_code == 200
    revoke_key(ledger, key.id)
    assert client.get("/dashboard/accounts/acct-a").status_code == 401


def test_pages_are_not_cached_or_framed_and_name_the_billing_zone(client, keys):
    sign_in(client, keys.admin)
    page = client.get("/dashboard/overview")
    assert page.headers["cache-control"] == "no-store" and page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert "Billing time zone: <strong data-zone>UTC</strong>" in page.text
    assert "/dashboard" not in client.get("/openapi.json").json()["paths"]
