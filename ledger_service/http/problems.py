"""RFC 9457 problem details: every refusal names what was wrong, field by field.

A problem may echo a caller's text (a field name, a value): the ledger's own
messages show it escaped, field names are made printable here, and the body
is written by an encoder that cannot fail (:mod:`ledger_service.http.encoding`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import Request

from ledger.errors import (
    BudgetExceeded,
    LedgerError,
    LedgerUnavailable,
    ReservationConflict,
    UnknownBudget,
    UnknownReservation,
    UnknownWebhook,
)
from ledger.store.engine import transient
from ledger.text import printable
from ledger_service.http.encoding import JsonAnswer

MEDIA_TYPE = "application/problem+json"

TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    402: "Budget exceeded",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    409: "Conflict",
    413: "Content too large",
    415: "Unsupported media type",
    422: "Invalid input",
    503: "Service unavailable",
}


class Problem(Exception):
    """A refusal: raised anywhere in a request, answered as problem+json."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        errors: Sequence[Mapping[str, Any]] = (),
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = [dict(e) for e in errors]
        self.headers = dict(headers or {})
        self.extra = extra

    def body(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": "about:blank",
            "title": title(self.status),
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        if self.errors:
            body["errors"] = self.errors
        body.update(self.extra)
        return body


def title(status: int) -> str:
    """The problem's title: the project's words for its own statuses, HTTP's phrase for the rest."""
    found = TITLES.get(status)
    if found is not None:
        return found
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def field_errors(errors: Mapping[str, str], prefix: str = "") -> list[dict[str, str]]:
    """``{field: message}`` as the problem's ``errors`` list, in field order."""
    return [{"field": f"{prefix}{printable(name)}", "detail": message} for name, message in sorted(errors.items())]


def problem_response(problem: Problem, request: Request | None = None) -> JsonAnswer:
    instance = request.url.path if request is not None else None
    return JsonAnswer(problem.body(instance), status_code=problem.status, headers=problem.headers,
                      media_type=MEDIA_TYPE)


async def handle_problem(request: Request, exc: Exception) -> JsonAnswer:
    assert isinstance(exc, Problem)
    return problem_response(exc, request)


#: What each unknown-thing error names: the field and what it is.
UNKNOWN = {UnknownBudget: ("budget_id", "unknown budget"), UnknownReservation: ("reservation_id", "unknown reservation"),
           UnknownWebhook: ("endpoint_id", "unknown webhook")}


def budget_problem(exc: LedgerError) -> Problem | None:
    """The problem for a budget, reservation or webhook error (None for any other error).

    402 names the budget, its figures as its status names them
    (``limit_micros``… or ``limit_tokens``…) and the estimate; the estimate
    field is the one named in ``errors``.
    """
    if isinstance(exc, BudgetExceeded):
        unit = "tokens" if any(name.endswith("_tokens") for name in exc.figures) else "micros"
        return Problem(402, str(exc), errors=[{"field": f"estimate_{unit}", "detail": (
            f"budget {printable(exc.budget_id)} has {exc.figures.get(f'remaining_{unit}', 0)} {unit} remaining")}],
            budget_id=exc.budget_id, **exc.figures, estimate=exc.estimate)
    if isinstance(exc, ReservationConflict):
        return Problem(409, str(exc), errors=[{"field": "reservation_id", "detail": exc.reason}])
    for kind, (field, what) in UNKNOWN.items():
        if isinstance(exc, kind):
            return Problem(404, str(exc), errors=[{"field": field, "detail": what}])
    return None


#: Seconds a client is asked to wait while the database is unreachable (a failover takes about 10).
RETRY_AFTER_SECONDS = 5


def request_seconds(retry_deadline_seconds: float) -> float:
    """How long a request's database calls may take in all: twice the writes' retry deadline (60 s by default).

    A frozen primary answers nothing and no TCP timeout ends the wait, so a
    read without this bound would wait for it forever; past it the call's
    connection is shut down (:mod:`ledger.store.watchdog`) and the request is
    answered 503 with ``Retry-After``. Writes end sooner, by their own deadline.
    """
    return 2.0 * retry_deadline_seconds


def unavailable_problem(exc: BaseException) -> Problem | None:
    """503 with ``Retry-After`` while the database cannot be reached (a failover's window); None otherwise.

    The ledger's own retries ran out (:class:`LedgerUnavailable`, naming the
    charge ids to retry with), or a read met a lost, read-only or shutting
    down server: the request may be repeated as it was.
    """
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    if isinstance(exc, LedgerUnavailable):
        return Problem(503, str(exc), headers=headers, charge_ids=exc.charge_ids)
    if transient(exc):
        return Problem(503, "the database is unavailable; retry later", headers=headers)
    return None
