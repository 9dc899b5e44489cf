"""``GET /``: where to go from the server's root, instead of a 404.

A browser (``Accept`` preferring HTML) is sent to the dashboard; an API
client gets a short JSON index of links. Links and the redirect are
relative paths: nothing is built from the ``Host`` header.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from ledger_service.http.docs import DOCS, REDOC

router = APIRouter(include_in_schema=False)

#: name -> (path, what it is)
LINKS = {
    "docs": (DOCS, "interactive API docs (Swagger UI)"),
    "redoc": (REDOC, "API reference (ReDoc)"),
    "openapi": ("/openapi.json", "OpenAPI document"),
    "healthz": ("/healthz", "liveness, database reachability and whether charges are safe (replication), no key"),
    "dashboard": ("/dashboard", "usage pages in a browser, signed in with a key"),
    "charges": ("/v1/charges", "POST one charge"),
    "charges_batch": ("/v1/charges/batch", "POST many charges"),
    "usage": ("/v1/usage", "GET daily billing records"),
    "account_totals": ("/v1/accounts/{account_id}/totals", "GET an account's running totals"),
    "events": ("/api/v1/events", "POST CloudEvents (OpenMeter's API)"),
    "budgets": ("/v1/budgets", "GET budgets' status; PUT /v1/budgets/{budget_id} sets one"),
    "reservations": ("/v1/reservations", "POST a reservation; then .../{id}/capture or .../{id}/release"),
    "balance": ("/v1/accounts/{account_id}/balance", "GET an account's prepaid credit balance"),
    "traces": ("/v1/traces", "POST OTLP/HTTP traces: each GenAI client span becomes a charge"),
}
_HTML = ("text/html", "application/xhtml+xml")


def prefers_html(accept: str) -> bool:
    """Whether ``accept`` ranks an HTML type above (or level with) JSON; ``*/*`` alone is not HTML."""
    html = json = 0.0
    for part in accept.split(","):
        media, *params = (piece.strip() for piece in part.split(";"))
        quality = _quality(params)
        if media.lower() in _HTML:
            html = max(html, quality)
        elif media.lower() == "application/json":
            json = max(json, quality)
    return html > 0 and html >= json


def _quality(params: list[str]) -> float:
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                return min(max(float(value), 0.0), 1.0)
            except ValueError:
                return 0.0
    return 1.0


@router.get("/")
async def index(request: Request) -> Response:
    """The dashboard for a browser, links for anything else (query parameters play no part)."""
    root = str(request.scope.get("root_path", "")).rstrip("/")
    if prefers_html(request.headers.get("accept", "")):
        return RedirectResponse(f"{root}/dashboard", status_code=303, headers={"Vary": "Accept"})
    links = {name: {"href": f"{root}{path}", "title": title} for name, (path, title) in LINKS.items()}
    return JSONResponse({"name": request.app.title, "version": request.app.version, "links": links},
                        headers={"Vary": "Accept"})
