"""The API's shapes, for the OpenAPI document and for what handlers return.

Request bodies are validated by the ledger itself (so every bad field gets
the ledger's own message); their schemas here document what it accepts.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, create_model

from ledger.charge_fields import SPECS, ChargeField
from ledger_service.http.problems import MEDIA_TYPE


class FieldError(BaseModel):
    field: str = Field(description="The bad field, e.g. prompt_tokens, charges[3].model, events[0].data.tokens.")
    detail: str


class ProblemBody(BaseModel):
    """RFC 9457 problem details."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[FieldError] | None = None


#: The longest text the API documents for a charge, in characters (the ledger's default limits).
MAX_TEXT = 256
MAX_REFERENCE = 1024
#: What the API adds to a field's description.
_HTTP_NOTES = {"account_id": " Defaults to an ingest key's account."}


def _charge_field(spec: ChargeField) -> tuple[Any, Any]:
    """A charge field as the API documents it: its type, optional unless required, with its limits.

    Tokens and user profiles are non-negative; text is at most :data:`MAX_TEXT` characters
    (:data:`MAX_REFERENCE` for ``reference``), except ``charge_type``, which is one of the configured names.
    """
    limits: dict[str, int] = {}
    if spec.type is int:
        limits["ge"] = 0
    elif spec.type is str and spec.name != "charge_type":
        limits["max_length"] = MAX_REFERENCE if spec.name == "reference" else MAX_TEXT
    description = spec.description + _HTTP_NOTES.get(spec.name, "")
    if spec.required:
        return spec.type, Field(description=description, **limits)
    return Optional[spec.type], Field(None, description=description, **limits)  # noqa: UP045 - a runtime type


#: A charge: every field of :mod:`ledger.charge_fields`, in its order (documentation only: the ledger validates).
ChargeIn: type[BaseModel] = create_model(
    "ChargeIn",
    __config__=ConfigDict(extra="forbid"),
    __doc__="""A charge: the fields of ``record_charge``. An account is required (or a user profile to resolve it).

    Text may not contain control characters (tab and newline included), lone surrogates or unassigned
    code points; ids (account_id, user_id, charge_id) may not contain invisible or direction-control
    characters (U+200B-U+200F, U+202A-U+202E, U+2066-U+2069, U+FEFF) either. Each refusal names the field
    and the character.
    """,
    **{name: _charge_field(spec) for name, spec in SPECS.items()},
)


class ReversalIn(BaseModel):
    """The account names the charge (ids are unique per account): required unless the key is scoped."""

    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(None, max_length=1024)
    account_id: str | None = Field(None, max_length=256)


class ReceiptOut(BaseModel):
    """Proof a charge is stored (durable when answered)."""

    charge_id: str
    account_id: str
    duplicate: bool
    recorded_at: datetime | None
    cost_micros: int | None
    price_version: int | None


class ReversalOut(BaseModel):
    """Proof a charge was reversed (durable when answered): what it takes back, and why."""

    charge_id: str
    account_id: str
    reversed_at: datetime
    reason: str
    cost_micros: int | None
    price_version: int | None


class OutcomeOut(BaseModel):
    index: int
    status: Literal["recorded", "duplicate", "invalid", "conflict", "failed"]
    receipt: ReceiptOut | None = None
    errors: list[FieldError] | None = None


class BatchOut(BaseModel):
    outcomes: list[OutcomeOut]
    recorded: int
    duplicates: int
    rejected: int


class TotalsOut(BaseModel):
    """An account's running totals, net of reversals."""

    account_id: str
    charges: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_micros: int
    unpriced_charges: int


class UsageRow(BaseModel):
    """A daily billing record, summed over what is not grouped by (those keys are null)."""

    account_id: str | None
    user_id: str | None
    billing_date: date | None
    charge_type: str | None
    provider: str | None
    model: str | None
    charges: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_micros: int
    unpriced_charges: int


class UsagePage(BaseModel):
    data: list[UsageRow]
    offset: int
    limit: int
    next_offset: int | None = Field(description="Offset of the next page; null on the last.")
    billing_tz: str


class HealthOut(BaseModel):
    status: Literal["ok", "unavailable"]
    database: Literal["ok", "unreachable"]


def problem(description: str) -> dict[str, Any]:
    """An OpenAPI response entry for a problem."""
    return {"description": description, "model": ProblemBody,
            "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/ProblemBody"}}}}


def json_body(schema: dict[str, Any], *media_types: str, required: bool = True) -> dict[str, Any]:
    """``openapi_extra`` documenting a request body the handler reads itself."""
    return {"requestBody": {"required": required,
                            "content": {m: {"schema": schema} for m in (media_types or ("application/json",))}}}


AUTH_PROBLEMS = {401: problem("No key, or an unknown or revoked one (whatever the body: checked first)."),
                 403: problem("The key's role or account does not cover this request.")}
BODY_PROBLEMS = {400: problem("The body is not valid JSON."),
                 413: problem("The body or the batch is too large."),
                 415: problem("Wrong content type.")}
