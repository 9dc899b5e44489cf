"""The dashboard's pages: sign in and out, the overview (admin) and an account's page.

Pages read through the same queries as the API and answer like it: no
session is 401 (the sign-in page), a session whose key does not cover the
page is 403, and nothing here ever shows or logs a key. Every form post
passes the checks of :mod:`ledger_service.dashboard.csrf` or is refused
(403) before anything changes.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from ledger.measures import MEASURES
from ledger.store.replication_reads import reads_of
from ledger_service.csvsafe import write_csv
from ledger_service.dashboard import budget_panels, charts, csrf, session
from ledger_service.dashboard.display import Display, summed
from ledger_service.dashboard.figures import Figures, figures
from ledger_service.dashboard.health_box import health_box
from ledger_service.dashboard.money import pricing
from ledger_service.dashboard.periods import CHOICES, Period, period_of
from ledger_service.http.bodies import read_limited
from ledger_service.http.disposition import attachment
from ledger_service.http.problems import Problem
from ledger_service.keys import ApiKey, authenticate

router = APIRouter(prefix="/dashboard", include_in_schema=False)
templates = Environment(loader=PackageLoader("ledger_service.dashboard", "templates"),
                        autoescape=select_autoescape(["html"]))

HEADINGS = (("charges", "Charges"), ("prompt_tokens", "Prompt tokens"), ("completion_tokens", "Completion tokens"),
            ("total_tokens", "Total tokens"), ("cost_micros", "Cost"), ("unpriced_charges", "Unpriced charges"))
TOP = 10
#: Form bodies (sign-in, sign-out) are small.
FORM_LIMIT = 4096
#: The columns of the CSV downloads: the rows behind the page.
CSV_COLUMNS = ("account_id", "billing_date", "user_id", "charge_type", "provider", "model", *MEASURES)
REFUSED_FORM = "This form could not be verified: it came from another site, or the page is out of date. " \
               "Reload the page and try again."
#: Pages must not be cached or framed: they show billing figures. Their URLs (account ids) go to no
#: other site; ``same-origin`` rather than ``no-referrer``, under which a browser sends its own forms'
#: posts with ``Origin: null`` and the dashboard could not tell them from another site's.
HEADERS = {"Cache-Control": "no-store", "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin",
           "Content-Security-Policy": "default-src 'self'; style-src 'self'; img-src 'self' data:; "
                                      "frame-ancestors 'none'; form-action 'self'"}


def display_of(request: Request) -> Display:
    """Figures written in the ledger's currency (``LEDGER_CURRENCY``, USD by default)."""
    return Display(request.app.state.ledger.settings.currency)


def page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A page; a signed-in one carries its session's form token (for signing out)."""
    ledger = request.app.state.ledger
    if context.get("viewer") is not None:
        context.setdefault("csrf_token", csrf.session_token(request.app.state.secret_key, request))
    html = templates.get_template(template).render(zone=ledger.settings.billing_tz, display=display_of(request),
                                                   summed=summed, headings=HEADINGS, choices=CHOICES, **context)
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def sign_in_page(request: Request, status: int = 401, message: str = "") -> HTMLResponse:
    """The sign-in form, with its token; a browser without the form's nonce cookie gets one."""
    token, fresh = csrf.sign_in_token(request.app.state.secret_key, request)
    response = page(request, "sign_in.html", status, title="Sign in", viewer=None, message=message,
                    csrf_token=token)
    if fresh is not None:
        csrf.set_sign_in_cookie(response, request, fresh)
    return response


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


async def read_form(request: Request) -> dict[str, str] | None:
    """The posted form's fields (the first value of each), or None when the body is too large."""
    try:
        raw = await read_limited(request, FORM_LIMIT)
    except Problem:
        return None
    return {name: values[0] for name, values in parse_qs(raw.decode("utf-8", "replace")).items()}


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    form = await read_form(request)
    if form is None:
        return sign_in_page(request, 413, "That form was too large.")
    if not csrf.sign_in_post_allowed(request, request.app.state.secret_key, form.get(csrf.FIELD)):
        return sign_in_page(request, 403, REFUSED_FORM)
    presented = form.get("key", "").strip()
    ledger = request.app.state.ledger
    key = await run_in_threadpool(authenticate, ledger, presented) if presented else None
    if key is None or key.role not in session.VIEWERS:
        return sign_in_page(request, 401, "That key is unknown, revoked, or not allowed to view usage "
                                          "(use an admin or a read key).")
    response = RedirectResponse("/dashboard", status_code=303)
    await run_in_threadpool(session.start, response, request, ledger, key)
    csrf.clear_sign_in_cookie(response, request)
    return response


@router.post("/sign-out")
async def sign_out(request: Request) -> Response:
    """End the session on the server (its cookie is no session from now on), then the sign-in page."""
    form = await read_form(request)
    if form is None or not csrf.session_post_allowed(request, request.app.state.secret_key, form.get(csrf.FIELD)):
        viewer = await current_viewer(request)
        if viewer is None:
            return page(request, "refused.html", 403, title="Not allowed", viewer=None, period=None,
                        message=REFUSED_FORM)
        return refused(request, viewer, REFUSED_FORM)
    response = RedirectResponse("/dashboard/sign-in", status_code=303)
    await run_in_threadpool(session.end, response, request, request.app.state.ledger)
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
    health = await run_in_threadpool(health_box, request.app.state.ledger)
    by_cost = sorted(found.by_account, key=lambda r: (-r["cost_micros"], r["account_id"]))[:TOP]
    by_tokens = sorted(found.by_account, key=lambda r: (-r["total_tokens"], r["account_id"]))[:TOP]
    shown = display_of(request)
    drawn = _daily_charts(found, "overview", shown)
    drawn["top_cost"] = Markup(charts.horizontal_bars("top-cost", "Top accounts by cost", by_cost, "account_id",
                                                      "cost_micros", lambda row: shown.text("cost_micros", row)))
    drawn["top_tokens"] = Markup(charts.horizontal_bars("top-tokens", "Top accounts by tokens", by_tokens,
                                                        "account_id", "total_tokens", _tokens))
    return page(request, "overview.html", title="Overview", viewer=viewer, period=period, figures=found,
                charts=drawn, top_by_cost=by_cost, top_by_tokens=by_tokens, health=health)


@router.get("/accounts/{account_id}")
async def account(request: Request, account_id: str) -> Response:
    viewer = await current_viewer(request)
    if viewer is None:
        return sign_in_page(request)
    if not viewer.may_act_for(account_id):
        return refused(request, viewer, "This key may see its own account only.")
    period = _period(request)
    found = await run_in_threadpool(figures, request.app.state.ledger, period, account_id)
    drawn = _daily_charts(found, "account", display_of(request))
    drawn["by_user"] = Markup(charts.horizontal_bars("by-user", "Tokens by user", found.by_user, "user_id",
                                                     "total_tokens", _tokens))
    drawn["by_charge_type"] = Markup(charts.horizontal_bars("by-type", "Tokens by charge type", found.by_charge_type,
                                                            "charge_type", "total_tokens", _tokens))
    panels = await run_in_threadpool(budget_panels.panels, request.app.state.ledger, account_id, display_of(request))
    reads = await run_in_threadpool(reads_of, request.app.state.ledger)  # no round trip without a read URL
    return page(request, "account.html", title=f"Account {account_id}", viewer=viewer, period=period,
                figures=found, charts=drawn, account_id=account_id, panels=panels,
                budget_legend=budget_panels.legend(), alerts_shown=budget_panels.ALERTS_SHOWN, reads=reads)


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
    write_csv(buffer, CSV_COLUMNS, ([row[c] for c in CSV_COLUMNS] for row in found.rows))
    name = f"usage-{account_id or 'all'}-{period.start.isoformat()}-{period.end.isoformat()}.csv"
    return Response(buffer.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={**HEADERS, "Content-Disposition": attachment(name)})


def _no_cost(found: Figures) -> str:
    """What an empty cost chart says: no usage, or usage whose every charge is unpriced."""
    if pricing(found.totals) == "unpriced":
        return "Every charge in this period is unpriced: no cost to draw"
    return "No usage in this period"


def _tokens(row: Mapping[str, object]) -> str:
    return f"{row['total_tokens']:,}"


def _daily_charts(found: Figures, prefix: str, shown: Display) -> dict[str, Any]:
    days = list(found.daily)

    def value_of(measure: str) -> Any:
        return lambda day, series: found.daily[day].get(series, {}).get(measure, 0)

    priced = {name: pricing(summed(found.daily[day].get(name, {}) for day in days)) for name in found.series}
    return {
        "total_tokens": Markup(charts.stacked_bars(f"{prefix}-tokens", "Tokens per day, stacked by provider and model",
                                                   days, found.series, value_of("total_tokens"), lambda v: f"{v:,}")),
        "cost_micros": Markup(charts.stacked_bars(f"{prefix}-cost", "Cost per day, stacked by provider and model",
                                                  days, found.series, value_of("cost_micros"), shown.money,
                                                  shown.axis, notes={k: v for k, v in priced.items() if v},
                                                  empty=_no_cost(found))),
    }
