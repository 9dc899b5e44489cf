"""``GET /healthz``: is the server up, and can it reach its database (no key needed)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from ledger.store.keys import reachable
from ledger_service.http.query import known_query
from ledger_service.http.schemas import HealthOut, problem

if TYPE_CHECKING:
    from ledger import Ledger

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut, summary="Liveness and database reachability",
            responses={503: {"model": HealthOut, "description": "The database is unreachable."},
                       422: problem("An unknown query parameter.")})
async def healthz(request: Request, _known: None = Depends(known_query)) -> JSONResponse:
    reachable = await run_in_threadpool(_database_reachable, request.app.state.ledger)
    if reachable:
        return JSONResponse({"status": "ok", "database": "ok"})
    return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)


def _database_reachable(ledger: Ledger) -> bool:
    """Through the engine the key lookups use, as a request's would."""
    return reachable(ledger.store)
