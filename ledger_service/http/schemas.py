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


class StandbyOut(BaseModel):
    """A standby streaming from the primary (its address is left out: this endpoint needs no key)."""

    name: str = Field(description="Its application_name.")
    state: str | None = Field(description="streaming, catchup, ...; null when hidden from the ledger's role.")
    sync_state: str | None = Field(description="sync or quorum: commits wait for it; async or potential: they do not.")
    replay_lag_seconds: float | None
    replay_lag_bytes: int | None = Field(description="WAL the primary wrote that the standby has not replayed.")


class ReadsOut(BaseModel):
    source: Literal["primary", "standby", "read database"] = Field(
        description="Where reports, usage and the dashboard read from (LEDGER_READ_DATABASE_URL).")
    lag_seconds: float | None
    lag_bytes: int | None
    status: Literal["ok", "unreachable"]
    summary: str = Field(description='e.g. "reads from a standby, 2.5 s behind".')


class ReplicationOut(BaseModel):
    store: Literal["postgresql", "sqlite"]
    role: Literal["primary", "standby", "embedded", "unknown"] = Field(
        description="What the server the ledger writes to is; embedded: SQLite, a single file.")
    safe: bool = Field(description="An acknowledged charge survives the loss of the primary.")
    verdict: str = Field(description='"safe", "embedded, single file", or why a charge could be lost.')
    synchronous: bool = Field(description="Commits wait for a synchronous standby.")
    synchronous_commit: str | None
    synchronous_standby_names: str | None
    standbys_visible: bool = Field(description="The ledger's role may see the standbys' state (pg_monitor).")
    standbys: list[StandbyOut]
    reads: ReadsOut


class HealthOut(BaseModel):
    status: Literal["ok", "unavailable"]
    database: Literal["ok", "unreachable"]
    replication: ReplicationOut | None = Field(
        None, description="Whether charges are safe, and where reads come from; null when the database is unreachable.")


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


# -- budgets, reservations and credits ----------------------------------------------------


class BudgetIn(BaseModel):
    """A budget's definition (``PUT`` replaces it whole): exactly one of limit_micros, limit_tokens or
    ``"limit": "credits"`` (the account's prepaid balance). A field left out or null takes its default."""

    model_config = ConfigDict(extra="forbid")

    account_id: str = Field(max_length=MAX_TEXT, description="The account whose spend it bounds.")
    user_id: str | None = Field(None, max_length=MAX_TEXT, description="Only this user's spend [default: the whole account].")
    limit_micros: int | None = Field(None, ge=1, lt=10**15, description="The limit in cost micro-units.")
    limit_tokens: int | None = Field(None, ge=1, lt=10**15, description="The limit in tokens.")
    limit: Literal["credits"] | None = Field(None, description='"credits": the account\'s prepaid balance is the limit.')
    period: Literal["day", "month", "total"] | None = Field(
        None, description="Billing day, billing month or all time [default: month; total for credits].")
    mode: Literal["hard", "soft"] | None = Field(
        None, description="hard refuses reservations beyond the limit; soft only alerts [default: hard].")
    thresholds: list[int] | None = Field(
        None, max_length=20, description="Integer percents (1 to 1000) at which an alert fires once per period "
        "[default: 50, 80, 100].")


class BudgetFigures(BaseModel):
    """A budget's limit, spent, held and remaining, named in its unit: the ``_micros`` or the ``_tokens`` four."""

    limit_micros: int | None = None
    spent_micros: int | None = None
    held_micros: int | None = None
    remaining_micros: int | None = None
    limit_tokens: int | None = None
    spent_tokens: int | None = None
    held_tokens: int | None = None
    remaining_tokens: int | None = None


class BudgetOut(BudgetFigures):
    """A budget now: its definition and, in its unit (the ``_micros`` or the ``_tokens`` figures), the limit,
    spent, held and remaining (limit - spent - held, never below 0)."""

    budget_id: str
    account_id: str
    user_id: str | None
    period: Literal["day", "month", "total"]
    period_start: date | None = Field(description="First billing date of the current period; null for total.")
    mode: Literal["hard", "soft"]
    thresholds: list[int]
    limit: Literal["credits"] | None = Field(description='"credits" when the limit is the prepaid balance.')
    unit: Literal["micros", "tokens"]


class BudgetList(BaseModel):
    data: list[BudgetOut]


class ReservationIn(BaseModel):
    """What ``reserve`` takes: an estimate in the unit of the budgets in scope (either or both)."""

    model_config = ConfigDict(extra="forbid")

    account_id: str | None = Field(None, max_length=MAX_TEXT, description="Defaults to an ingest key's account.")
    user_id: str | None = Field(None, max_length=MAX_TEXT)
    estimate_micros: int | None = Field(None, ge=1, lt=10**15)
    estimate_tokens: int | None = Field(None, ge=1, lt=10**15)
    ttl_seconds: int | None = Field(None, ge=1, le=86_400, description="How long the hold lasts [default: 600].")
    reservation_id: str | None = Field(
        None, max_length=MAX_TEXT, description="Makes the call idempotent [default: a new id].")


class ReservationOut(BaseModel):
    """A granted hold: its estimate counts against the budgets in scope until captured, released or expired."""

    reservation_id: str
    account_id: str
    user_id: str | None
    estimate_micros: int | None
    estimate_tokens: int | None
    expires_at: datetime
    duplicate: bool


#: A capture's body: a charge's fields, its account (and user) taken from the reservation.
CaptureIn: type[BaseModel] = create_model(
    "CaptureIn",
    __config__=ConfigDict(extra="forbid"),
    __doc__="""The reserved call's charge: the fields of ``record_charge``. The account (and user) come from
    the reservation; if given they must match it. The charge id defaults to the reservation id.""",
    **{name: _charge_field(spec) for name, spec in SPECS.items()},
)


class CaptureOut(ReceiptOut):
    """The charge's receipt, the reservation it settled, and whether its hold had expired (recorded all the same)."""

    reservation_id: str
    hold_expired: bool


class ReleaseOut(BaseModel):
    reservation_id: str
    state: Literal["held", "captured", "released", "expired"]


class CreditIn(BaseModel):
    """A grant of prepaid credit; the same grant_id again answers the first grant."""

    model_config = ConfigDict(extra="forbid")

    amount_micros: int = Field(ge=1, lt=10**15)
    expires_at: datetime | None = Field(None, description="When the grant lapses (ISO 8601 with its offset, in "
                                        "the future) [default: never].")
    grant_id: str | None = Field(None, max_length=MAX_TEXT, description="Makes the call idempotent [default: a new id].")


class CreditGrantRow(BaseModel):
    """A grant as stored; in a balance, ``remaining_micros`` is what it has left now."""

    grant_id: str
    account_id: str
    amount_micros: int
    granted_at: datetime
    expires_at: datetime | None
    remaining_micros: int | None
    expired: bool


class CreditGrantOut(CreditGrantRow):
    """A grant just made, or (duplicate true) the one made before under this grant_id."""

    duplicate: bool


class BalanceOut(BaseModel):
    """Unexpired grants, the spend they covered (earliest expiry first), what is left, and spend no grant covered."""

    account_id: str
    balance_micros: int
    granted_micros: int
    used_micros: int
    overage_micros: int
    grants: list[CreditGrantRow]


class BudgetExceededBody(BudgetFigures, ProblemBody):
    """402: a hard budget cannot hold the estimate; its figures named as in its status."""

    budget_id: str
    estimate: int


def budget_exceeded(description: str) -> dict[str, Any]:
    """The OpenAPI response entry for a 402 problem."""
    return {"description": description, "model": BudgetExceededBody,
            "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/BudgetExceededBody"}}}}
