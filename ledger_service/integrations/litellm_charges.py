"""A LiteLLM call as the ledger's charge: who it is for, and its facts.

LiteLLM hands a callback the call's ``kwargs`` (with its
``standard_logging_object``) and the response; the proxy's pre-call hook
gets the request's ``data`` and the key (``UserAPIKeyAuth``). Both are read
here into one :class:`CallIdentity`, so the account and the user resolve by
the same rules before a call (to reserve) and after it (to charge).

Nothing here imports LiteLLM: these are plain dictionaries and attributes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

#: The metadata key that names the account, by default.
ACCOUNT_KEY = "ledger_account_id"

#: Where an account may come from, in the order a caller lists them (``account_from=``).
ACCOUNT_SOURCES = ("metadata", "key", "team", "end_user", "user")
DEFAULT_ACCOUNT_FROM = ("metadata", "team", "end_user")

#: LiteLLM call types charged as ``completion``; any other call type is charged as ``usage``.
COMPLETION_CALL_TYPES = frozenset({
    "completion", "acompletion", "text_completion", "atext_completion", "responses", "aresponses",
    "anthropic_messages", "generate_content", "agenerate_content",
})


@dataclass(frozen=True)
class CallIdentity:
    """Who a call is for, as LiteLLM knows it.

    ``metadata`` is the caller's own metadata: ``litellm.completion(metadata=...)``,
    or on the proxy the request body's ``metadata`` (``requester_metadata``),
    which the caller writes. ``key_metadata`` is the proxy key's metadata, which
    only the proxy's admin sets. ``user`` is the call's OpenAI ``user`` field.
    """

    metadata: Mapping[str, Any] = field(default_factory=dict)
    key_metadata: Mapping[str, Any] = field(default_factory=dict)
    team_id: str | None = None
    key_user_id: str | None = None
    end_user: str | None = None
    user: str | None = None


AccountFrom = Callable[[CallIdentity], "str | None"]
UserFrom = Callable[[CallIdentity], "str | None"]


def account_resolver(account_from: Sequence[str] | str | AccountFrom | None, key: str = ACCOUNT_KEY) -> AccountFrom:
    """The function that names a call's account: ``account_from`` itself, or its sources tried in order."""
    if callable(account_from):
        return account_from
    sources = DEFAULT_ACCOUNT_FROM if account_from is None else (
        (account_from,) if isinstance(account_from, str) else tuple(account_from))
    unknown = [name for name in sources if name not in ACCOUNT_SOURCES]
    if unknown or not sources:
        raise ValueError(f"account_from: unknown source {', '.join(map(repr, unknown)) or '(none given)'}; "
                         f"expected a callable or names among {', '.join(ACCOUNT_SOURCES)}")

    def resolve(identity: CallIdentity) -> str | None:
        for source in sources:
            value = _source(identity, source, key)
            if value:
                return value
        return None

    return resolve


def _source(identity: CallIdentity, source: str, key: str) -> str | None:
    if source == "metadata":
        return _text(identity.metadata.get(key))
    if source == "key":
        return _text(identity.key_metadata.get(key))
    if source == "team":
        return identity.team_id
    if source == "end_user":
        return identity.end_user
    return identity.user


def default_user(identity: CallIdentity) -> str | None:
    """The call's ``user`` argument, else the proxy key's user, else the end user."""
    return identity.user or identity.key_user_id or identity.end_user


def logged_identity(kwargs: Mapping[str, Any]) -> CallIdentity:
    """The identity of a logged call (a success or failure callback's ``kwargs``)."""
    logged = _mapping(kwargs.get("standard_logging_object"))
    params = _mapping(kwargs.get("litellm_params"))
    metadata = _mapping(params.get("metadata"))
    logged_metadata = _mapping(logged.get("metadata"))
    requester = _mapping(metadata.get("requester_metadata")) or _mapping(logged_metadata.get("requester_metadata"))
    both = {**logged_metadata, **{k: v for k, v in metadata.items() if v is not None}}
    return CallIdentity(
        metadata={**metadata, **requester},
        key_metadata=_mapping(both.get("user_api_key_auth_metadata")) or _mapping(both.get("user_api_key_metadata")),
        team_id=_text(both.get("user_api_key_team_id")),
        key_user_id=_text(both.get("user_api_key_user_id")),
        end_user=_text(logged.get("end_user")) or _text(both.get("user_api_key_end_user_id")),
        user=_text(kwargs.get("user")) or _text(params.get("user"))
        or _text(_mapping(logged.get("model_parameters")).get("user")),
    )


def request_identity(data: Mapping[str, Any], key: Any) -> CallIdentity:
    """The identity of a proxy request before the call: its ``data`` and its ``UserAPIKeyAuth``."""
    metadata = _mapping(data.get("metadata")) or _mapping(data.get("litellm_metadata"))
    requester = _mapping(metadata.get("requester_metadata"))
    return CallIdentity(
        metadata={**metadata, **requester},
        key_metadata=_mapping(getattr(key, "metadata", None)) or _mapping(metadata.get("user_api_key_auth_metadata")),
        team_id=_text(getattr(key, "team_id", None)) or _text(metadata.get("user_api_key_team_id")),
        key_user_id=_text(getattr(key, "user_id", None)) or _text(metadata.get("user_api_key_user_id")),
        end_user=_text(getattr(key, "end_user_id", None)) or _text(metadata.get("user_api_key_end_user_id")),
        user=_text(data.get("user")),
    )


@dataclass(frozen=True)
class LoggedCall:
    """What a success callback tells of one call, before its account is known."""

    call_id: str | None
    charge: dict[str, Any]
    cache_hit: bool


def logged_call(kwargs: Mapping[str, Any], response: Any, start_time: Any) -> LoggedCall:
    """The charge fields of a successful call (all but the account and user).

    The charge id is the response's id (the same response logged again is
    the same charge), else LiteLLM's call id; ``occurred_at`` is the
    response's ``created`` time when it has one (stable across re-logging),
    else the call's start. LiteLLM's own cost goes into ``reference``.
    """
    logged = _mapping(kwargs.get("standard_logging_object"))
    call_id = _text(logged.get("litellm_call_id")) or _text(kwargs.get("litellm_call_id"))
    usage = _usage(logged, response)
    charge: dict[str, Any] = {
        "charge_type": charge_type_of(_text(logged.get("call_type")) or _text(kwargs.get("call_type"))),
        "provider": _text(logged.get("custom_llm_provider")) or _text(kwargs.get("custom_llm_provider")),
        "model": _text(logged.get("model")) or _text(kwargs.get("model")),
        "prompt_tokens": usage[0],
        "completion_tokens": usage[1],
        "charge_id": _text(logged.get("id")) or _text(_field(response, "id")) or call_id,
        "occurred_at": occurred_at(response, logged, start_time),
        "reference": cost_reference(logged.get("response_cost", kwargs.get("response_cost"))),
    }
    return LoggedCall(call_id, {k: v for k, v in charge.items() if v is not None}, bool(logged.get("cache_hit")))


def charge_type_of(call_type: str | None) -> str:
    """``completion`` for chat and text generation, ``usage`` for the rest (embeddings, images, ...)."""
    return "completion" if call_type is None or call_type in COMPLETION_CALL_TYPES else "usage"


def occurred_at(response: Any, logged: Mapping[str, Any], start_time: Any) -> str | None:
    """ISO 8601 in UTC: the response's ``created`` seconds, else the logged start, else the callback's."""
    created = _field(response, "created")
    if isinstance(created, int) and not isinstance(created, bool) and created > 0:
        return datetime.fromtimestamp(created, UTC).isoformat()
    started = logged.get("startTime")
    if isinstance(started, (int, float)) and not isinstance(started, bool) and started > 0:
        return datetime.fromtimestamp(started, UTC).isoformat()
    if isinstance(start_time, datetime):  # LiteLLM's is naive local time
        aware = start_time if start_time.tzinfo else start_time.astimezone()
        return aware.astimezone(UTC).isoformat()
    return None


def cost_reference(response_cost: Any) -> str | None:
    """LiteLLM's cost of the call in micro-units, as text for ``reference``; None when it has none.

    Only for comparison: the ledger costs the charge from its own catalogue.
    """
    if response_cost is None or isinstance(response_cost, bool):
        return None
    try:
        micros = (Decimal(str(response_cost)) * 1_000_000).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    except (InvalidOperation, ValueError):
        return None
    return f"litellm_response_cost_micros={int(micros)}"


def _usage(logged: Mapping[str, Any], response: Any) -> tuple[int, int]:
    prompt, completion = logged.get("prompt_tokens"), logged.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        usage = _field(response, "usage")
        prompt, completion = _field(usage, "prompt_tokens"), _field(usage, "completion_tokens")
    return _count(prompt), _count(completion)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _field(thing: Any, name: str) -> Any:
    if thing is None:
        return None
    if isinstance(thing, Mapping):
        return thing.get(name)
    return getattr(thing, name, None)


def _mapping(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _text(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None
