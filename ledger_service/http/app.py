"""The ASGI application: the API's routers and the dashboard's pages, problem+json for every
refusal, the ledger opened once per process, the security headers on every response.

Handlers run the ledger's blocking calls in the thread pool, so concurrent
requests reach the ledger together and share its group commits.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from ledger.errors import BusyAccount, InvalidInput, LedgerError
from ledger.settings import DashboardSettings, HttpSettings, Settings
from ledger.store.engine import DATABASE_ERRORS_SEEN_BY_HTTP
from ledger.store.replication_reads import close_read_engine
from ledger.store.watchdog import deadline_of
from ledger_service import dashboard as dashboard_pages
from ledger_service.http import (
    budgets,
    charges,
    docs,
    events,
    health,
    index,
    otlp,
    reading,
)
from ledger_service.http.auth import check_caller
from ledger_service.http.problems import (
    Problem,
    budget_problem,
    handle_problem,
    problem_response,
    request_seconds,
    unavailable_problem,
)
from ledger_service.http.security_headers import STRICT_CSP, secure_send
from ledger_service.http.slashes import RelativeSlashRedirect
from ledger_service.keys import KeyCache, close_reader, open_reader
from ledger_service.secret_key import load_secret_key
from projections.errors import ProjectionError

if TYPE_CHECKING:
    from ledger import Ledger

log = logging.getLogger("ledger_service.http")

DESCRIPTION = """Record LLM usage charges and read billing records over HTTP.

Send an API key from `ledger keys create` as `Authorization: Bearer KEY`.
Errors are RFC 9457 problem details naming each bad field.
`POST /api/v1/events` takes CloudEvents in OpenMeter's shape."""


class LedgerApp(FastAPI):
    """The API, with ``POST /v1/charges`` answered before the middleware stack and the router.

    The busiest request needs none of them: its handler checks the key, the
    body and the charge itself, and a refusal is answered by the same
    exception handlers as everywhere (an unexpected error is a plain 500, as
    on every other path, and is raised on to the server's log). Every other
    request, and this one under a root path, takes the usual way. Every
    response, on either way, carries the security headers.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        send = secure_send(send, STRICT_CSP)
        if (scope["path"] == "/v1/charges" and scope["method"] == "POST"
                and not scope.get("root_path") and not self.root_path):
            await self._record_charge(scope, receive, send)
            return
        with deadline_of(request_seconds(self.state.ledger.settings.retry_deadline_seconds)):
            await super().__call__(scope, receive, send)

    async def _record_charge(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self
        request = Request(scope, receive, send)
        try:
            response = await charges.record_charge_directly(request)
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:
                await PlainTextResponse("Internal Server Error", status_code=500)(scope, receive, send)
                raise
            response = await handler(request, exc)
        await response(scope, receive, send)

    def _handler_for(self, exc: Exception) -> Any:
        for kind in type(exc).__mro__:
            if kind in self.exception_handlers:
                return self.exception_handlers[kind]
        return None


def create_app(ledger: Ledger, http: HttpSettings | None = None, *, dashboard: DashboardSettings | None = None,
               owns_ledger: bool = False) -> FastAPI:
    """The API on ``ledger`` (sections not given are read from the environment now);
    with ``owns_ledger`` the app closes it on shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        close_reader(ledger)
        close_read_engine(ledger)
        if owns_ledger:
            ledger.close()

    app = LedgerApp(title="LLM usage ledger", version="1", description=DESCRIPTION, lifespan=lifespan,
                    redirect_slashes=False, docs_url=None, redoc_url=None)  # docs.router serves them offline
    app.state.ledger = ledger
    app.state.http = http or HttpSettings()
    app.state.dashboard = dashboard or DashboardSettings()
    open_reader(ledger, app.state.http)
    app.state.keys = KeyCache(app.state.http.key_cache_seconds)
    app.state.secret_key = load_secret_key(app.state.http).value
    for router in (index.router, charges.router, reading.router, budgets.router, events.router, otlp.router,
                   health.router, docs.router, dashboard_pages.router):
        app.include_router(router)
    app.router.default = RelativeSlashRedirect(app.router)
    app.mount("/dashboard/static", StaticFiles(directory=dashboard_pages.STATIC), name="dashboard-static")
    app.mount(docs.ASSETS, StaticFiles(directory=docs.STATIC), name="docs-assets")
    app.add_exception_handler(Problem, handle_problem)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(LedgerError, _ledger_error)
    app.add_exception_handler(ProjectionError, _projection_error)
    for error in DATABASE_ERRORS_SEEN_BY_HTTP:
        app.add_exception_handler(error, _database_error)
    return app


def app_from_environment() -> FastAPI:
    """An app on settings read from ``LEDGER_*`` variables now, for an ASGI server's factory
    (``uvicorn --factory ledger_service.http:app_from_environment``)."""
    from ledger.application import Ledger

    return create_app(Ledger(Settings()), owns_ledger=True)


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's own parameter checks (query and path), as a problem naming each parameter.

    The caller's key is checked first: an unknown key is 401 whatever its parameters.
    """
    assert isinstance(exc, RequestValidationError)
    try:
        await check_caller(request)
    except Problem as problem:
        return problem_response(problem, request)
    errors = [{"field": ".".join(str(p) for p in e["loc"][1:]) or str(e["loc"][0]), "detail": e["msg"]}
              for e in exc.errors()]
    return problem_response(Problem(422, "; ".join(f"{e['field']}: {e['detail']}" for e in errors),
                                    errors=errors), request)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return problem_response(Problem(exc.status_code, str(exc.detail), headers=exc.headers), request)


async def _ledger_error(request: Request, exc: Exception) -> JSONResponse:
    """What a handler did not map: input refused (422), a budget's refusal (402), an unknown budget or
    reservation (404), a reservation conflict (409), or the store busy (503, retry)."""
    if isinstance(exc, InvalidInput):
        return problem_response(Problem(422, str(exc), errors=[{"field": k, "detail": v}
                                                               for k, v in sorted(exc.errors.items())]), request)
    mapped = budget_problem(exc) or unavailable_problem(exc)
    if mapped is not None:
        return problem_response(mapped, request)
    if isinstance(exc, BusyAccount):
        return problem_response(Problem(503, str(exc), headers={"Retry-After": "1"}), request)
    log.warning("ledger error on %s: %s", request.url.path, exc)
    return problem_response(Problem(503, str(exc), headers={"Retry-After": "1"}), request)


async def _projection_error(request: Request, exc: Exception) -> JSONResponse:
    """The records cannot be brought up to date as configured (e.g. another billing zone)."""
    log.warning("projection refused on %s: %s", request.url.path, exc)
    return problem_response(Problem(503, str(exc)), request)


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    """503 + Retry-After while the database is unreachable, read-only or restarting; any other database error is a 500."""
    mapped = unavailable_problem(exc)
    if mapped is None:
        raise exc
    log.warning("database unavailable on %s: %s", request.url.path, exc)
    return problem_response(mapped, request)
