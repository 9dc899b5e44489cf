"""Recording over HTTP: one charge, a batch, a reversal.

Handlers read the body themselves and hand it to the ledger, whose
validation names every bad field (422). A key scoped to one account may
record and reverse that account's charges only: the charge's account is
resolved first, and a charge of another account refuses the whole request
(403) before anything is stored.

``POST /v1/charges``, the busiest path, skips FastAPI's per-request
machinery (dependency resolution, response handling): its route is
documented from the endpoint as usual, but answered by
:func:`record_charge_directly`, which does the same checks in one pass and
hands the request to a worker thread once (:mod:`ledger_service.http.handoff`).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from ledger.errors import (
    AlreadyReversed,
    ChargeConflict,
    InvalidCharge,
    LedgerError,
    UnknownCharge,
)
from ledger_service.http.auth import Caller, WriteCaller, caller_of
from ledger_service.http.bodies import read_json
from ledger_service.http.encoding import JsonAnswer, encode
from ledger_service.http.handoff import in_worker
from ledger_service.http.problems import Problem, field_errors
from ledger_service.http.schemas import (
    AUTH_PROBLEMS,
    BODY_PROBLEMS,
    BatchOut,
    ChargeIn,
    ReceiptOut,
    ReversalIn,
    ReversalOut,
    json_body,
    problem,
)
from ledger_service.keys import ApiKey

if TYPE_CHECKING:
    from ledger import Ledger

router = APIRouter(tags=["charges"])

CHARGE_SCHEMA = ChargeIn.model_json_schema()
JSON = ("application/json",)


def conflict_errors(exc: ChargeConflict, prefix: str = "") -> list[dict[str, str]]:
    """Each differing field named; the recorded values are not shown (they may be another tenant's)."""
    return [{"field": f"{prefix}{name}", "detail": "differs from the charge recorded with this id"}
            for name in exc.fields]


def scoped_fields(key: ApiKey, fields: Mapping[str, Any]) -> dict[str, Any]:
    """A scoped key's charges default to its account."""
    fields = dict(fields)
    if key.scoped and fields.get("account_id") is None and fields.get("user_profile_id") is None:
        fields["account_id"] = key.account_id
    return fields


def account_of(ledger: Ledger, fields: Mapping[str, Any]) -> str | None:
    """The account a charge would be recorded for; None when it is invalid (the ledger says why)."""
    try:
        return ledger.validate(fields).account_id
    except InvalidCharge:
        return None


class DirectRoute(APIRoute):
    """A route documented from its endpoint but answered by the endpoint's ``direct`` handler.

    FastAPI resolves dependencies and validates on every request; the direct
    handler reads what it needs from the request itself, so the OpenAPI spec
    stays the endpoint's while the request skips that work.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        direct: Callable[[Request], Coroutine[Any, Any, Response]] = getattr(self.endpoint, "direct")  # noqa: B009 - undeclared attribute
        return direct


async def record_charge(request: Request, caller: WriteCaller) -> Response:
    """Documents ``POST /v1/charges``; requests are answered by :func:`record_charge_directly`."""
    return await record_charge_directly(request)


async def record_charge_directly(request: Request) -> Response:
    caller = caller_of(request, "write")
    body = await read_json(request, JSON, request.app.state.http.max_body_bytes)
    return await in_worker(_record_one, request.app.state.ledger, caller, body)


setattr(record_charge, "direct", record_charge_directly)  # noqa: B010 - undeclared attribute

router.add_api_route(
    "/v1/charges",
    record_charge,
    methods=["POST"],
    status_code=201,
    response_model=ReceiptOut,
    summary="Record one charge",
    responses={200: {"model": ReceiptOut, "description": "Already recorded with the same facts: the "
                     "original receipt, duplicate true."},
               409: problem("The charge id was recorded with other facts; each differing field is named."),
               422: problem("Invalid charge; each bad field is named."),
               **AUTH_PROBLEMS, **BODY_PROBLEMS},
    openapi_extra=json_body(CHARGE_SCHEMA),
    route_class_override=DirectRoute,
)


def _record_one(ledger: Ledger, caller: Caller, body: Any) -> Response:
    key = caller.key(ledger)
    if not isinstance(body, dict):
        raise Problem(422, "the body must be a JSON object of charge fields",
                      errors=[{"field": "body", "detail": "expected an object"}])
    fields = scoped_fields(key, body)
    if key.scoped:
        account = account_of(ledger, fields)
        if account is not None and not key.may_act_for(account):
            raise Problem(403, f"this key records charges for account {key.account_id!r} only",
                          errors=[{"field": "account_id", "detail": "outside this key's account"}])
    try:
        receipt = ledger.record_charge(**fields)
    except ChargeConflict as exc:
        raise Problem(409, f"charge id {exc.charge_id!r} was already recorded with different "
                      f"{', '.join(exc.fields)}", errors=conflict_errors(exc)) from None
    except InvalidCharge as exc:
        raise Problem(422, str(exc), errors=field_errors(exc.errors)) from None
    return Response(encode(receipt.to_dict()), status_code=200 if receipt.duplicate else 201,
                    media_type="application/json")


@router.post(
    "/v1/charges/batch",
    response_model=BatchOut,
    summary="Record many charges; one outcome per item, in order",
    responses={422: problem("The body is not an object with a list of charges."), **AUTH_PROBLEMS, **BODY_PROBLEMS},
    openapi_extra=json_body({"type": "object", "required": ["charges"], "additionalProperties": False,
                             "properties": {"charges": {"type": "array", "items": CHARGE_SCHEMA}}}),
)
async def record_batch(request: Request, caller: WriteCaller) -> JsonAnswer:
    settings = request.app.state.http
    body = await read_json(request, JSON, settings.max_body_bytes)
    return await run_in_threadpool(_record_many, request.app.state.ledger, caller, body, settings.max_batch)


def _record_many(ledger: Ledger, caller: Caller, body: Any, max_batch: int) -> JsonAnswer:
    key = caller.key(ledger)
    items = body.get("charges") if isinstance(body, dict) else None
    if not isinstance(items, list) or set(body) != {"charges"}:
        raise Problem(422, 'the body must be {"charges": [...]}',
                      errors=[{"field": "charges", "detail": "expected an object with a list of charges"}])
    if len(items) > max_batch:
        raise Problem(413, f"at most {max_batch:,} charges per batch, got {len(items):,}",
                      errors=[{"field": "charges", "detail": f"at most {max_batch} items"}])
    items = [scoped_fields(key, item) if isinstance(item, dict) else item for item in items]
    if key.scoped:
        outside = [index for index, item in enumerate(items) if isinstance(item, dict)
                   and (account := account_of(ledger, item)) is not None and not key.may_act_for(account)]
        if outside:
            raise Problem(403, f"this key records charges for account {key.account_id!r} only; nothing was "
                          "recorded", errors=[{"field": f"charges[{i}].account_id",
                                               "detail": "outside this key's account"} for i in outside])
    outcomes = ledger.record_charges(items)
    shown = [_outcome(outcome) for outcome in outcomes]
    counts = {status: sum(1 for o in shown if o["status"] == status) for status in ("recorded", "duplicate")}
    return JsonAnswer({"outcomes": shown, "recorded": counts["recorded"], "duplicates": counts["duplicate"],
                       "rejected": len(shown) - counts["recorded"] - counts["duplicate"]})


def _outcome(outcome: Any) -> dict[str, Any]:
    if outcome.receipt is not None:
        status = "duplicate" if outcome.receipt.duplicate else "recorded"
        return {"index": outcome.index, "status": status, "receipt": outcome.receipt.to_dict(), "errors": None}
    error = outcome.error
    if isinstance(error, InvalidCharge):
        return {"index": outcome.index, "status": "invalid", "receipt": None, "errors": field_errors(error.errors)}
    if isinstance(error, ChargeConflict):
        return {"index": outcome.index, "status": "conflict", "receipt": None, "errors": conflict_errors(error)}
    return {"index": outcome.index, "status": "failed", "receipt": None,
            "errors": [{"field": "charge", "detail": str(error)}]}


@router.post(
    "/v1/charges/{charge_id}/reversal",
    response_model=ReversalOut,
    summary="Reverse a recorded charge (a new event; the original stays)",
    responses={404: problem("No charge with this id was recorded."),
               409: problem("The charge is already reversed."),
               422: problem("The reason is not storable text."),
               **AUTH_PROBLEMS, **BODY_PROBLEMS},
    openapi_extra=json_body(ReversalIn.model_json_schema(), required=False),
)
async def reverse_charge(charge_id: str, request: Request, caller: WriteCaller) -> JSONResponse:
    body = await read_json(request, JSON, request.app.state.http.max_body_bytes, optional=True)
    return await run_in_threadpool(_reverse, request.app.state.ledger, caller, charge_id, body)


def _reverse(ledger: Ledger, caller: Caller, charge_id: str, body: Any) -> JSONResponse:
    key = caller.key(ledger)
    if body is None:
        body = {}
    if not isinstance(body, dict) or set(body) - {"reason", "account_id"}:
        raise Problem(422, 'the body must be {"reason": "...", "account_id": "..."}',
                      errors=[{"field": "body", "detail": 'expected {"reason": text, "account_id": text}'}])
    reason = body.get("reason")
    account_id = _reversal_account(key, charge_id, body.get("account_id"))
    try:
        reversal = ledger.reverse_charge(charge_id, reason if reason is not None else "", account_id=account_id)
    except UnknownCharge as exc:
        if key.scoped:  # as for another account's id: the key sees its own account only
            raise _outside_scope(key, charge_id, "charge_id") from None
        raise Problem(404, str(exc), errors=[{"field": "charge_id", "detail": "unknown charge"}]) from None
    except AlreadyReversed as exc:
        raise Problem(409, str(exc), errors=[{"field": "charge_id", "detail": "already reversed"}]) from None
    except InvalidCharge as exc:
        raise Problem(422, str(exc), errors=field_errors(exc.errors)) from None
    except LedgerError:
        raise
    return JsonAnswer(reversal.to_dict())


def _reversal_account(key: ApiKey, charge_id: str, given: Any) -> str:
    """The account whose charge is reversed: a scoped key's own, else the one the body names.

    A scoped key asking for another account gets the same 403 as for an
    unknown charge, so it learns nothing about other tenants' ids.
    """
    if key.scoped:
        if given is not None and given != key.account_id:
            raise _outside_scope(key, charge_id, "account_id")
        return str(key.account_id)
    if not isinstance(given, str) or not given.strip():
        raise Problem(422, "name the charge's account: charge ids are unique per account",
                      errors=[{"field": "account_id", "detail": "required (a non-empty string) for a key not "
                               "scoped to one account"}])
    return given


def _outside_scope(key: ApiKey, charge_id: str, field: str) -> Problem:
    return Problem(403, f"no charge {charge_id!r} in account {key.account_id!r}, the only one this key acts for",
                   errors=[{"field": field, "detail": "outside this key's account"}])
