"""Tenant isolation: a key for account A sees and changes nothing of account B, through any endpoint."""

from __future__ import annotations

import itertools

import pytest

from http_helpers import bearer, client, keys  # noqa: F401 - fixtures

KEY_COLUMNS = ("account_id", "user_id", "billing_date", "charge_type", "provider", "model")
EVERY_GROUPING = [",".join(c) for n in range(1, 7) for c in itertools.combinations(KEY_COLUMNS, n)]


def charge(account, n, **fields):
    return {"account_id": account, "user_id": f"{account}-user", "charge_type": "completion",
            "provider": "openai", "model": "gpt-4o", "prompt_tokens": 10 * n, "completion_tokens": n,
            "charge_id": f"{account}-{n}", "occurred_at": f"2026-03-0{n}T12:00:00Z", **fields}


@pytest.fixture
def two_accounts(client, keys):
    """A has two charges; B has three, some sharing A's user, model, provider, type and days."""
    items = [charge("acct-a", 1), charge("acct-a", 2, model="small"),
             charge("acct-b", 1, user_id="acct-a-user"), charge("acct-b", 2, provider="anthropic", model="claude",
                                                                   charge_type="tool"),
             charge("acct-b", 3, user_id="bob")]
    answer = client.post("/v1/charges/batch", json={"charges": items}, headers=bearer(keys.admin))
    assert [o["status"] for o in answer.json()["outcomes"]] == ["recorded"] * 5
    return client


def totals(client, keys, account):
    return client.get(f"/v1/accounts/{account}/totals", headers=bearer(keys.admin)).json()


def test_totals_of_another_account_are_forbidden(two_accounts, keys):
    client = two_accounts
    assert client.get("/v1/accounts/acct-a/totals", headers=bearer(keys.read_a)).json()["charges"] == 2
    for account in ("acct-b", "nobody"):
        answer = client.get(f"/v1/accounts/{account}/totals", headers=bearer(keys.read_a))
        assert answer.status_code == 403
        assert "acct-b-" not in answer.text and "bob" not in answer.text
    assert client.get("/v1/accounts/acct-a/totals", headers=bearer(keys.read_b)).status_code == 403


def test_usage_asking_for_another_account_is_forbidden(two_accounts, keys):
    answer = two_accounts.get("/v1/usage", params={"account": "acct-b"}, headers=bearer(keys.read_a))
    assert answer.status_code == 403


@pytest.mark.parametrize("accept", ["application/json", "text/csv"])
def test_no_grouping_or_filter_lets_another_account_in(two_accounts, keys, accept):
    client = two_accounts
    filters = [{}, {"user": "acct-a-user"}, {"user": "bob"}, {"model": "claude"}, {"provider": "anthropic"},
               {"charge_type": "tool"}, {"from": "2026-03-03", "to": "2026-03-03"}, {"account": "acct-a"}]
    for group_by in EVERY_GROUPING:
        for extra in filters:
            answer = client.get("/v1/usage", params={"group_by": group_by, **extra},
                                headers={**bearer(keys.read_a), "Accept": accept})
            assert answer.status_code == 200, answer.text
            text = answer.text
            assert "acct-b" not in text and "bob" not in text and "claude" not in text and "anthropic" not in text
            if accept == "application/json":
                rows = answer.json()["data"]
                assert sum(r["charges"] for r in rows) <= 2
                if not extra:
                    assert sum(r["charges"] for r in rows) == 2
                    assert sum(r["prompt_tokens"] for r in rows) == 30


def test_an_ingest_key_for_a_records_nothing_for_b(two_accounts, keys):
    client = two_accounts
    before = totals(client, keys, "acct-b")
    refused = [
        client.post("/v1/charges", json=charge("acct-b", 7), headers=bearer(keys.ingest_a)),
        client.post("/v1/charges", json={"user_profile_id": 5, "charge_type": "usage", "prompt_tokens": 1},
                    headers=bearer(keys.ingest_a)),
        client.post("/v1/charges/batch", json={"charges": [charge("acct-a", 8), charge("acct-b", 8)]},
                    headers=bearer(keys.ingest_a)),
        client.post("/api/v1/events", headers={**bearer(keys.ingest_a), "Content-Type": "application/cloudevents+json"},
                    json={"specversion": "1.0", "id": "x", "source": "s", "type": "t", "subject": "acct-b",
                          "data": {"prompt_tokens": 5}}),
        client.post("/api/v1/events", headers={**bearer(keys.ingest_a),
                                               "Content-Type": "application/cloudevents-batch+json"},
                    json=[{"specversion": "1.0", "id": n, "source": "s", "type": "t", "subject": subject,
                           "data": {"prompt_tokens": 5}} for n, subject in (("y", "acct-a"), ("z", "acct-b"))]),
    ]
    assert [r.status_code for r in refused] == [403] * 5
    assert totals(client, keys, "acct-b") == before
    assert totals(client, keys, "acct-a")["charges"] == 2  # the batch's and the events' A items were not stored
    assert client.get("/v1/accounts/profile-5/totals", headers=bearer(keys.admin)).status_code == 404


def test_an_ingest_key_for_a_cannot_reverse_bs_charges(two_accounts, keys):
    client = two_accounts
    before = totals(client, keys, "acct-b")
    for charge_id in ("acct-b-1", "no-such-charge"):
        answer = client.post(f"/v1/charges/{charge_id}/reversal", json={"reason": "x"}, headers=bearer(keys.ingest_a))
        assert answer.status_code == 403
    assert totals(client, keys, "acct-b") == before
    own = client.post("/v1/charges/acct-a-1/reversal", json={"reason": "x"}, headers=bearer(keys.ingest_a))
    assert own.status_code == 200
    assert totals(client, keys, "acct-a")["charges"] == 1


def test_roles_bound_what_a_key_does(two_accounts, keys):
    client = two_accounts
    assert client.post("/v1/charges", json=charge("acct-a", 9), headers=bearer(keys.read_a)).status_code == 403
    assert client.post("/v1/charges/acct-a-1/reversal", headers=bearer(keys.read_a)).status_code == 403
    assert client.get("/v1/usage", headers=bearer(keys.ingest_a)).status_code == 403
    assert client.get("/v1/accounts/acct-a/totals", headers=bearer(keys.ingest_any)).status_code == 403
    assert client.post("/v1/charges", json=charge("acct-b", 9), headers=bearer(keys.ingest_any)).status_code == 201
    every = client.get("/v1/usage", params={"group_by": "account_id"}, headers=bearer(keys.admin)).json()["data"]
    assert [r["account_id"] for r in every] == ["acct-a", "acct-b"]
    assert totals(client, keys, "acct-a")["charges"] == 2
