"""Dashboard sessions live on the server: signing out, expiry and revocation end them, and a copy of the
database yields nothing to sign in with. Through a real ``ledger serve``, on SQLite and PostgreSQL: one per store
for the module, each test signing in with keys of its own and reading their sessions."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from dashboard_helpers import sessions_in
from http_helpers import ledger_cli, module_store_url, shared_server  # noqa: F401 - fixtures
from test_dashboard_session import form_token, sign_in

#: One worker runs the module, so its shared server starts once per store.
pytestmark = pytest.mark.xdist_group("http-sessions")


def database_dump(database_url: str) -> tuple[list[str], str]:
    """Every table's name, and the text of every row: what a stolen copy of the database holds."""
    engine = sa.create_engine(database_url)
    try:
        tables = sorted(sa.inspect(engine).get_table_names())
        with engine.connect() as connection:
            text = "\n".join(repr(connection.execute(sa.text(f'SELECT * FROM "{name}"')).all()) for name in tables)
        return tables, text
    finally:
        engine.dispose()


def with_cookie(server, value: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Cookie": f"ledger_session={value}"}, timeout=30)


def test_after_signing_out_the_old_cookie_is_no_session(shared_server):
    server = shared_server
    admin = server.new_key_made("--role", "admin")
    with httpx.Client(base_url=server.url, timeout=30, follow_redirects=True) as http:
        assert sign_in(http, admin["key"]).url.path == "/dashboard/overview"
        cookie = http.cookies["ledger_session"]
        assert len(sessions_in(server.database_url, admin["id"])) == 1
        token = form_token(http.get("/dashboard/overview").text)
        signed_out = http.post("/dashboard/sign-out", data={"csrf_token": token}, follow_redirects=False)
        assert signed_out.status_code == 303 and signed_out.headers["location"] == "/dashboard/sign-in"
    assert sessions_in(server.database_url, admin["id"]) == []
    with with_cookie(server, cookie) as replay:
        assert replay.get("/dashboard/overview/usage.csv").status_code == 401
        assert replay.get("/dashboard/accounts/acme/usage.csv").status_code == 401
        page = replay.get("/dashboard/overview")
        assert page.status_code == 401 and 'name="key"' in page.text


def test_revoking_the_key_and_expiry_end_a_session_at_once(shared_server):
    server = shared_server
    made = json.loads(ledger_cli(server.database_url, "keys", "create", "--role", "admin", "--json"))
    with httpx.Client(base_url=server.url, timeout=30, follow_redirects=True) as http:
        sign_in(http, made["key"])
        cookie = http.cookies["ledger_session"]
    with with_cookie(server, cookie) as again:
        assert again.get("/dashboard/overview/usage.csv").status_code == 200
        ledger_cli(server.database_url, "keys", "revoke", made["id"])
        assert again.get("/dashboard/overview/usage.csv").status_code == 401

    reader = server.new_key_made("--role", "read", "--account", "acme")
    with httpx.Client(base_url=server.url, timeout=30, follow_redirects=True) as http:
        sign_in(http, reader["key"])
        assert http.get("/dashboard/accounts/acme").status_code == 200
        engine = sa.create_engine(server.database_url)
        with engine.begin() as connection:
            connection.execute(sa.text("UPDATE dashboard_sessions SET expires_at = :past WHERE key_id = :key_id"),
                               {"past": datetime.now(timezone.utc) - timedelta(seconds=1), "key_id": reader["id"]})
        engine.dispose()
        assert http.get("/dashboard/accounts/acme").status_code == 401


def test_a_copy_of_the_database_holds_no_usable_session_or_secret(shared_server, secret_key_file):
    server = shared_server
    made = server.new_key_made("--role", "admin")
    admin = made["key"]
    with httpx.Client(base_url=server.url, timeout=30, follow_redirects=True) as http:
        sign_in(http, admin)
        cookie = http.cookies["ledger_session"]
    tables, dump = database_dump(server.database_url)
    assert "dashboard_sessions" in tables and "dashboard_secret" not in tables
    assert cookie not in dump and admin not in dump
    key = Path(secret_key_file).read_text().strip()  # the server's key: the run's file (conftest)
    assert key and key not in dump  # the signing key stays outside the database
    [stored] = sessions_in(server.database_url, made["id"])
    assert stored["digest"] == hashlib.sha256(cookie.encode()).hexdigest()
    assert set(stored) == {"digest", "key_id", "created_at", "expires_at"}
    for forged in (stored["digest"], stored["digest"][:43], stored["key_id"]):
        with with_cookie(server, forged) as attacker:
            assert attacker.get("/dashboard/overview").status_code == 401
            assert attacker.get("/dashboard/overview/usage.csv").status_code == 401
    with with_cookie(server, cookie) as owner:
        assert owner.get("/dashboard/overview").status_code == 200
