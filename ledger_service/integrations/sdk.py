"""Charges from the OpenAI and Anthropic SDKs' responses (docs/integrations/sdk.md).

``charge_fields(response, account_id=...)`` reads a response the platform
already holds and returns the keyword arguments of ``Ledger.record_charge``:
the response's id is the charge id, so recording the same response again
counts once. It duck-types on the response's ``object`` (OpenAI) or ``type``
(Anthropic) field and reads SDK objects and plain dicts of the same JSON
alike, so neither SDK is imported here.

The ledger counts input and output tokens only (``ledger.measures``), and a
price has one input rate: every input token a provider billed is a prompt
token, cached or not. OpenAI's ``prompt_tokens`` (``input_tokens``) already
include cached tokens; Anthropic's ``input_tokens`` leave out
``cache_read_input_tokens`` and ``cache_creation_input_tokens``, so the
prompt tokens are their sum (as LiteLLM counts them). The cache breakdown is
kept in ``reference`` (``cache_read_tokens=N cache_write_tokens=M``) for
reconciliation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ledger.errors import InvalidInput

#: OpenAI Responses API stream events that carry the finished response and its usage.
RESPONSE_DONE_EVENTS = ("response.completed", "response.incomplete")


class UnreadableResponse(InvalidInput):
    """The response is not a shape the helpers read, or lacks what a charge needs."""

    what = "SDK response"


@dataclass(frozen=True, slots=True)
class Usage:
    """What one provider response says was billed, in the ledger's terms."""

    charge_id: str
    provider: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    created: datetime | None
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


def charge_fields(
    response: Any,
    *,
    account_id: str,
    user_id: str | None = None,
    charge_type: str = "completion",
    occurred_at: datetime | str | None = None,
    provider: str | None = None,
    reference: str | None = None,
) -> dict[str, Any]:
    """The ``record_charge`` keyword arguments for one SDK response.

    ``response``: an OpenAI chat completion, its final streamed chunk (the one
    with usage), a Responses API response or its ``response.completed``
    event; an Anthropic message (``stream.get_final_message()`` included), or
    the list of a raw Anthropic stream's events. ``occurred_at`` defaults to
    the response's creation time; Anthropic messages carry none, so it is left
    to the ledger (the time of recording, which a retry does not change).
    ``provider`` names an OpenAI-compatible service other than OpenAI;
    ``reference`` replaces the cache breakdown. Raises
    :class:`UnreadableResponse` naming what is missing; never a zero charge.
    """
    usage = read_usage(response)
    fields: dict[str, Any] = {"account_id": account_id}
    if user_id is not None:
        fields["user_id"] = user_id
    fields.update(
        charge_type=charge_type,
        provider=provider or usage.provider,
        model=usage.model,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.prompt_tokens + usage.completion_tokens,
        charge_id=usage.charge_id,
    )
    when = occurred_at or usage.created
    if when is not None:
        fields["occurred_at"] = when
    note = reference if reference is not None else cache_note(usage)
    if note:
        fields["reference"] = note
    return fields


def cache_note(usage: Usage) -> str | None:
    """The cache breakdown kept with the charge, or None when nothing was cached."""
    parts = []
    if usage.cache_read_tokens:
        parts.append(f"cache_read_tokens={usage.cache_read_tokens}")
    if usage.cache_write_tokens:
        parts.append(f"cache_write_tokens={usage.cache_write_tokens}")
    return " ".join(parts) or None


def read_usage(response: Any) -> Usage:
    """Dispatch on the response's shape; unknown shapes name what was expected."""
    if isinstance(response, (list, tuple)):
        return _read_events(response)
    kind = _get(response, "object")
    if kind is None:
        kind = _get(response, "type")
    reader = _READERS.get(kind) if isinstance(kind, str) else None
    if reader is None and isinstance(kind, str) and kind.startswith("response."):
        reader = _read_response_event
    if reader is None:
        raise UnreadableResponse({
            "response": (
                f"not a response these helpers read (object/type {kind!r}, a "
                f"{type(response).__name__}); expected an OpenAI chat.completion, "
                "chat.completion.chunk or response, an Anthropic message, or a list of stream events"
            )
        })
    return reader(response)


# -- OpenAI -----------------------------------------------------------------------------


def _read_chat(response: Any) -> Usage:
    """A chat completion, or a streamed chunk (the last one carries usage when asked to)."""
    usage = _get(response, "usage")
    if usage is None:
        hint = (
            ": only the last chunk of a stream created with "
            "stream_options={'include_usage': True} carries it"
            if _get(response, "object") == "chat.completion.chunk"
            else ""
        )
        raise _missing("response.usage", f"the {_get(response, 'object')} carries no usage{hint}")
    details = _get(usage, "prompt_tokens_details")
    return Usage(
        charge_id=_text(response, "id"),
        provider="openai",
        model=_text(response, "model"),
        prompt_tokens=_tokens(usage, "usage.prompt_tokens"),
        completion_tokens=_tokens(usage, "usage.completion_tokens"),
        created=_timestamp(response, "created"),
        cache_read_tokens=_tokens(details, "usage.prompt_tokens_details.cached_tokens", default=0),
        cache_write_tokens=_tokens(details, "usage.prompt_tokens_details.cache_write_tokens", default=0),
    )


def _read_response(response: Any) -> Usage:
    """A Responses API response (``client.responses.create`` or ``get_final_response()``)."""
    usage = _get(response, "usage")
    if usage is None:
        status = _get(response, "status")
        raise _missing("response.usage", f"the response (status {status!r}) carries no usage")
    details = _get(usage, "input_tokens_details")
    return Usage(
        charge_id=_text(response, "id"),
        provider="openai",
        model=_text(response, "model"),
        prompt_tokens=_tokens(usage, "usage.input_tokens"),
        completion_tokens=_tokens(usage, "usage.output_tokens"),
        created=_timestamp(response, "created_at"),
        cache_read_tokens=_tokens(details, "usage.input_tokens_details.cached_tokens", default=0),
        cache_write_tokens=_tokens(details, "usage.input_tokens_details.cache_write_tokens", default=0),
    )


def _read_response_event(event: Any) -> Usage:
    """A Responses stream event: only the finished ones carry usage."""
    kind = _get(event, "type")
    if kind not in RESPONSE_DONE_EVENTS:
        raise _missing(
            "response.usage",
            f"a {kind} event carries no usage; pass the {' or '.join(RESPONSE_DONE_EVENTS)} event "
            "or stream.get_final_response()",
        )
    return _read_response(_need(event, "response", "response.response"))


# -- Anthropic --------------------------------------------------------------------------


def _read_message(message: Any) -> Usage:
    """An Anthropic message: every billed input token (fresh, read from and written to the cache).

    A usage that lists ``iterations`` (the beta API's server-side tool loops,
    compaction, advisor and fallback models) counts their sums: a compaction
    iteration is not in the top-level fields. Each figure is never less than
    the top-level one.
    """
    usage = _get(message, "usage")
    if usage is None:
        raise _missing("response.usage", "the message carries no usage")
    fresh, read, written, output = _anthropic_counts(usage, "usage")
    iterations = _get(usage, "iterations")
    if iterations:
        if not isinstance(iterations, (list, tuple)):
            raise UnreadableResponse({"response.usage.iterations": f"expected a list, got {iterations!r}"})
        summed = [0, 0, 0, 0]
        for index, iteration in enumerate(iterations):
            counts = _anthropic_counts(iteration, f"usage.iterations[{index}]")
            summed = [total + count for total, count in zip(summed, counts)]
        if sum(summed[:3]) > fresh + read + written:
            fresh, read, written = summed[:3]
        output = max(output, summed[3])
    return Usage(
        charge_id=_text(message, "id"),
        provider="anthropic",
        model=_text(message, "model"),
        prompt_tokens=fresh + read + written,
        completion_tokens=output,
        created=None,
        cache_read_tokens=read,
        cache_write_tokens=written,
    )


def _anthropic_counts(usage: Any, path: str) -> tuple[int, int, int, int]:
    """(fresh input, cache read, cache written, output) of a usage or one of its iterations."""
    return (
        _tokens(usage, f"{path}.input_tokens"),
        _tokens(usage, f"{path}.cache_read_input_tokens", default=0),
        _tokens(usage, f"{path}.cache_creation_input_tokens", default=0),
        _tokens(usage, f"{path}.output_tokens"),
    )


def _read_stream_event(event: Any) -> Usage:
    """One raw Anthropic stream event holds half the usage: ask for the whole stream."""
    raise _missing(
        "response",
        f"a lone {_get(event, 'type')} event holds only part of the usage (message_start the input, "
        "message_delta the output); pass stream.get_final_message() or the list of the stream's events",
    )


def fold_message_events(events: Sequence[Any]) -> dict[str, Any]:
    """The message a raw Anthropic stream describes: message_start, updated by message_delta.

    message_delta's usage is cumulative, and its input and cache counts,
    when present, supersede message_start's.
    """
    message: dict[str, Any] | None = None
    finished = False
    for event in events:
        kind = _get(event, "type")
        if kind == "message_start":
            start = _need(event, "message", "message_start.message")
            message = {
                "type": "message",
                "id": _get(start, "id"),
                "model": _get(start, "model"),
                "usage": _usage_dict(_get(start, "usage")),
            }
        elif kind == "message_delta" and message is not None:
            delta = _need(event, "usage", "message_delta.usage")
            message["usage"].update(
                {name: value for name, value in _usage_dict(delta).items() if value is not None}
            )
            finished = True
    if message is None:
        raise _missing("events", "no message_start event (it carries the message id, model and input usage)")
    if not finished:
        raise _missing(
            "events", "no message_delta event: the stream did not finish, so its output usage is unknown"
        )
    return message


def _usage_dict(usage: Any) -> dict[str, Any]:
    names = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens", "iterations")
    return {name: _get(usage, name) for name in names}


# -- streams ----------------------------------------------------------------------------


def _read_events(events: Sequence[Any]) -> Usage:
    """A stream's events, in order: Anthropic's folded, else the last one carrying usage."""
    if not events:
        raise _missing("events", "the list of stream events is empty")
    if any(_get(event, "type") == "message_start" for event in events):
        return _read_message(fold_message_events(events))
    for event in reversed(events):
        if _get(event, "usage") is not None or _get(event, "type") in RESPONSE_DONE_EVENTS:
            return read_usage(event)
    raise _missing(
        "events",
        "no event carries usage (an OpenAI chat stream needs stream_options={'include_usage': True})",
    )


_READERS = {
    "chat.completion": _read_chat,
    "chat.completion.chunk": _read_chat,
    "response": _read_response,
    "message": _read_message,
    "message_start": _read_stream_event,
    "message_delta": _read_stream_event,
}


# -- reading fields of SDK objects and dicts alike ----------------------------------------


def _get(obj: Any, name: str) -> Any:
    """A field of a dict or an attribute of an SDK object (None when absent)."""
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _need(obj: Any, name: str, path: str) -> Any:
    value = _get(obj, name)
    if value is None:
        raise _missing(path, "missing")
    return value


def _text(obj: Any, name: str) -> str:
    value = _need(obj, name, f"response.{name}")
    if not isinstance(value, str) or not value:
        raise UnreadableResponse({f"response.{name}": f"expected a non-empty string, got {value!r}"})
    return value


def _tokens(obj: Any, path: str, default: int | None = None) -> int:
    """A token count: a non-negative integer (absent: ``default``, or an error when none)."""
    value = _get(obj, path.rsplit(".", 1)[-1])
    if value is None:
        if default is None:
            raise _missing(f"response.{path}", "missing")
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UnreadableResponse({f"response.{path}": f"expected a non-negative integer, got {value!r}"})
    return value


def _timestamp(obj: Any, name: str) -> datetime | None:
    """Unix seconds as a UTC datetime; absent: None (the ledger then takes the time of recording)."""
    value = _get(obj, name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UnreadableResponse({f"response.{name}": f"expected unix seconds, got {value!r}"})
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        raise UnreadableResponse({f"response.{name}": f"out of range: {value!r}"}) from None


def _missing(path: str, why: str) -> UnreadableResponse:
    return UnreadableResponse({path: why})
