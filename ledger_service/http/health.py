"""``GET /healthz``: is the server up, can it reach its database, and are charges safe (no key needed).

``status`` and ``database`` answer liveness (503 when the database is
unreachable). ``replication`` says whether an acknowledged charge survives the
primary's loss (see :mod:`ledger.store.replication`) and where reports are
read from, with that standby's lag. An unsafe replication is reported, not
failed: the server still records. The standbys' addresses are left out, as
anyone may call this; ``ledger health`` and the dashboard show them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from ledger.store.keys import reachable, reader_of
from ledger.store.replication import Replication, read_replication
from ledger.store.replication_reads import Reads, reads_of
from ledger_service.http.query import known_query
from ledger_service.http.schemas import HealthOut, problem

if TYPE_CHECKING:
    from ledger import Ledger

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut, summary="Liveness, database reachability and replication health",
            responses={503: {"model": HealthOut, "description": "The database is unreachable."},
                       422: problem("An unknown query parameter.")})
async def healthz(request: Request, _known: None = Depends(known_query)) -> JSONResponse:
    return await run_in_threadpool(_health, request.app.state.ledger)


def _health(ledger: Ledger) -> JSONResponse:
    if not _database_reachable(ledger):
        return JSONResponse({"status": "unavailable", "database": "unreachable", "replication": None},
                            status_code=503)
    return JSONResponse({"status": "ok", "database": "ok", "replication": replication_body(ledger)})


def _database_reachable(ledger: Ledger) -> bool:
    """Through the engine the key lookups use, as a request's would."""
    return reachable(ledger.store)


def replication_body(ledger: Ledger) -> dict[str, Any]:
    """The ``replication`` object: the primary's state (through the lookups' engine) and the reads'."""
    reads = reads_of(ledger)
    try:
        state = read_replication(reader_of(ledger.store))
    except Exception as exc:  # noqa: BLE001 - reachable a moment ago; say what failed, keep answering
        text = str(getattr(exc, "orig", None) or exc).strip()
        return unknown_replication(text.splitlines()[0] if text else type(exc).__name__, reads)
    return replication_fields(state, reads)


def replication_fields(state: Replication, reads: Reads) -> dict[str, Any]:
    """A replication state as the API shows it (no standby addresses)."""
    return {
        "store": state.store,
        "role": state.role,
        "safe": state.safe,
        "verdict": state.verdict,
        "synchronous": state.synchronous,
        "synchronous_commit": state.synchronous_commit,
        "synchronous_standby_names": state.synchronous_standby_names,
        "standbys_visible": state.sees_standbys,
        "standbys": [{"name": s.name, "state": s.state, "sync_state": s.sync_state,
                      "replay_lag_seconds": s.replay_lag_seconds, "replay_lag_bytes": s.replay_lag_bytes}
                     for s in state.standbys],
        "reads": reads_fields(reads),
    }


def unknown_replication(error: str, reads: Reads) -> dict[str, Any]:
    return {"store": "postgresql", "role": "unknown", "safe": False,
            "verdict": f"unknown: could not read the replication state ({error})", "synchronous": False,
            "synchronous_commit": None, "synchronous_standby_names": None, "standbys_visible": False,
            "standbys": [], "reads": reads_fields(reads)}


def reads_fields(reads: Reads) -> dict[str, Any]:
    return {"source": reads.source, "lag_seconds": reads.lag_seconds, "lag_bytes": reads.lag_bytes,
            "status": "unreachable" if reads.error is not None else "ok", "summary": reads.summary}
