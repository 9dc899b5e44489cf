"""The proxy's ready callback: config.yaml names ``ledger_service.integrations.litellm_proxy.ledger_callback``.

Each test sets the environment a proxy would have, loads the instance with
LiteLLM's own loader for ``litellm_settings.callbacks`` (``get_instance_fn``;
the module is loaded afresh, as in a new proxy process), and makes a real
call through it.
"""

from __future__ import annotations

import importlib
import os
import sys

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm
import pytest
from litellm.proxy.types_utils.utils import get_instance_fn

from ledger_service.integrations.litellm import LedgerCallback
from ledger_service.keys import create_key
from tests.http.http_helpers import free_port
from tests.integrations.litellm_support import (
    MESSAGES,
    payloads,
    price_gpt_4o,
    registered,
    response,
    serving_on,
    settled,
)

MODULE = "ledger_service.integrations.litellm_proxy"


def proxy_callback(monkeypatch: pytest.MonkeyPatch, **environment: str) -> LedgerCallback:
    """The instance the proxy would load under this environment."""
    for name in [n for n in os.environ if n.startswith(("LEDGER_URL", "LEDGER_KEY", "LEDGER_LITELLM_"))]:
        monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    if MODULE in sys.modules:
        importlib.reload(sys.modules[MODULE])
    return get_instance_fn(f"{MODULE}.ledger_callback")


def one_call(callback: LedgerCallback) -> None:
    with registered(callback):
        litellm.completion(model="gpt-4o", messages=MESSAGES, user="ada",
                           mock_response=response("chatcmpl-from-env", 12, 3))
        settled(callback, 1)
        assert callback.flush(timeout=30)
    callback.close()


def test_in_process_from_the_database_url(ledger, store_url, monkeypatch):
    price_gpt_4o(ledger)
    callback = proxy_callback(monkeypatch, LEDGER_DATABASE_URL=store_url, LEDGER_LITELLM_ACCOUNT_FROM="metadata,user",
                              LEDGER_LITELLM_DEFAULT_ESTIMATE_MICROS="2500")
    assert type(callback.destination).__name__ == "LocalLedger" and callback.default_estimate_micros == 2500
    one_call(callback)
    (charge,) = payloads(ledger, "ada")
    assert (charge["charge_id"], charge["prompt_tokens"], charge["completion_tokens"]) == ("chatcmpl-from-env", 12, 3)
    callback.destination.ledger.close()


def test_remote_from_the_ledger_url_and_key(ledger, store_url, monkeypatch):
    key = create_key(ledger, "ingest")[1]
    with serving_on(store_url, free_port()) as url:
        callback = proxy_callback(monkeypatch, LEDGER_URL=url, LEDGER_KEY=key, LEDGER_LITELLM_ACCOUNT_FROM="user")
        assert type(callback.destination).__name__ == "RemoteLedger"
        one_call(callback)
    assert [c["charge_id"] for c in payloads(ledger, "ada")] == ["chatcmpl-from-env"]


def test_a_misspelt_option_names_the_variable(monkeypatch):
    with pytest.raises(Exception, match="refusal_status"):
        proxy_callback(monkeypatch, LEDGER_URL="http://127.0.0.1:1", LEDGER_KEY="k", LEDGER_LITELLM_REFUSAL_STATUS="500")
