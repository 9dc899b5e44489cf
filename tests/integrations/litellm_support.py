"""What the LiteLLM tests share: pinned mock responses, a registered callback, and the charges as stored.

LiteLLM is imported with ``LITELLM_LOCAL_MODEL_COST_MAP=True`` (its bundled
price map, no network). Calls are real ``litellm.completion`` /
``litellm.acompletion`` calls with ``mock_response``: LiteLLM builds the
response from the dict (id, created time and usage pinned) and runs its
logging, callbacks included, as for a provider's answer.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import litellm
import sqlalchemy as sa
from conftest import wait_until

from ledger import Ledger
from ledger.store.schema import charge_index
from ledger_service.integrations.litellm import LedgerCallback
from tests.http.http_helpers import serving

#: gpt-4o in micro-units per million tokens (the catalogue the tests set).
PROMPT_RATE, COMPLETION_RATE = 2_500_000, 10_000_000
CREATED = 1_767_225_600  # 2026-01-01T00:00:00Z
MESSAGES = [{"role": "user", "content": "Say hello."}]


def price_gpt_4o(ledger: Ledger) -> None:
    ledger.set_price(provider="openai", model="gpt-4o", prompt_micros_per_million=PROMPT_RATE,
                     completion_micros_per_million=COMPLETION_RATE, effective_from="2020-01-01T00:00:00Z")


def cost(prompt: int, completion: int) -> int:
    """The catalogue's cost of a gpt-4o call, by the ledger's rounding rule (half up, once)."""
    return (prompt * PROMPT_RATE + completion * COMPLETION_RATE + 500_000) // 1_000_000


def response(response_id: str, prompt: int, completion: int, *, created: int = CREATED,
             model: str = "gpt-4o") -> dict[str, Any]:
    """A chat completion with its id, created time and usage pinned, for ``mock_response``."""
    return {"id": response_id, "created": created, "model": model, "object": "chat.completion",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "Hello."}}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion}}


@contextmanager
def registered(callback: LedgerCallback) -> Iterator[LedgerCallback]:
    """The callback in ``litellm.callbacks`` for the block, and in none of LiteLLM's lists after it."""
    litellm.callbacks = [callback]
    try:
        yield callback
    finally:
        litellm.callbacks = []
        litellm.logging_callback_manager.remove_callback_from_all_lists(callback)


def settled(callback: LedgerCallback, calls: int) -> None:
    """Wait until the callback has ended ``calls`` calls one way or another (sync logging runs in LiteLLM's threads)."""
    def ended() -> bool:
        c = callback.counts
        return c.recorded + c.duplicates + c.unresolved + c.rejected + c.failed + c.dropped + c.cache_hits >= calls

    wait_until(ended, f"{calls} calls logged", timeout=30)


async def asettled(callback: LedgerCallback, calls: int) -> None:
    """``settled`` inside the event loop: LiteLLM logs async calls in tasks of the running loop."""
    await asyncio.to_thread(settled, callback, calls)


def payloads(ledger: Ledger, account: str | None = None) -> list[dict[str, Any]]:
    """The facts of each charge recorded (for ``account``, when given), as the charge-id index keeps them."""
    query = sa.select(charge_index.c.payload)
    if account is not None:
        query = query.where(charge_index.c.account_id == account)
    with ledger.store.engine.connect() as connection:
        return sorted((json.loads(row) for row in connection.execute(query).scalars()), key=lambda p: p["charge_id"])


def all_payloads(ledger: Ledger) -> list[dict[str, Any]]:
    return payloads(ledger)


@contextmanager
def serving_on(store_url: str, port: int) -> Iterator[str]:
    """``ledger serve`` on this loopback port for the block (up when /healthz answers); its URL."""
    with serving(store_url, port) as server:
        yield server.url
