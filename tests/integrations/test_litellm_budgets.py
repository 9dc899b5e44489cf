"""Budgets on the LiteLLM proxy: the pre-call hook reserves, success captures, failure releases.

The hooks are called the way the proxy calls them: ``async_pre_call_hook``
with the key's ``UserAPIKeyAuth``, the proxy's ``DualCache`` and the request
``data`` the proxy built (its ``litellm_call_id``, and the caller's metadata
under ``metadata.requester_metadata``); then the model call itself is a real
``litellm.acompletion`` with the same call id, whose success or failure
LiteLLM logs to the callback. (The proxy server itself needs the
``litellm[proxy]`` extras, which the ledger does not install.)
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import asyncio
import time
from typing import Any

import litellm
import pytest
from conftest import wait_until
from fastapi import HTTPException
from litellm.caching.dual_cache import DualCache
from litellm.proxy._types import UserAPIKeyAuth

from ledger_service.integrations.litellm import (
    BudgetRefused,
    CallIdReused,
    LedgerCallback,
)
from ledger_service.keys import create_key
from tests.http.http_helpers import free_port
from tests.integrations.litellm_support import (
    COMPLETION_RATE,
    MESSAGES,
    cost,
    payloads,
    price_gpt_4o,
    registered,
    response,
    serving_on,
)

KEY = UserAPIKeyAuth(api_key="sk-team-acme", team_id="team-acme", user_id="ada")


def request(call_id: str, *, account: str = "acme", max_tokens: int = 100, model: str = "gpt-4o") -> dict[str, Any]:
    """The request ``data`` as the proxy hands it to a pre-call hook."""
    return {"model": model, "messages": MESSAGES, "max_tokens": max_tokens, "litellm_call_id": call_id,
            "metadata": {"requester_metadata": {"ledger_account_id": account}, "ledger_account_id": account,
                         "user_api_key_team_id": KEY.team_id, "user_api_key_user_id": KEY.user_id}}


def now() -> int:
    """A response created now: the charge falls in the budget's current period."""
    return int(time.time())


async def pre_call(callback: LedgerCallback, data: dict[str, Any]) -> None:
    await callback.async_pre_call_hook(user_api_key_dict=KEY, cache=DualCache(), data=data, call_type="acompletion")


async def model_call(data: dict[str, Any], answer: Any) -> None:
    """The proxy's call to the model after the hooks: the request's fields, its call id, a pinned answer."""
    await litellm.acompletion(model=data["model"], messages=data["messages"], max_tokens=data["max_tokens"],
                              litellm_call_id=data["litellm_call_id"], metadata=data["metadata"],
                              mock_response=answer)


@pytest.fixture
def callback(ledger):
    price_gpt_4o(ledger)
    with registered(LedgerCallback(ledger=ledger)) as registered_callback:
        yield registered_callback


def test_the_proxy_finds_the_pre_call_hook_on_the_class():
    # The proxy calls a callback's async_pre_call_hook only when its own class defines it.
    assert "async_pre_call_hook" in vars(LedgerCallback)


def test_a_call_is_reserved_then_captured_exactly(ledger, callback):
    ledger.set_budget("acme-monthly", account_id="acme", limit_micros=1_000_000)
    data = request("call-ok")

    async def flow() -> None:
        await pre_call(callback, data)
        assert ledger.reservation_state("call-ok") == "held"
        held = ledger.budgets("acme")[0].held_micros
        # The hold covers every completion token max_tokens allows, at the catalogue's rate.
        assert held == ledger.get_reservation("call-ok").estimate_micros >= 100 * COMPLETION_RATE // 1_000_000
        await model_call(data, response("chatcmpl-proxy-1", 57, 43, created=now()))
        await asyncio.to_thread(wait_until, lambda: callback.counts.recorded == 1, "the capture", 30)

    asyncio.run(flow())
    assert ledger.reservation_state("call-ok") == "captured"
    (charge,) = payloads(ledger, "acme")
    assert (charge["charge_id"], charge["user_id"], charge["prompt_tokens"], charge["completion_tokens"]) == (
        "chatcmpl-proxy-1", "ada", 57, 43)
    status = ledger.budgets("acme")[0]
    assert (status.spent_micros, status.held_micros) == (cost(57, 43), 0)
    assert (callback.counts.reserved, callback.counts.recorded) == (1, 1)


def test_a_call_over_budget_is_refused_with_402_naming_the_budget_and_nothing_is_held(ledger, callback):
    ledger.set_budget("acme-tiny", account_id="acme", limit_micros=500)

    with pytest.raises(BudgetRefused) as refused:
        asyncio.run(pre_call(callback, request("call-big", max_tokens=1000)))

    error = refused.value
    assert isinstance(error, HTTPException) and error.status_code == 402  # the proxy answers with this status
    assert error.detail["budget_id"] == "acme-tiny" and "acme-tiny" in error.detail["error"]
    assert error.detail["limit_micros"] == 500 and error.type == "budget_exceeded"
    status = ledger.budgets("acme")[0]
    assert (status.held_micros, status.spent_micros) == (0, 0)
    assert callback.counts.refused == 1


def test_concurrent_calls_cannot_overshoot_the_budget(ledger, callback):
    one = callback.estimate(request("probe")).micros
    ledger.set_budget("acme-two", account_id="acme", limit_micros=2 * one + one // 2)  # room for two holds

    async def three() -> list[BaseException | None]:
        return await asyncio.gather(*(pre_call(callback, request(f"call-{n}")) for n in range(3)),
                                    return_exceptions=True)

    outcomes = asyncio.run(three())
    assert sum(isinstance(o, BudgetRefused) for o in outcomes) == 1
    assert ledger.budgets("acme")[0].held_micros == 2 * one


def test_a_failed_call_releases_its_hold(ledger, callback):
    ledger.set_budget("acme-monthly", account_id="acme", limit_micros=1_000_000)
    failing, rejected_later = request("call-fails"), request("call-rejected-by-a-later-hook")

    async def flow() -> None:
        await pre_call(callback, failing)
        with pytest.raises(Exception, match="provider is down"):
            await model_call(failing, Exception("provider is down"))
        await asyncio.to_thread(wait_until, lambda: callback.counts.released == 1, "the release", 30)
        # Another hook refused the request after ours reserved: the proxy's failure hook releases.
        await pre_call(callback, rejected_later)
        await callback.async_post_call_failure_hook(request_data=rejected_later, original_exception=ValueError("no"),
                                                    user_api_key_dict=KEY)

    asyncio.run(flow())
    assert ledger.reservation_state("call-fails") == "released"
    assert ledger.reservation_state("call-rejected-by-a-later-hook") == "released"
    assert ledger.budgets("acme")[0].held_micros == 0
    assert payloads(ledger, "acme") == []


def test_an_unpriced_model_holds_the_configured_default(ledger):
    callback = LedgerCallback(ledger=ledger, default_estimate_micros=12_345)
    asyncio.run(pre_call(callback, request("call-unpriced", model="some-local-model")))
    assert ledger.get_reservation("call-unpriced").estimate_micros == 12_345
    callback.close()


def test_remote_mode_reserves_refuses_and_captures_through_ledger_serve(ledger, store_url):
    price_gpt_4o(ledger)
    ledger.set_budget("acme-monthly", account_id="acme", limit_micros=10_000)
    key = create_key(ledger, "ingest")[1]
    with serving_on(store_url, free_port()) as url:
        callback = LedgerCallback(url=url, key=key, default_estimate_micros=4_000)
        with registered(callback):
            data = request("call-remote")

            async def flow() -> None:
                await pre_call(callback, data)
                assert ledger.reservation_state("call-remote") == "held"
                with pytest.raises(BudgetRefused) as refused:  # 4,000 held of 10,000: 8,000 more cannot fit
                    await callback.async_pre_call_hook(user_api_key_dict=KEY, cache=DualCache(),
                                                       data={**request("call-too-much"), "max_tokens": 100},
                                                       call_type="acompletion")
                assert refused.value.detail["budget_id"] == "acme-monthly"
                await model_call(data, response("chatcmpl-remote-proxy", 30, 10, created=now()))
                await asyncio.to_thread(wait_until, lambda: callback.counts.recorded == 1, "the capture", 30)

            callback.estimate_micros = lambda data: 8_000 if data["litellm_call_id"] == "call-too-much" else 4_000
            asyncio.run(flow())
            assert callback.flush(timeout=30)
        callback.close()

    assert ledger.reservation_state("call-remote") == "captured"
    assert [c["charge_id"] for c in payloads(ledger, "acme")] == ["chatcmpl-remote-proxy"]
    assert ledger.budgets("acme")[0].spent_micros == cost(30, 10)


def test_a_reused_call_id_is_refused_rather_than_sharing_the_first_calls_hold(ledger, callback):
    # A client may set x-litellm-call-id; a second request under the same id must not ride on the first hold.
    ledger.set_budget("acme-monthly", account_id="acme", limit_micros=1_000_000)
    asyncio.run(pre_call(callback, request("call-same")))
    for again in (request("call-same"), request("call-same", max_tokens=7)):
        with pytest.raises(CallIdReused) as refused:
            asyncio.run(pre_call(callback, again))
        assert refused.value.status_code == 409
    assert ledger.budgets("acme")[0].held_micros == ledger.get_reservation("call-same").estimate_micros
