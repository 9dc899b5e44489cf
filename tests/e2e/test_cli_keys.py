"""``ledger keys``: a secret printed once, only its digest stored; list and revoke."""

from __future__ import annotations

import json

import sqlalchemy as sa
from typer.testing import CliRunner

from ledger import Ledger, Settings
from ledger_service.cli import app
from ledger_service.keys import authenticate, digest

runner = CliRunner()


def run(url, *args):
    return runner.invoke(app, ["--database-url", url, *args])


def test_create_list_revoke(store_url):
    made = run(store_url, "keys", "create", "--role", "read", "--account", "acme", "--name", "dashboard", "--json")
    assert made.exit_code == 0, made.stderr
    created = json.loads(made.stdout)
    assert set(created) == {"id", "key"} and created["key"].startswith(f"lk_{created['id']}_")

    plain = run(store_url, "keys", "create", "--role", "ingest")
    assert plain.exit_code == 0 and plain.stdout.startswith("lk_")
    assert "shown this once" in plain.stderr

    listed = json.loads(run(store_url, "keys", "list", "--json").stdout)
    assert [(k["role"], k["account_id"], k["name"], k["revoked_at"]) for k in listed] == [
        ("read", "acme", "dashboard", None), ("ingest", None, "", None)]
    assert created["key"] not in run(store_url, "keys", "list").stdout

    ledger = Ledger(Settings(database_url=store_url))
    try:
        engine = ledger.recorder.datastore.engine
        with engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT * FROM api_keys")).all()
        assert created["key"] not in repr(rows)
        assert digest(created["key"]) in repr(rows)
        assert authenticate(ledger, created["key"]).account_id == "acme"

        revoked = run(store_url, "keys", "revoke", created["id"])
        assert revoked.exit_code == 0 and f"revoked key {created['id']}" in revoked.stdout
        assert authenticate(ledger, created["key"]) is None
    finally:
        ledger.close()
    assert json.loads(run(store_url, "keys", "list", "--json").stdout)[0]["revoked_at"] is not None


def test_refusals_are_one_line_and_exit_2(sqlite_url):
    for args, message in (
        (["--role", "owner"], "role: choose one of admin, ingest, read"),
        (["--role", "read"], "account: a read key needs the account it may read"),
        (["--role", "admin", "--account", "acme"], "account: an admin key acts for every account"),
    ):
        result = run(sqlite_url, "keys", "create", *args)
        assert result.exit_code == 2
        assert result.stderr.startswith("error: invalid key: ") and message in result.stderr
    unknown = run(sqlite_url, "keys", "revoke", "0123456789abcdef")
    assert unknown.exit_code == 2 and unknown.stderr == "error: no API key with id '0123456789abcdef'\n"


def test_a_key_for_a_look_alike_account_or_with_a_hidden_name_is_refused(store_url):
    for args, field in ((("--account", "acme\u200b"), "account"), (("--account", "u\u202eevil"), "account"),
                        (("--account", "acme", "--name", "ops\x00"), "name")):
        refused = run(store_url, "keys", "create", "--role", "ingest", *args)
        assert refused.exit_code == 2 and field in refused.stderr and "U+" in refused.stderr, refused.stderr
    assert json.loads(run(store_url, "keys", "list", "--json").stdout) == []
