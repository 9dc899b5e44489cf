"""Charge ids are unique per account, on every write path, through a real ``ledger serve``.

Two keys scoped to two accounts use the same ids on every path: single,
batch, CloudEvents, the task path and import. Both charges are stored,
separately; each is a duplicate only within its own account; a conflict
names fields of the tenant's own charge only; a reversal touches the
tenant's own charge only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from http_helpers import bearer, server  # noqa: F401 - fixtures

ACCOUNTS = ("acct-a", "acct-b")


def body(account: str, charge_id: str, prompt: int) -> dict:
    return {"charge_id": charge_id, "user_id": f"{account}-user", "charge_type": "completion",
            "model": f"model-of-{account}", "prompt_tokens": prompt, "completion_tokens": 1,
            "occurred_at": "2026-03-01T12:00:00Z"}


def event(account: str, prompt: int) -> dict:
    return {"specversion": "1.0", "id": "00001", "source": "chat-app", "type": "completion",
            "subject": account, "time": "2026-03-01T12:00:00Z",
            "data": {"prompt_tokens": prompt, "completion_tokens": 1, "model": f"model-of-{account}"}}


def run_python(database_url: str, script: str) -> None:
    """The task path as a worker runs it: ``create_charge`` executed against the server's store."""
    env = {**os.environ, "LEDGER_DATABASE_URL": database_url}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]


def ledger_cli(database_url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ledger_service.cli", "--database-url", database_url, *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_two_tenants_use_the_same_ids_on_every_path_and_each_counts_its_own(server, tmp_path: Path):
    admin = server.new_key("--role", "admin")
    keys = {account: server.new_key("--role", "ingest", "--account", account) for account in ACCOUNTS}
    prompt = {"acct-a": 10, "acct-b": 20}
    with httpx.Client(base_url=server.url, timeout=30) as http:
        # Single: the same id from both tenants, each recorded; a repeat is a duplicate within its own account.
        for account in ACCOUNTS:
            answer = http.post("/v1/charges", json=body(account, "shared-1", prompt[account]),
                               headers=bearer(keys[account]))
            assert answer.status_code == 201, answer.text
            assert answer.json()["account_id"] == account and not answer.json()["duplicate"]
        for account in ACCOUNTS:
            again = http.post("/v1/charges", json=body(account, "shared-1", prompt[account]),
                              headers=bearer(keys[account]))
            assert again.status_code == 200 and again.json()["duplicate"], again.text
        # A conflict names the tenant's own differing fields and shows nothing of the other's charge.
        conflict = http.post("/v1/charges", json=body("acct-a", "shared-1", 99), headers=bearer(keys["acct-a"]))
        assert conflict.status_code == 409
        assert [e["field"] for e in conflict.json()["errors"]] == ["prompt_tokens", "total_tokens"]
        assert "acct-b" not in conflict.text and "20" not in conflict.text

        # Batch.
        for account in ACCOUNTS:
            items = [body(account, f"shared-b-{n}", prompt[account]) for n in range(3)]
            answer = http.post("/v1/charges/batch", json={"charges": items}, headers=bearer(keys[account]))
            assert [o["status"] for o in answer.json()["outcomes"]] == ["recorded"] * 3, answer.text
            answer = http.post("/v1/charges/batch", json={"charges": items}, headers=bearer(keys[account]))
            assert [o["status"] for o in answer.json()["outcomes"]] == ["duplicate"] * 3, answer.text

        # CloudEvents: the same (source, id) under each tenant's subject.
        for account in ACCOUNTS:
            answer = http.post("/api/v1/events", content=json.dumps(event(account, prompt[account])),
                               headers={**bearer(keys[account]), "Content-Type": "application/cloudevents+json"})
            assert answer.status_code == 204, answer.text

        # Task path and import, outside HTTP, with the same ids for both accounts.
        run_python(server.database_url, "from jobs import create_charge\n" + "".join(
            f"create_charge.call_local(account_id={a!r}, charge_id='shared-t', user_id='{a}-user', "
            f"charge_type='usage', prompt_tokens={prompt[a]}, completion_tokens=1)\n" for a in ACCOUNTS * 2))
        lines = tmp_path / "usage.jsonl"
        lines.write_text("".join(json.dumps({"account_id": a, **body(a, "shared-i", prompt[a])}) + "\n"
                                 for a in ACCOUNTS * 2))
        imported = ledger_cli(server.database_url, "import", str(lines), "--json")
        assert imported.returncode == 0, imported.stderr
        assert (json.loads(imported.stdout)["recorded"], json.loads(imported.stdout)["duplicates"]) == (2, 2)

        # Each account holds its own seven charges: single, three batch, event, task, import.
        for account in ACCOUNTS:
            totals = http.get(f"/v1/accounts/{account}/totals", headers=bearer(admin)).json()
            assert totals["charges"] == 7 and totals["prompt_tokens"] == 7 * prompt[account], (account, totals)

        # A reversal by a tenant reverses its own charge only.
        answer = http.post("/v1/charges/shared-1/reversal", json={"reason": "refund"},
                           headers=bearer(keys["acct-a"]))
        assert answer.status_code == 200 and answer.json()["account_id"] == "acct-a", answer.text
        other = http.post("/v1/charges/shared-1/reversal", json={"account_id": "acct-b"},
                          headers=bearer(keys["acct-a"]))
        assert other.status_code == 403 and "acct-b-user" not in other.text
        # A key for every account must name the charge's account.
        unnamed = http.post("/v1/charges/shared-b-1/reversal", json={}, headers=bearer(admin))
        assert unnamed.status_code == 422 and unnamed.json()["errors"][0]["field"] == "account_id"
        named = http.post("/v1/charges/shared-b-1/reversal", json={"account_id": "acct-b"}, headers=bearer(admin))
        assert named.status_code == 200 and named.json()["account_id"] == "acct-b", named.text
        a = http.get("/v1/accounts/acct-a/totals", headers=bearer(admin)).json()
        b = http.get("/v1/accounts/acct-b/totals", headers=bearer(admin)).json()
        assert (a["charges"], b["charges"]) == (6, 6)

    # The operator's command names the account when an id is shared.
    ambiguous = ledger_cli(server.database_url, "reverse", "shared-t")
    assert ambiguous.returncode != 0 and "more than one account" in ambiguous.stderr
    done = ledger_cli(server.database_url, "reverse", "shared-t", "--account", "acct-b", "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["account_id"] == "acct-b", done.stderr
