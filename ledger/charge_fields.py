"""The one definition of a charge's input fields: names, order, types and meaning.

Every surface that takes a charge (``Ledger.record_charge``, the HTTP
schema, ``ledger record``'s options, the ``create_charge`` task, import
columns) and the events that store one derive their field lists from here,
or are checked against it by ``tests/unit/test_charge_fields.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class ChargeField:
    """One input field: its Python type, whether a caller must give it, and what it means.

    ``nullable`` says whether a validated charge may hold None for it (the
    others are defaulted or resolved by validation).
    """

    name: str
    type: type
    required: bool
    nullable: bool
    description: str

    @property
    def annotation(self) -> str:
        """Its type as a validated charge (and its event) holds it, e.g. ``"str | None"``."""
        return f"{self.type.__name__} | None" if self.nullable else self.type.__name__


_SPECS = (
    ChargeField("account_id", str, False, False, "Account billed (or give user_profile_id to resolve it)."),
    ChargeField("user_id", str, False, False, "User within the account."),
    ChargeField("charge_type", str, True, False, "completion, plugin, tool, usage, subscription, or as configured."),
    ChargeField("provider", str, False, True, "Model provider (absent: unspecified)."),
    ChargeField("model", str, False, True, "Model name (absent: unspecified)."),
    ChargeField("prompt_tokens", int, False, False, "Tokens in the prompt (default 0)."),
    ChargeField("completion_tokens", int, False, False, "Tokens in the completion (default 0)."),
    ChargeField("total_tokens", int, False, False, "Defaults to prompt + completion."),
    ChargeField("charge_id", str, False, False, "Idempotency key (default: a new UUID)."),
    ChargeField("occurred_at", datetime, False, False, "When the call happened, ISO 8601 with a zone (default now)."),
    ChargeField("reference", str, False, True, "Free text kept with the charge (a request id, say)."),
    ChargeField("session_key", str, False, True, "The caller's session, kept with the charge."),
    ChargeField("user_profile_id", int, False, True, "Seed-style user profile; resolves the account."),
)

#: Every field by name.
SPECS: dict[str, ChargeField] = {spec.name: spec for spec in _SPECS}

#: The fields ``Ledger.record_charge`` takes, in the order every surface lists them.
CHARGE_FIELDS: tuple[str, ...] = tuple(SPECS)

#: The seed's ``create_charge`` task's positional order.
SEED_FIELDS: tuple[str, ...] = (
    "user_profile_id",
    "session_key",
    "provider",
    "charge_type",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "model",
    "reference",
)

#: The fields billing adds to the seed's (keyword-only on the task).
BILLING_FIELDS: tuple[str, ...] = ("account_id", "user_id", "charge_id", "occurred_at")

#: Every input field, the seed's first: the order error messages list them in.
INPUT_FIELDS: tuple[str, ...] = SEED_FIELDS + BILLING_FIELDS

#: A ChargeRecorded event's fields, in the order its state is written.
RECORDED_EVENT_FIELDS: tuple[str, ...] = (
    "charge_id", "account_id", "user_id", "charge_type", "provider", "model",
    "prompt_tokens", "completion_tokens", "total_tokens", "occurred_at", "recorded_at",
    "user_profile_id", "session_key", "reference", "cost_micros", "price_version",
)

#: A ChargeReversed event's fields: the charge's facts that totals and projections need.
REVERSED_EVENT_FIELDS: tuple[str, ...] = (
    "charge_id", "reason", "account_id", "user_id", "charge_type", "provider", "model",
    "prompt_tokens", "completion_tokens", "total_tokens", "occurred_at", "recorded_at",
    "cost_micros", "price_version",
)

#: What events carry beyond a charge's input fields, and their types.
_EVENT_ONLY = {
    "recorded_at": "datetime",
    "reason": "str",
    "cost_micros": "int | None",
    "price_version": "int | None",
}

#: Event fields a stored event may lack (written before they existed).
EVENT_DEFAULTS: dict[str, None] = {"cost_micros": None, "price_version": None}


def event_annotations(names: tuple[str, ...]) -> dict[str, str]:
    """Type annotations of an event's fields, for the event classes in :mod:`ledger.domain`."""
    return {name: _EVENT_ONLY[name] if name in _EVENT_ONLY else SPECS[name].annotation for name in names}
