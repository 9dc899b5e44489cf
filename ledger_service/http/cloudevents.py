"""CloudEvents in OpenMeter's shape, as charges.

- ``subject`` is the account; ``time`` is ``occurred_at`` (absent: now);
- ``source`` and ``id`` make the charge id ``"{source}:{id}"`` (or, when that
  is longer than a charge id may be, ``"ce-sha256:"`` and the digest of the
  pair), so a resent event is a duplicate, counted once;
- ``data`` fields named like charge fields map by name: ``prompt_tokens``,
  ``completion_tokens``, ``total_tokens``, ``model``, ``provider``,
  ``user_id``, ``charge_type``, ``reference``, ``session_key``;
- OpenMeter's LLM shape ``{"tokens": N, "type": "input" | "output", "model": ...}``
  gives ``prompt_tokens`` (input) or ``completion_tokens`` (output);
- the charge type is ``data.charge_type``, else the event's ``type`` when it
  is a charge type of the ledger, else ``completion``. Other ``data`` fields
  are ignored, as a meter ignores what it does not aggregate.

Errors name the event's own fields (``subject``, ``time``, ``id``,
``data.prompt_tokens`` ...), never the charge's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from typing import Any

from ledger.text import text_problem

#: data fields taken as the charge field of the same name.
DATA_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens", "model", "provider", "user_id",
               "charge_type", "reference", "session_key")
#: OpenMeter's LLM token shape: data.type -> the charge field data.tokens fills.
TOKEN_TYPES = {"input": "prompt_tokens", "output": "completion_tokens"}
DEFAULT_CHARGE_TYPE = "completion"
#: Envelope fields checked here as text: (source, id) make the charge id, which may be a
#: digest of them, so they are checked as ids themselves; ``type`` only picks the charge type.
ENVELOPE_TEXT = {"id": True, "source": True, "type": False}
#: Where each charge field came from in the event, for error messages.
ORIGIN = {"account_id": "subject", "occurred_at": "time", "charge_id": "id"}


def charge_id(source: str, event_id: str, max_length: int = 256) -> str:
    """The charge id of an event: readable when it fits, a digest of the pair otherwise."""
    readable = f"{source}:{event_id}"
    if len(readable) <= max_length:
        return readable
    return "ce-sha256:" + hashlib.sha256(f"{len(source)}:{source}{event_id}".encode()).hexdigest()


def to_charge(event: Any, charge_types: Collection[str], max_length: int = 256) -> tuple[dict[str, Any], dict[str, str]]:
    """The charge fields of one event, and the event's bad fields (field path -> why)."""
    if not isinstance(event, Mapping):
        return {}, {"event": f"expected a CloudEvent object, got {type(event).__name__}"}
    errors: dict[str, str] = {}
    if event.get("specversion") != "1.0":
        errors["specversion"] = "must be \"1.0\""
    for name in ("id", "source", "type", "subject"):
        value = event.get(name)
        if not isinstance(value, str) or not value.strip():
            errors[name] = "required: a non-empty string"
        elif name in ENVELOPE_TEXT and (problem := text_problem(value, identifier=ENVELOPE_TEXT[name])):
            errors[name] = problem
    data = event.get("data")
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        errors["data"] = "must be a JSON object"
        data = {}
    datacontenttype = event.get("datacontenttype")
    if datacontenttype is not None and datacontenttype != "application/json":
        errors["datacontenttype"] = "only application/json data is accepted"
    if errors:
        return {}, errors
    fields: dict[str, Any] = {name: data[name] for name in DATA_FIELDS if name in data}
    _token_shape(data, fields, errors)
    if "charge_type" not in fields:
        fields["charge_type"] = event["type"] if event["type"] in charge_types else DEFAULT_CHARGE_TYPE
    fields["account_id"] = event["subject"]
    fields["charge_id"] = charge_id(event["source"], event["id"], max_length)
    if event.get("time") is not None:
        fields["occurred_at"] = event["time"]
    return fields, errors


def _token_shape(data: Mapping[str, Any], fields: dict[str, Any], errors: dict[str, str]) -> None:
    """OpenMeter's ``{"tokens": N, "type": "input" | "output"}``."""
    if "tokens" not in data:
        return
    kind = data.get("type")
    target = TOKEN_TYPES.get(kind) if isinstance(kind, str) else None
    if target is None:
        errors["data.type"] = f"with data.tokens, must be one of {', '.join(TOKEN_TYPES)}"
        return
    if target in fields:
        errors["data.tokens"] = f"give data.tokens or data.{target}, not both"
        return
    fields[target] = data["tokens"]


def event_field(charge_field: str) -> str:
    """The event field a charge field came from."""
    if charge_field in ORIGIN:
        return ORIGIN[charge_field]
    if charge_field == "charge":
        return "event"
    return f"data.{charge_field}"
