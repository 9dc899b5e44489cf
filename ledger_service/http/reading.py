"""Reading over HTTP: an account's running totals, and daily billing records (``/v1/usage``).

A read key sees its own account only: asking for another is 403, and
``/v1/usage`` is always filtered to its account, whatever the query asks
for, so no grouping can sum another account's rows in.
"""

from __future__ import annotations

import io
import threading
from datetime import date
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from ledger.errors import UnknownAccount
from ledger.measures import MEASURES
from ledger_service.csvsafe import write_csv
from ledger_service.days import parse_day
from ledger_service.http.auth import Caller, ReadCaller, check_account, plain_text
from ledger_service.http.problems import Problem
from ledger_service.http.query import known_query
from ledger_service.http.schemas import AUTH_PROBLEMS, TotalsOut, UsagePage, problem

if TYPE_CHECKING:
    from ledger import Ledger

router = APIRouter(tags=["reading"])

KEY_COLUMNS = ("account_id", "user_id", "billing_date", "charge_type", "provider", "model")
_projecting = threading.Lock()


@router.get(
    "/v1/accounts/{account_id}/totals",
    response_model=TotalsOut,
    summary="An account's running totals, net of reversals (from the write side)",
    responses={404: problem("No charge was ever recorded for this account."), **AUTH_PROBLEMS},
)
async def account_totals(account_id: str, request: Request, caller: ReadCaller,
                         _known: None = Depends(known_query)) -> JSONResponse:
    return await run_in_threadpool(_totals, request.app.state.ledger, caller, account_id)


def _totals(ledger: Ledger, caller: Caller, account_id: str) -> JSONResponse:
    check_account(caller.key(ledger), account_id, "account_id")
    if not plain_text(account_id):
        raise Problem(404, "unknown account", errors=[{"field": "account_id", "detail": "unknown account"}])
    try:
        totals = ledger.account_totals(account_id)
    except UnknownAccount as exc:
        raise Problem(404, str(exc), errors=[{"field": "account_id", "detail": "unknown account"}]) from None
    return JSONResponse({"account_id": account_id, **dict(zip(MEASURES, totals.figures))})


@router.get(
    "/v1/usage",
    response_model=UsagePage,
    summary="Daily billing records, filtered and grouped like `ledger report`; paginated",
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}},
                     "description": "JSON rows (the keys of `ledger report --format json`), or CSV with "
                     "format=csv or Accept: text/csv (next page in the Link header)."},
               422: problem("A bad filter, date or group_by column, or an unknown query parameter."),
               **AUTH_PROBLEMS},
)
async def usage(
    request: Request,
    caller: ReadCaller,
    _known: None = Depends(known_query),
    account: str | None = Query(None, description="Only this account (a read key's own by default)."),
    user: str | None = Query(None, description="Only this user."),
    start: str | None = Query(None, alias="from", description="First billing date, YYYY-MM-DD."),
    end: str | None = Query(None, alias="to", description="Last billing date (inclusive), YYYY-MM-DD."),
    charge_type: str | None = Query(None),
    provider: str | None = Query(None),
    model: str | None = Query(None),
    group_by: str | None = Query(None, description="Comma list of " + ",".join(KEY_COLUMNS) + " [default: all six]."),
    offset: int = Query(0, ge=0, le=2**31),
    limit: int | None = Query(None, ge=1, le=2**31, description="Rows per page [default and maximum: settings]."),
    output: Literal["csv", "json"] | None = Query(
        None, alias="format", description="csv or json; wins over the Accept header [default: from Accept, else json]."),
) -> Response:
    query = {"account_id": account, "user_id": user, "start": start, "end": end, "charge_type": charge_type,
                 "provider": provider, "model": model, "group_by": group_by}
    page = min(limit or request.app.state.http.page_size, request.app.state.http.max_page_size)
    ledger = request.app.state.ledger
    rows, groups = await run_in_threadpool(_usage, ledger, caller, query)
    shown = rows[offset:offset + page]
    next_offset = offset + page if offset + page < len(rows) else None
    for row in shown:
        if row["billing_date"] is not None:
            row["billing_date"] = row["billing_date"].isoformat()
    headers = {"Vary": "Accept"}
    if next_offset is not None:
        following = {k: v for k, v in request.query_params.items() if k not in ("offset", "limit")}
        following.update(offset=str(next_offset), limit=str(page))
        headers["Link"] = f'<{request.url.path}?{urlencode(following)}>; rel="next"'
    if (output or ("csv" if _wants_csv(request) else "json")) == "csv":
        return Response(_csv(shown, groups), media_type="text/csv; charset=utf-8", headers=headers)
    return JSONResponse({"data": shown, "offset": offset, "limit": page, "next_offset": next_offset,
                         "billing_tz": ledger.settings.billing_tz}, headers=headers)


def _usage(ledger: Ledger, caller: Caller, query: dict[str, Any]) -> tuple[list[dict[str, Any]], tuple[str, ...]]:
    """The caller's records for ``query`` (checked, and narrowed to a scoped key's account), and the groups."""
    key = caller.key(ledger)
    account = query["account_id"]
    if key.scoped:
        if account is not None:
            check_account(key, account, "account")
        account = key.account_id
    user, charge_type, provider, model = query["user_id"], query["charge_type"], query["provider"], query["model"]
    errors: list[dict[str, str]] = []
    start, end, group_by = query["start"], query["end"], query["group_by"]
    first, last = _day(start, "from", errors), _day(end, "to", errors)
    if first and last and first > last:
        errors.append({"field": "from", "detail": f"{first} is after to={last}"})
    groups = _group_by(group_by, errors)
    for name, value in (("account", account), ("user", user), ("charge_type", charge_type),
                        ("provider", provider), ("model", model)):
        if value is not None and not plain_text(value):
            errors.append({"field": name, "detail": "not printable text of at most 256 characters"})
    if errors:
        raise Problem(422, "; ".join(f"{e['field']}: {e['detail']}" for e in errors), errors=errors)
    rows = _records(ledger, {"account_id": account, "start": first, "end": last, "group_by": groups, "charge_type": charge_type,
                                 "provider": provider, "model": model, "user_id": user})
    return rows, groups


def _records(ledger: Ledger, query: dict[str, Any]) -> list[dict[str, Any]]:
    """The records after bringing them up to date with the log (one projector run at a time here)."""
    from projections import Projector
    from projections.reports import records

    with _projecting:
        Projector(ledger).run()
    return records(ledger, **query)


def _day(value: str | None, name: str, errors: list[dict[str, str]]) -> date | None:
    if value is None:
        return None
    try:
        return parse_day(value)
    except ValueError:
        errors.append({"field": name, "detail": "not a date in YYYY-MM-DD form"})
        return None


def _group_by(value: str | None, errors: list[dict[str, str]]) -> tuple[str, ...]:
    if value is None:
        return KEY_COLUMNS
    wanted = [part.strip() for part in value.split(",") if part.strip()]
    unknown = [name for name in wanted if name not in KEY_COLUMNS]
    if unknown or not wanted:
        errors.append({"field": "group_by", "detail": f"unknown column(s) {', '.join(unknown) or '(none given)'}; "
                       f"choose from {','.join(KEY_COLUMNS)}"})
    return tuple(name for name in KEY_COLUMNS if name in wanted)


def _wants_csv(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return any(part.split(";", 1)[0].strip().lower() == "text/csv" for part in accept.split(","))


def _csv(rows: list[dict[str, Any]], groups: tuple[str, ...]) -> str:
    """The same columns as ``ledger report --format csv``: the grouped keys, then the figures
    (text that a spreadsheet would run as a formula neutralised, as everywhere)."""
    buffer = io.StringIO()
    columns = (*groups, *MEASURES)
    write_csv(buffer, columns, ([row[k] for k in columns] for row in rows))
    return buffer.getvalue()
