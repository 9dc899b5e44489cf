"""Budgets, reservations and prepaid credits over HTTP.

Budgets and credit grants are an operator's business: setting, removing
and granting need an admin key. Reading a budget or a balance needs a key
that may read that account (admin, or a read key scoped to it). Reserving,
capturing and releasing are a gateway's: an ingest key, scoped or not. A
scoped key acts for its own account only, as when recording: another
account's reservation or budget, and an unknown one, answer the same 403,
so a key learns nothing of other tenants' ids.

Bodies are read and handed to the ledger, whose validation names every bad
field (422); a field the endpoint does not take is refused here, by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials

from ledger.budget_rules import identifier
from ledger.errors import (
    ChargeConflict,
    InvalidBudget,
    InvalidCharge,
    InvalidCredit,
    InvalidInput,
    InvalidReservation,
    UnknownBudget,
    UnknownReservation,
)
from ledger_service.http.auth import (
    Caller,
    ReadCaller,
    WriteCaller,
    bearer,
    caller_of,
    check_account,
    plain_text,
)
from ledger_service.http.bodies import read_json
from ledger_service.http.charges import conflict_errors
from ledger_service.http.encoding import JsonAnswer
from ledger_service.http.problems import Problem, field_errors
from ledger_service.http.query import known_query
from ledger_service.http.schemas import (
    AUTH_PROBLEMS,
    BODY_PROBLEMS,
    BalanceOut,
    BudgetIn,
    BudgetList,
    BudgetOut,
    CaptureIn,
    CaptureOut,
    CreditGrantOut,
    CreditIn,
    ReleaseOut,
    ReservationIn,
    ReservationOut,
    budget_exceeded,
    json_body,
    problem,
)
from ledger_service.keys import ApiKey

if TYPE_CHECKING:
    from ledger import Ledger

router = APIRouter(tags=["budgets"])

JSON = ("application/json",)
BUDGET_FIELDS = frozenset(BudgetIn.model_fields)
RESERVATION_FIELDS = frozenset(ReservationIn.model_fields)
CREDIT_FIELDS = frozenset(CreditIn.model_fields)
#: Names a capture's body may not use: the path names the reservation (and neither is a charge field).
NOT_CHARGE_FIELDS = frozenset({"reservation_id", "self"})


@dataclass(frozen=True)
class AdminCaller(Caller):
    """A caller that must hold an admin key: any other role is 403, before any refusal of the body."""

    def key(self, ledger: Ledger) -> ApiKey:
        key = super().key(ledger)
        if key.role != "admin":
            raise Problem(403, f"a {key.role} key may not manage budgets or credits; use an admin key")
        return key


async def _admin(request: Request,
                 credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Caller:
    """The request's :class:`AdminCaller` (kept on the request, so a body refusal checks the role first)."""
    caller = caller_of(request, "write")
    admin = AdminCaller(caller.presented, caller.action, caller.cache)
    request.state.caller = admin
    return admin


AdminOnly = Annotated[Caller, Depends(_admin)]


# -- helpers ------------------------------------------------------------------------------


def _object(body: Any, allowed: frozenset[str] | None, what: str) -> dict[str, Any]:
    """The body as an object of ``allowed`` fields (any, when None); 422 naming each other field."""
    if not isinstance(body, dict):
        raise Problem(422, f"the body must be a JSON object of {what}",
                      errors=[{"field": "body", "detail": "expected an object"}])
    if allowed is not None:
        _refuse_fields({name: "unknown field" for name in body if name not in allowed})
    return body


def _refuse_fields(errors: Mapping[str, str]) -> None:
    """422 naming each field of ``errors``, if any."""
    if errors:
        listed = field_errors(errors)
        raise Problem(422, "; ".join(f"{e['field']}: {e['detail']}" for e in listed), errors=listed)


def _given(body: Mapping[str, Any]) -> dict[str, Any]:
    """The fields given a value: null means "the default", as leaving the field out does."""
    return {name: value for name, value in body.items() if value is not None}


def _invalid(exc: InvalidInput) -> Problem:
    return Problem(422, str(exc), errors=field_errors(exc.errors))


def _checked_id(name: str, value: str, error: type[InvalidInput]) -> str:
    """A path id the store can look up, or 422 naming it."""
    errors: dict[str, str] = {}
    identifier(errors, name, value)
    if errors:
        raise _invalid(error(errors))
    return value


def _outside(key: ApiKey, what: str, given: str, field: str) -> Problem:
    """The refusal of another account's (or an unknown) id to a scoped key: the same either way."""
    return Problem(403, f"no {what} {given!r} in account {key.account_id!r}, the only one this key acts for",
                   errors=[{"field": field, "detail": "outside this key's account"}])


def _json(content: Any, status: int = 200) -> JsonAnswer:
    return JsonAnswer(content, status_code=status)


# -- budgets ------------------------------------------------------------------------------


@router.put(
    "/v1/budgets/{budget_id}",
    response_model=BudgetOut,
    status_code=201,
    summary="Create or change a budget (an event); answers its status",
    responses={200: {"model": BudgetOut, "description": "The budget existed: changed, or already so."},
               422: problem("Invalid budget; each bad field is named."),
               **AUTH_PROBLEMS, **BODY_PROBLEMS},
    openapi_extra=json_body(BudgetIn.model_json_schema()),
)
async def put_budget(budget_id: str, request: Request, caller: AdminOnly) -> JsonAnswer:
    body = await read_json(request, JSON, request.app.state.http.max_body_bytes)
    return await run_in_threadpool(_put_budget, request.app.state.ledger, caller, budget_id, body)


def _put_budget(ledger: Ledger, caller: Caller, budget_id: str, body: Any) -> JsonAnswer:
    caller.key(ledger)
    fields = _given(_object(body, BUDGET_FIELDS, "budget fields"))
    try:
        result = ledger.set_budget(budget_id, account_id=fields.pop("account_id", None), **fields)
    except InvalidBudget as exc:
        raise _invalid(exc) from None
    return _json(result.status.to_dict(), 201 if result.created else 200)


@router.get(
    "/v1/budgets",
    response_model=BudgetList,
    summary="Budgets' statuses: limit, spent, held and remaining now (a read key's own account's)",
    responses={422: problem("A bad account, or an unknown query parameter."), **AUTH_PROBLEMS},
)
async def list_budgets(
    request: Request,
    caller: ReadCaller,
    _known: None = Depends(known_query),
    account: str | None = Query(None, description="Only this account's [default: every account for an admin key, "
                                "a read key's own]."),
) -> JsonAnswer:
    return await run_in_threadpool(_list_budgets, request.app.state.ledger, caller, account)


def _list_budgets(ledger: Ledger, caller: Caller, account: str | None) -> JsonAnswer:
    key = caller.key(ledger)
    if key.scoped:
        if account is not None:
            check_account(key, account, "account")
        account = key.account_id
    if account is not None and not plain_text(account):
        raise Problem(422, "account: not printable text of at most 256 characters",
                      errors=[{"field": "account", "detail": "not printable text of at most 256 characters"}])
    return _json({"data": [status.to_dict() for status in ledger.budgets(account)]})


@router.get(
    "/v1/budgets/{budget_id}",
    response_model=BudgetOut,
    summary="A budget's status: limit, spent, held and remaining now",
    responses={404: problem("No budget with this id is set."), **AUTH_PROBLEMS},
)
async def get_budget(budget_id: str, request: Request, caller: ReadCaller,
                     _known: None = Depends(known_query)) -> JsonAnswer:
    return await run_in_threadpool(_get_budget, request.app.state.ledger, caller, budget_id)


def _get_budget(ledger: Ledger, caller: Caller, budget_id: str) -> JsonAnswer:
    key = caller.key(ledger)
    try:
        if not plain_text(budget_id):
            raise UnknownBudget(budget_id)
        status = ledger.budget_status(budget_id)
    except UnknownBudget as exc:
        if key.scoped:
            raise _outside(key, "budget", budget_id, "budget_id") from None
        raise Problem(404, str(exc), errors=[{"field": "budget_id", "detail": "unknown budget"}]) from None
    if not key.may_act_for(status.account_id):
        raise _outside(key, "budget", budget_id, "budget_id")
    return _json(status.to_dict())


@router.delete(
    "/v1/budgets/{budget_id}",
    status_code=204,
    summary="Remove a budget (an event); its holds stop counting against it",
    responses={404: problem("No budget with this id is set."), **AUTH_PROBLEMS},
)
async def delete_budget(budget_id: str, request: Request, caller: AdminOnly) -> Response:
    return await run_in_threadpool(_delete_budget, request.app.state.ledger, caller, budget_id)


def _delete_budget(ledger: Ledger, caller: Caller, budget_id: str) -> Response:
    caller.key(ledger)
    try:
        if not plain_text(budget_id):
            raise UnknownBudget(budget_id)
        ledger.remove_budget(budget_id)
    except UnknownBudget as exc:
        raise Problem(404, str(exc), errors=[{"field": "budget_id", "detail": "unknown budget"}]) from None
    return Response(status_code=204)


# -- reservations -------------------------------------------------------------------------


@router.post(
    "/v1/reservations",
    response_model=ReservationOut,
    status_code=201,
    tags=["reservations"],
    summary="Hold an estimate against the budgets in scope before a model call",
    responses={200: {"model": ReservationOut, "description": "Already reserved under this reservation_id with "
                     "the same terms: the same reservation, duplicate true."},
               402: budget_exceeded("A hard budget in scope cannot hold the estimate: nothing was held. The "
                                    "body names the budget, its figures and the estimate."),
               409: problem("The reservation_id was used with other terms."),
               422: problem("Invalid terms; each bad field is named."),
               **AUTH_PROBLEMS, **BODY_PROBLEMS},
    openapi_extra=json_body(ReservationIn.model_json_schema()),
)
async def reserve(request: Request, caller: WriteCaller) -> JsonAnswer:
    body = await read_json(request, JSON, request.app.state.http.max_body_bytes)
    return await run_in_threadpool(_reserve, request.app.state.ledger, caller, body)


def _reserve(ledger: Ledger, caller: Caller, body: Any) -> JsonAnswer:
    key = caller.key(ledger)
    terms = _given(_object(body, RESERVATION_FIELDS, "reservation terms"))
    account = terms.pop("account_id", key.account_id)
    if key.scoped and isinstance(account, str) and not key.may_act_for(account):
        raise Problem(403, f"this key reserves for account {key.account_id!r} only",
                      errors=[{"field": "account_id", "detail": "outside this key's account"}])
    try:
        reservation = ledger.reserve(account, **terms)
    except InvalidReservation as exc:
        raise _invalid(exc) from None
    return _json(reservation.to_dict(), 200 if reservation.duplicate else 201)


def _own_hold(ledger: Ledger, key: ApiKey, reservation_id: str) -> None:
    """For a scoped key: 403 unless the reservation is its account's (an unknown one alike)."""
    if not key.scoped:
        return
    _checked_id("reservation_id", reservation_id, InvalidReservation)
    try:
        account_id = ledger.get_reservation(reservation_id).account_id
    except UnknownReservation:
        account_id = None
    if account_id is None or not key.may_act_for(account_id):
        raise _outside(key, "reservation", reservation_id, "reservation_id")


def _unknown_reservation(key: ApiKey, exc: UnknownReservation) -> Problem:
    if key.scoped:  # it was there a moment ago: answer as for any id outside the key's account
        return _outside(key, "reservation", exc.reservation_id, "reservation_id")
    return Problem(404, str(exc), errors=[{"field": "reservation_id", "detail": "unknown reservation"}])


@router.post(
    "/v1/reservations/{reservation_id}/capture",
    response_model=CaptureOut,
    status_code=201,
    tags=["reservations"],
    summary="Record the reserved call's charge and settle its hold",
    responses={200: {"model": CaptureOut, "description": "Already captured with the same facts: the original "
                     "receipt, duplicate true."},
               404: problem("No reservation with this id was made."),
               409: problem("The reservation was released or captured by another charge, or the charge id was "
                            "recorded with other facts (each differing field named)."),
               422: problem("Invalid charge; each bad field is named."),
               **AUTH_PROBLEMS, **BODY_PROBLEMS},
    openapi_extra=json_body(CaptureIn.model_json_schema()),
)
async def capture(reservation_id: str, request: Request, caller: WriteCaller) -> JsonAnswer:
    body = await read_json(request, JSON, request.app.state.http.max_body_bytes)
    return await run_in_threadpool(_capture, request.app.state.ledger, caller, reservation_id, body)


def _capture(ledger: Ledger, caller: Caller, reservation_id: str, body: Any) -> JsonAnswer:
    key = caller.key(ledger)
    fields = _object(body, None, "charge fields")
    _refuse_fields({name: "unknown field (the path names the reservation)" for name in fields
                    if name in NOT_CHARGE_FIELDS})
    given = fields.get("account_id")
    if key.scoped and isinstance(given, str) and not key.may_act_for(given):
        raise Problem(403, f"this key records charges for account {key.account_id!r} only",
                      errors=[{"field": "account_id", "detail": "outside this key's account"}])
    _own_hold(ledger, key, reservation_id)
    try:
        receipt = ledger.capture(reservation_id, **fields)
    except UnknownReservation as exc:
        raise _unknown_reservation(key, exc) from None
    except ChargeConflict as exc:
        raise Problem(409, f"charge id {exc.charge_id!r} was already recorded with different "
                      f"{', '.join(exc.fields)}", errors=conflict_errors(exc)) from None
    except (InvalidCharge, InvalidReservation) as exc:
        raise _invalid(exc) from None
    return _json(receipt.to_dict(), 200 if receipt.duplicate else 201)


@router.post(
    "/v1/reservations/{reservation_id}/release",
    response_model=ReleaseOut,
    tags=["reservations"],
    summary="Release a hold that was not captured (releasing twice is harmless)",
    responses={404: problem("No reservation with this id was made."),
               409: problem("The reservation was captured: there is no hold to release."),
               422: problem("The reservation id is not an id."),
               **AUTH_PROBLEMS},
)
async def release(reservation_id: str, request: Request, caller: WriteCaller) -> JsonAnswer:
    return await run_in_threadpool(_release, request.app.state.ledger, caller, reservation_id)


def _release(ledger: Ledger, caller: Caller, reservation_id: str) -> JsonAnswer:
    key = caller.key(ledger)
    _own_hold(ledger, key, reservation_id)
    try:
        ledger.release(reservation_id)
        state = ledger.reservation_state(reservation_id)
    except UnknownReservation as exc:
        raise _unknown_reservation(key, exc) from None
    except InvalidReservation as exc:
        raise _invalid(exc) from None
    return _json({"reservation_id": reservation_id, "state": state})


# -- credits ------------------------------------------------------------------------------


@router.post(
    "/v1/accounts/{account_id}/credits",
    response_model=CreditGrantOut,
    status_code=201,
    tags=["credits"],
    summary="Grant prepaid credit to an account (an event)",
    responses={200: {"model": CreditGrantOut, "description": "Already granted under this grant_id with the same "
                     "terms: the first grant, duplicate true."},
               422: problem("Invalid grant (or a grant_id used with other terms); each bad field is named."),
               **AUTH_PROBLEMS, **BODY_PROBLEMS},
    openapi_extra=json_body(CreditIn.model_json_schema()),
)
async def grant_credits(account_id: str, request: Request, caller: AdminOnly) -> JsonAnswer:
    body = await read_json(request, JSON, request.app.state.http.max_body_bytes)
    return await run_in_threadpool(_grant, request.app.state.ledger, caller, account_id, body)


def _grant(ledger: Ledger, caller: Caller, account_id: str, body: Any) -> JsonAnswer:
    caller.key(ledger)
    fields = _given(_object(body, CREDIT_FIELDS, "grant fields"))
    try:
        grant = ledger.grant_credits(account_id, fields.pop("amount_micros", None), **fields)
    except InvalidCredit as exc:
        raise _invalid(exc) from None
    return _json({**grant.to_dict(), "duplicate": grant.duplicate}, 200 if grant.duplicate else 201)


@router.get(
    "/v1/accounts/{account_id}/balance",
    response_model=BalanceOut,
    tags=["credits"],
    summary="An account's prepaid balance: unexpired grants less the spend they covered",
    responses={422: problem("The account id is not an id, or an unknown query parameter."), **AUTH_PROBLEMS},
)
async def account_balance(account_id: str, request: Request, caller: ReadCaller,
                          _known: None = Depends(known_query)) -> JsonAnswer:
    return await run_in_threadpool(_balance, request.app.state.ledger, caller, account_id)


def _balance(ledger: Ledger, caller: Caller, account_id: str) -> JsonAnswer:
    check_account(caller.key(ledger), account_id, "account_id")
    _checked_id("account_id", account_id, InvalidCredit)
    return _json(ledger.balance(account_id).to_dict())
