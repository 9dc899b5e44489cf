"""The LiteLLM callback in process: real ``litellm.completion`` / ``acompletion`` calls become charges.

Each call is a real LiteLLM call with ``mock_response`` (no network), its
response id, created time and usage pinned; the callback records through a
``Ledger`` on each store.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import asyncio
import json
import logging
import subprocess
import sys

import litellm
import pytest

from ledger.importer import import_file
from ledger_service.integrations.litellm import LedgerCallback
from tests.integrations.litellm_support import (
    MESSAGES,
    asettled,
    cost,
    payloads,
    price_gpt_4o,
    registered,
    response,
    settled,
)


@pytest.fixture
def callback(ledger):
    price_gpt_4o(ledger)
    with registered(LedgerCallback(ledger=ledger)) as registered_callback:
        yield registered_callback


def test_a_sync_completion_becomes_a_charge_with_its_account_user_model_and_tokens(ledger, callback):
    answer = litellm.completion(model="gpt-4o", messages=MESSAGES, user="ada",
                                metadata={"ledger_account_id": "acme"},
                                mock_response=response("chatcmpl-sync-1", 120, 30))
    assert answer.id == "chatcmpl-sync-1"
    settled(callback, 1)

    (charge,) = payloads(ledger, "acme")
    assert {k: charge[k] for k in ("charge_id", "account_id", "user_id", "charge_type", "provider", "model",
                                   "prompt_tokens", "completion_tokens", "total_tokens", "occurred_at")} == {
        "charge_id": "chatcmpl-sync-1", "account_id": "acme", "user_id": "ada", "charge_type": "completion",
        "provider": "openai", "model": "gpt-4o", "prompt_tokens": 120, "completion_tokens": 30,
        "total_tokens": 150, "occurred_at": "2026-01-01T00:00:00+00:00"}
    # The cost is the ledger's catalogue; LiteLLM's own figure is kept beside it for comparison
    # (its bundled gpt-4o price is the same as the one this test set, so the two agree).
    assert ledger.account_totals("acme").cost_micros == cost(120, 30)
    assert charge["reference"] == f"litellm_response_cost_micros={cost(120, 30)}"
    assert callback.counts.recorded == 1


def test_a_retried_call_counts_once(ledger, callback):
    same = response("chatcmpl-retry-1", 200, 50)
    for _ in range(3):  # the same answer delivered three times (a client retry, a re-sent log)
        litellm.completion(model="gpt-4o", messages=MESSAGES, user="ada",
                           metadata={"ledger_account_id": "acme"}, mock_response=same)
    settled(callback, 3)

    totals = ledger.account_totals("acme")
    assert (totals.charges, totals.prompt_tokens, totals.completion_tokens) == (1, 200, 50)
    assert (callback.counts.recorded, callback.counts.duplicates) == (1, 2)


def test_async_completions_become_charges_once_each(ledger, callback):
    async def calls() -> None:
        await asyncio.gather(*(
            litellm.acompletion(model="gpt-4o", messages=MESSAGES, user=f"user-{n % 2}",
                                metadata={"ledger_account_id": "acme"},
                                mock_response=response(f"chatcmpl-async-{n % 3}", 10 + n % 3, 5))
            for n in range(6)))
        await asettled(callback, 6)  # LiteLLM logs in tasks of this loop: they must run before it ends

    asyncio.run(calls())

    charges = payloads(ledger, "acme")
    assert [c["charge_id"] for c in charges] == ["chatcmpl-async-0", "chatcmpl-async-1", "chatcmpl-async-2"]
    assert [c["prompt_tokens"] for c in charges] == [10, 11, 12]
    assert callback.counts.recorded == 3
    # The same answer logged for another user is the same id with other facts: refused, never a second charge.
    assert callback.counts.duplicates + callback.counts.rejected == 3


def test_the_account_comes_from_metadata_then_the_key_team_and_a_call_without_one_is_logged_and_counted(
        ledger, callback, caplog):
    litellm.completion(model="gpt-4o", messages=MESSAGES, mock_response=response("chatcmpl-meta", 10, 5),
                       metadata={"ledger_account_id": "acme", "user_api_key_team_id": "team-blue"})
    litellm.completion(model="gpt-4o", messages=MESSAGES, mock_response=response("chatcmpl-team", 10, 5),
                       metadata={"user_api_key_team_id": "team-blue", "user_api_key_user_id": "key-owner"})
    with caplog.at_level(logging.ERROR, logger="ledger_service.integrations.litellm"):
        litellm.completion(model="gpt-4o", messages=MESSAGES, mock_response=response("chatcmpl-nobody", 10, 5))
        settled(callback, 3)

    assert [c["charge_id"] for c in payloads(ledger, "acme")] == ["chatcmpl-meta"]
    (team_charge,) = payloads(ledger, "team-blue")
    assert (team_charge["charge_id"], team_charge["user_id"]) == ("chatcmpl-team", "key-owner")
    assert callback.counts.unresolved == 1
    (line,) = [r.getMessage() for r in caplog.records if "chatcmpl-nobody" in r.getMessage()]
    assert "unresolved" in line and "no account" in line


def test_account_from_takes_a_callable_or_source_names(ledger):
    price_gpt_4o(ledger)
    by_user = LedgerCallback(ledger=ledger, account_from=lambda identity: f"org-of-{identity.user}")
    with registered(by_user):
        litellm.completion(model="gpt-4o", messages=MESSAGES, user="ada", mock_response=response("c-callable", 1, 1))
        settled(by_user, 1)
    by_name = LedgerCallback(ledger=ledger, account_from=["user"])
    with registered(by_name):
        litellm.completion(model="gpt-4o", messages=MESSAGES, user="grace", mock_response=response("c-named", 1, 1),
                           metadata={"ledger_account_id": "ignored"})
        settled(by_name, 1)

    assert [c["charge_id"] for c in payloads(ledger, "org-of-ada")] == ["c-callable"]
    assert [c["charge_id"] for c in payloads(ledger, "grace")] == ["c-named"]
    with pytest.raises(ValueError, match="account_from: unknown source 'tenant'"):
        LedgerCallback(ledger=ledger, account_from=("metadata", "tenant"))


def test_a_failed_call_records_nothing(ledger, callback):
    with pytest.raises(Exception, match="provider is down"):
        litellm.completion(model="gpt-4o", messages=MESSAGES, metadata={"ledger_account_id": "acme"},
                           mock_response=Exception("provider is down"))
    litellm.completion(model="gpt-4o", messages=MESSAGES, metadata={"ledger_account_id": "acme"},
                       mock_response=response("chatcmpl-after-failure", 3, 4))
    settled(callback, 1)

    assert [c["charge_id"] for c in payloads(ledger, "acme")] == ["chatcmpl-after-failure"]
    assert callback.counts.recorded == 1


def test_a_charge_the_ledger_refuses_is_logged_counted_and_spilled_for_ledger_import(ledger, tmp_path, caplog):
    price_gpt_4o(ledger)
    spill = tmp_path / "unrecorded.jsonl"
    callback = LedgerCallback(ledger=ledger, spill_path=spill)
    with registered(callback), caplog.at_level(logging.ERROR, logger="ledger_service.integrations.litellm"):
        litellm.completion(model="gpt-4o", messages=MESSAGES, metadata={"ledger_account_id": "acme"},
                           mock_response=response("chatcmpl-once", 10, 5))
        settled(callback, 1)
        # The same id with other usage: a conflict, which must not pass unnoticed.
        litellm.completion(model="gpt-4o", messages=MESSAGES, metadata={"ledger_account_id": "acme"},
                           mock_response=response("chatcmpl-once", 99, 5))
        # No account at all.
        litellm.completion(model="gpt-4o", messages=MESSAGES, user="lin",
                           mock_response=response("chatcmpl-orphan", 7, 3))
        settled(callback, 3)

    assert (callback.counts.recorded, callback.counts.rejected, callback.counts.unresolved) == (1, 1, 1)
    spilled = [json.loads(line) for line in spill.read_text().splitlines()]
    assert sorted(c["charge_id"] for c in spilled) == ["chatcmpl-once", "chatcmpl-orphan"]
    assert all(str(spill) in r.getMessage() for r in caplog.records if "not recorded" in r.getMessage())

    # The operator names the orphan's account and imports the file: the orphan is recorded,
    # the conflicting line is refused again (its id holds other facts), nothing counts twice.
    fixed = tmp_path / "fixed.jsonl"
    fixed.write_text("".join(json.dumps({**c, "account_id": c.get("account_id", "lin-org")}) + "\n" for c in spilled))
    result = import_file(ledger, str(fixed))
    assert (result.recorded, result.rejected) == (1, 1)
    assert [c["prompt_tokens"] for c in payloads(ledger, "lin-org")] == [7]
    assert ledger.account_totals("acme").charges == 1


def test_importing_the_package_or_the_ledger_does_not_import_litellm():
    code = ("import sys, ledger, ledger_service.integrations, ledger_service.integrations.litellm_charges, "
            "ledger_service.integrations.litellm_budgets; "
            "from ledger import Ledger; print(sorted(m for m in sys.modules if m.split('.')[0] == 'litellm'))")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert found.stdout.strip() == "[]"


def test_a_streamed_call_is_one_charge_with_the_streams_usage(ledger, callback):
    def usage_of(chunks: list) -> tuple[str, int, int]:
        last = [c for c in chunks if getattr(c, "usage", None)][-1]
        return last.id, last.usage.prompt_tokens, last.usage.completion_tokens

    sync_chunks = list(litellm.completion(
        model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True},
        metadata={"ledger_account_id": "acme"}, mock_response="A streamed answer in a few chunks."))

    async def streamed() -> list:
        stream = await litellm.acompletion(
            model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True},
            metadata={"ledger_account_id": "acme"}, mock_response="Another streamed answer.")
        chunks = [chunk async for chunk in stream]
        await asettled(callback, 2)
        return chunks

    async_chunks = asyncio.run(streamed())

    charges = {c["charge_id"]: (c["charge_id"], c["prompt_tokens"], c["completion_tokens"])
               for c in payloads(ledger, "acme")}
    assert sorted(charges.values()) == sorted([usage_of(sync_chunks), usage_of(async_chunks)])
    assert all(prompt > 0 and completion > 0 for _, prompt, completion in charges.values())


def test_the_proxys_metadata_shapes_name_the_account(ledger):
    # On the proxy the caller's metadata arrives as requester_metadata, the key's as user_api_key_auth_metadata.
    price_gpt_4o(ledger)
    by_default = LedgerCallback(ledger=ledger)
    with registered(by_default):
        litellm.completion(model="gpt-4o", messages=MESSAGES, mock_response=response("c-requester", 2, 1),
                           metadata={"requester_metadata": {"ledger_account_id": "acme-requested"}})
        settled(by_default, 1)
    by_key = LedgerCallback(ledger=ledger, account_from=("key", "team"))
    with registered(by_key):
        litellm.completion(model="gpt-4o", messages=MESSAGES, mock_response=response("c-key", 2, 1),
                           metadata={"ledger_account_id": "caller-says-so",
                                     "user_api_key_auth_metadata": {"ledger_account_id": "acme-by-key"}})
        settled(by_key, 1)

    assert [c["charge_id"] for c in payloads(ledger, "acme-requested")] == ["c-requester"]
    assert [c["charge_id"] for c in payloads(ledger, "acme-by-key")] == ["c-key"]
    assert payloads(ledger, "caller-says-so") == []
