"""The dashboard's pages: sign in and out, the overview (admin) and an account's page.

Pages read through the same queries as the API and answer like it: no
session is 401 (the sign-in page), a session whose key does not cover the
page is 403, and nothing here ever shows or logs a key.
"""

from __future__ import annotations

import csv
import io
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from ledger.measures import MEASURES
from ledger.money import format_micros
from ledger_service.dashboard import charts, session
from ledger_service.dashboard.figures import Figures, figures
from ledger_service.dashboard.periods import CHOICES, Period, period_of
from ledger_service.http.bodies import read_limited
from ledger_service.http.problems import Problem
from ledger_service.keys import ApiKey, authenticate

router = APIRouter(prefix="/dashboard", include_in_schema=False)
templates = Environment(loader=PackageLoader("ledger_service.dashboard", "templates"),
                        autoescape=select_autoescape(["html"]))

HEADINGS = (("charges", "Charges"), ("prompt_tokens", "Prompt tokens"), ("completion_tokens", "Completion tokens"),
            ("total_tokens", "Total tokens"), ("cost_micros", "Cost"), ("unpriced_charges", "Unpriced charges"))
TOP = 10
#: Sign-in form bodies are small.
FORM_LIMIT = 4096
#: Pages must not be cached or framed: they show billing figures.
HEADERS = {"Cache-Control": "no-store", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
           "Content-Security-Policy": "default-src 'self'; style-src 'self'; img-src 'self' data:; "
                                      "frame-ancestors 'none'; form-action 'self'"}


def show(name: str, value: int) -> str:
    return format_micros(value) if name == "cost_micros" else f"{value:,}"


def page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    ledger = request.app.state.ledger
    html = templates.get_template(template).render(zone=ledger.settings.billing_tz, show=show, headings=HEADINGS,
                                                   currency=ledger.settings.currency, choices=CHOICES,
                                                   **context)
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def sign_in_page(request: Request, status: int = 401, message: str = "") -> HTMLResponse:
    return page(request, "sign_in.html", status, title="Sign in", viewer=None, message=message)


def refused(request: Request, viewer: ApiKey, message: str) -> HTMLResponse:
    return page(request, "refused.html", 403, title="Not allowed", viewer=viewer, period=None, message=message)


async def current_viewer(request: Request) -> ApiKey | None:
    return await run_in_threadpool(session.viewer, request, request.app.state.ledger)


@router.get("")
async def home(request: Request) -> Response:
    viewer = await current_viewer(request)
    if viewer is None:
        return RedirectResponse("/dashboard/sign-in", status_code=303)
    if viewer.role == "admin":
        return RedirectResponse("/dashboard/overview", status_code=303)
    return RedirectResponse(f"/dashboard/accounts/{quote(viewer.account_id or '', safe='')}", status_code=303)


@router.get("/sign-in")
async def sign_in_form(request: Request) -> Response:
    return sign_in_page(request, status=200)


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    try:
        raw = await read_limited(request, FORM_LIMIT)
    except Problem:
        return sign_in_page(request, 413, "That form was too large.")
    values = parse_qs(raw.decode("utf-8", "replace"))
    presented = (values.get("key") or [""])[0].strip()
    ledger = request.app.state.ledger
    key = await run_in_threadpool(authenticate, ledger, presented) if presented else None
    if key is None or key.role not in session.VIEWERS:
        return sign_in_page(request, 401, "That key is unknown, revoked, or not allowed to view usage "
                                          "(use an admin or a read key).")
    response = RedirectResponse("/dashboard", status_code=303)
    await run_in_threadpool(session.start, response, request, ledger, key)
    return response


@router.post("/sign-out")
async def sign_out(request: Request) -> Response:
    response = RedirectResponse("/dashboard/sign-in", status_code=303)
    session.end(response, request)
    return response


def _period(request: Request) -> Period:
    q = request.query_params
    return period_of(q.get("period"), q.get("from"), q.get("to"), request.app.state.ledger.settings.billing_tz)


@router.get("/overview")
async def overview(request: Request) -> Response:
    viewer = await current_viewer(request)
    if viewer is None:
        return sign_in_page(request)
    if viewer.role != "admin":
        return refused(request, viewer, "The overview shows every account; it needs an admin key.")
    period = _period(request)
    found = await run_in_threadpool(figures, request.app.state.ledger, period, None)
    by_cost = sorted(found.by_account, key=lambda r: (-r["cost_micros"], r["account_id"]))[:TOP]
    by_tokens = sorted(found.by_account, key=lambda r: (-r["total_tokens"], r["account_id"]))[:TOP]
    drawn = _daily_charts(found, "overview")
    drawn["top_cost"] = Markup(charts.horizontal_bars("top-cost", "Top accounts by cost", by_cost, "account_id",
                                                      "cost_micros", lambda v: show("cost_micros", v)))
    drawn["top_tokens"] = Markup(charts.horizontal_bars("top-tokens", "Top accounts by tokens", by_tokens,
                                                        "account_id", "total_tokens", lambda v: f"{v:,}"))
    return page(request, "overview.html", title="Overview", viewer=viewer, period=period, figures=found,
                charts=drawn, top_by_cost=by_cost, top_by_tokens=by_tokens)


@router.get("/accounts/{account_id}")
async def account(request: Request, account_id: str) -> Response:
    viewer = await current_viewer(request)
    if viewer is None:
        return sign_in_page(request)
    if not viewer.may_act_for(account_id):
        return refused(request, viewer, "This key may see its own account only.")
    period = _period(request)
    found = await run_in_threadpool(figures, request.app.state.ledger, period, account_id)
    drawn = _daily_charts(found, "account")
    drawn["by_user"] = Markup(charts.horizontal_bars("by-user", "Tokens by user", found.by_user, "user_id",
                                                     "total_tokens", lambda v: f"{v:,}"))
    drawn["by_charge_type"] = Markup(charts.horizontal_bars("by-type", "Tokens by charge type", found.by_charge_type,
                                                            "charge_type", "total_tokens", lambda v: f"{v:,}"))
    return page(request, "account.html", title=f"Account {account_id}", viewer=viewer, period=period,
                figures=found, charts=drawn, account_id=account_id)


@router.get("/overview/usage.csv")
async def overview_csv(request: Request) -> Response:
    return await _csv(request, None)


@router.get("/accounts/{account_id}/usage.csv")
async def account_csv(request: Request, account_id: str) -> Response:
    return await _csv(request, account_id)


async def _csv(request: Request, account_id: str | None) -> Response:
    """The rows behind the page (per account, day, user, charge type, provider and model), as CSV."""
    viewer = await current_viewer(request)
    if viewer is None:
        return sign_in_page(request)
    if (account_id is None and viewer.role != "admin") or (account_id is not None and not viewer.may_act_for(account_id)):
        return refused(request, viewer, "This key may not download these figures.")
    period = _period(request)
    found = await run_in_threadpool(figures, request.app.state.ledger, period, account_id)
    buffer = io.StringIO()
    columns = ("account_id", "billing_date", "user_id", "charge_type", "provider", "model", *MEASURES)
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in found.rows:
        writer.writerow(["" if row[c] is None else row[c] for c in columns])
    name = f"usage-{account_id or 'all'}-{period.start.isoformat()}-{period.end.isoformat()}.csv"
    return Response(buffer.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={**HEADERS, "Content-Disposition": f'attachment; filename="{name}"'})


def _daily_charts(found: Figures, prefix: str) -> dict[str, Any]:
    days = list(found.daily)

    def value_of(measure: str) -> Any:
        return lambda day, series: found.daily[day].get(series, {}).get(measure, 0)

    return {
        "total_tokens": Markup(charts.stacked_bars(f"{prefix}-tokens", "Tokens per day, stacked by provider and model",
                                                   days, found.series, value_of("total_tokens"), lambda v: f"{v:,}")),
        "cost_micros": Markup(charts.stacked_bars(f"{prefix}-cost", "Cost per day, stacked by provider and model",
                                                  days, found.series, value_of("cost_micros"),
                                                  lambda v: show("cost_micros", v))),
    }
