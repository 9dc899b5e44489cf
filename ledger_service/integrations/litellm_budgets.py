"""Budgets on the LiteLLM proxy: what a call may cost before it runs, and what a refusal looks like.

The pre-call hook reserves an estimate keyed on the request's
``litellm_call_id``; the success callback captures the real charge under
that reservation, the failure callbacks release it. The estimate is the
most the call can cost by the ledger's catalogue: its prompt (guessed from
the text, generously) and every completion token ``max_tokens`` allows.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import HTTPException

from ledger.errors import BudgetExceeded

if TYPE_CHECKING:
    from ledger.pricing import Price, PriceTable

#: Completion tokens assumed for a request that sets no ``max_tokens``.
DEFAULT_MAX_TOKENS = 4096
#: The estimate, in micro-units, when the catalogue has no price for the model.
DEFAULT_ESTIMATE_MICROS = 100_000
#: Characters per prompt token assumed by the guess (fewer than real text has: the guess errs high).
CHARS_PER_TOKEN = 3
#: Tokens added to every prompt guess (roles, separators, a system prompt the proxy adds).
PROMPT_OVERHEAD_TOKENS = 16


@dataclass(frozen=True)
class Hold:
    """A reservation this callback made for a call: captured on success, released on failure."""

    reservation_id: str
    account_id: str
    user_id: str | None
    made_at: float


@dataclass(frozen=True)
class Estimate:
    micros: int
    tokens: int


class BudgetRefused(HTTPException):
    """A hard budget cannot hold the call's estimate: the proxy answers with this status (402 by default).

    The proxy turns an ``HTTPException`` raised by a pre-call hook into an
    OpenAI-style error with this status; ``detail["error"]`` is the message and
    the rest (the budget id, its figures, the estimate) travel with it.
    ``type`` becomes the error's ``type``.
    """

    type = "budget_exceeded"
    param = None

    def __init__(self, refused: BudgetExceeded, status_code: int = 402) -> None:
        self.budget_id = refused.budget_id
        message = f"budget {refused.budget_id!r} refused this call: {refused}"
        super().__init__(status_code=status_code, detail={
            "error": message, "budget_id": refused.budget_id, **refused.figures, "estimate": refused.estimate,
        })


class CallIdReused(HTTPException):
    """The request's ``litellm_call_id`` (a client may set ``x-litellm-call-id``) was reserved before: 409.

    A reservation is keyed on the call id, so a reused id would share the
    first call's hold instead of being checked against the budget.
    """

    type = "call_id_reused"
    param = "x-litellm-call-id"

    def __init__(self, call_id: str) -> None:
        super().__init__(status_code=409, detail={
            "error": f"litellm_call_id {call_id!r} was already used for another call: send a new one (or none)"})


class LedgerUnavailable(HTTPException):
    """The ledger could not be asked for a reservation and ``budget_unavailable="refuse"``: 503."""

    type = "ledger_unavailable"
    param = None

    def __init__(self, why: str) -> None:
        super().__init__(status_code=503, detail={"error": f"the usage ledger cannot check the budget now: {why}"},
                         headers={"Retry-After": "5"})


def capture_fields(charge: Mapping[str, Any], hold: Hold) -> dict[str, Any]:
    """The charge's fields for a capture: the account (and the user, when it reserved one) are the hold's."""
    fields = {k: v for k, v in charge.items() if k != "account_id"}
    if hold.user_id is not None:
        fields.pop("user_id", None)
    return fields


def held_charge(charge: Mapping[str, Any], hold: Hold) -> dict[str, Any]:
    """The charge as recorded without its reservation (it was released first): under the hold's account."""
    fields = {**charge, "account_id": hold.account_id}
    if hold.user_id is not None:
        fields["user_id"] = hold.user_id
    return fields


def prompt_guess(data: Mapping[str, Any]) -> int:
    """A generous guess of the prompt's tokens from its text: messages, ``input`` or ``prompt``."""
    chars = sum(len(text) for text in _texts(data.get("messages") or data.get("input") or data.get("prompt")))
    return chars // CHARS_PER_TOKEN + PROMPT_OVERHEAD_TOKENS


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [text for v in value.values() for text in _texts(v)]
    if isinstance(value, (list, tuple)):
        return [text for v in value for text in _texts(v)]
    return []


def max_tokens_of(data: Mapping[str, Any], default: int) -> int:
    for name in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        value = data.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return default


def price_of(table: PriceTable | None, model: str | None, provider: str | None) -> Price | None:
    """The catalogue price for the model now: its provider's, else the dearest of any provider's."""
    if table is None or not model:
        return None
    provider, model = _split(model, provider)
    now_prices = table.current()
    exact = [p for p in now_prices if p.model == model and p.provider == provider and p.charge_type in (None, "completion")]
    named = exact or [p for p in now_prices if p.model == model and p.charge_type in (None, "completion")]
    return max(named, key=lambda p: (p.completion_micros_per_million, p.prompt_micros_per_million), default=None)


def _split(model: str, provider: str | None) -> tuple[str | None, str]:
    """``"anthropic/claude-…"`` names its provider; LiteLLM reports the model without it."""
    if provider is None and "/" in model:
        head, tail = model.split("/", 1)
        return head, tail
    return provider, model


def estimate(data: Mapping[str, Any], table: PriceTable | None, *, default_max_tokens: int,
             default_micros: int) -> Estimate:
    """The most the call can cost, by the catalogue; ``default_micros`` when the model has no price."""
    prompt = prompt_guess(data)
    completion = max_tokens_of(data, default_max_tokens)
    price = price_of(table, data.get("model"), data.get("custom_llm_provider"))
    if price is None:
        return Estimate(default_micros, prompt + completion)
    micros = price.cost_micros(prompt, completion, prompt + completion) + 1  # rounding never under-holds
    return Estimate(max(micros, 1), prompt + completion)


class Holds:
    """The reservations made for calls in flight, by call id (thread-safe; stale ones forgotten)."""

    def __init__(self, ttl_seconds: int) -> None:
        self.ttl_seconds = ttl_seconds
        self._holds: dict[str, Hold] = {}
        self._lock = threading.Lock()

    def add(self, hold: Hold) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._holds) > 1000:
                for rid in [rid for rid, h in self._holds.items() if now - h.made_at > self.ttl_seconds]:
                    del self._holds[rid]
            self._holds[hold.reservation_id] = hold

    def take(self, call_id: str | None) -> Hold | None:
        if call_id is None:
            return None
        with self._lock:
            return self._holds.pop(call_id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._holds)


Estimator = Callable[[Mapping[str, Any]], int]
