"""The dashboard's session: a signed cookie (HttpOnly, SameSite, Secure over HTTPS) that never holds the key."""

from __future__ import annotations

from fastapi.testclient import TestClient

from http_helpers import client, keys  # noqa: F401 - fixtures
from ledger_service.http import create_app
from ledger_service.keys import create_key, revoke_key


def test_the_cookie_is_signed_httponly_strict_and_secure_over_https(ledger, keys):
    with TestClient(create_app(ledger), base_url="https://ledger.example") as https:
        answer = https.post("/dashboard/sign-in", data={"key": keys.admin}, follow_redirects=False)
    assert answer.status_code == 303
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" in cookie and "Path=/dashboard" in cookie
    assert keys.admin not in cookie and keys.admin.split("_")[2] not in cookie


def test_plain_http_cookie_is_not_secure_and_a_tampered_one_is_no_session(client, keys):
    answer = client.post("/dashboard/sign-in", data={"key": keys.read_a}, follow_redirects=False)
    assert "Secure" not in answer.headers["set-cookie"]
    token = answer.cookies["ledger_session"]
    client.cookies.set("ledger_session", token[:-2] + ("AA" if not token.endswith("AA") else "BB"), path="/dashboard")
    assert client.get("/dashboard/accounts/acct-a").status_code == 401


def test_an_ingest_key_cannot_sign_in_and_revoking_ends_the_session(client, ledger, keys):
    refused = client.post("/dashboard/sign-in", data={"key": keys.ingest_a})
    assert refused.status_code == 401 and keys.ingest_a not in refused.text
    key, secret = create_key(ledger, "read", "acct-a")
    assert client.post("/dashboard/sign-in", data={"key": secret}).status_code == 200
    assert client.get("/dashboard/accounts/acct-a").status_code == 200
    revoke_key(ledger, key.id)
    assert client.get("/dashboard/accounts/acct-a").status_code == 401


def test_pages_are_not_cached_or_framed_and_name_the_billing_zone(client, keys):
    client.post("/dashboard/sign-in", data={"key": keys.admin})
    page = client.get("/dashboard/overview")
    assert page.headers["cache-control"] == "no-store" and page.headers["x-frame-options"] == "DENY"
    assert "Billing time zone: <strong data-zone>UTC</strong>" in page.text
    assert "/dashboard" not in client.get("/openapi.json").json()["paths"]
