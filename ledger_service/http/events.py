"""``POST /api/v1/events``: OpenMeter-compatible CloudEvents ingestion.

All or nothing for bad input: every event is mapped and validated first,
and if any is bad the answer is a 400 problem naming each bad event and
field, and nothing is stored. Valid events are recorded together; a resent
event is a duplicate (counted once). 204 when every event is accepted.

An event is identified by its (source, id), as OpenMeter deduplicates
events: a resend that differs from the recorded event only in ``time`` is
that event again (the ``cloudevents`` SDK stamps a new time whenever an
event is rebuilt for a retry, and an event without a time is stamped
"now"), counted once. Any other difference is a conflict (409).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from ledger.errors import ChargeConflict, InvalidCharge, LedgerError
from ledger.text import printable
from ledger_service.http.auth import Caller, WriteCaller
from ledger_service.http.bodies import read_json
from ledger_service.http.cloudevents import event_field, to_charge
from ledger_service.http.problems import Problem
from ledger_service.http.schemas import AUTH_PROBLEMS, BODY_PROBLEMS, problem

if TYPE_CHECKING:
    from ledger import Ledger

router = APIRouter(tags=["events"])

SINGLE = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
ACCEPTED = (SINGLE, BATCH, "application/json")

EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["specversion", "id", "source", "type", "subject"],
    "properties": {
        "specversion": {"type": "string", "enum": ["1.0"]},
        "id": {"type": "string", "minLength": 1},
        "source": {"type": "string", "minLength": 1},
        "type": {"type": "string", "minLength": 1},
        "subject": {"type": "string", "minLength": 1, "description": "The account."},
        "time": {"type": ["string", "null"], "format": "date-time"},
        "datacontenttype": {"type": ["string", "null"], "enum": ["application/json", None]},
        "dataschema": {"type": ["string", "null"]},
        "data": {"type": ["object", "null"], "description": "Charge fields by name, or "
                 '{"tokens": N, "type": "input"|"output", "model": ...}.'},
    },
}


@router.post(
    "/api/v1/events",
    status_code=204,
    summary="Ingest CloudEvents (OpenMeter's API): one event or a batch",
    responses={204: {"description": "Every event accepted (new or a resend)."},
               400: problem("Bad events, each named with its bad fields; nothing was stored."),
               409: problem("An event's (source, id) was recorded with other facts; the rest were stored."),
               **AUTH_PROBLEMS, **{k: v for k, v in BODY_PROBLEMS.items() if k != 400}},
    openapi_extra={"requestBody": {"required": True, "content": {
        SINGLE: {"schema": EVENT_SCHEMA},
        BATCH: {"schema": {"type": "array", "items": EVENT_SCHEMA}},
        "application/json": {"schema": {"oneOf": [EVENT_SCHEMA, {"type": "array", "items": EVENT_SCHEMA}]}},
    }}},
)
async def ingest_events(request: Request, caller: WriteCaller) -> Response:
    settings = request.app.state.http
    body = await read_json(request, ACCEPTED, settings.max_body_bytes)
    await run_in_threadpool(_ingest, request.app.state.ledger, caller, body, settings.max_batch)
    return Response(status_code=204)


def _ingest(ledger: Ledger, caller: Caller, body: Any, max_batch: int) -> None:
    key = caller.key(ledger)
    events = body if isinstance(body, list) else [body]
    if len(events) > max_batch:
        raise Problem(413, f"at most {max_batch:,} events per batch, got {len(events):,}",
                      errors=[{"field": "events", "detail": f"at most {max_batch} events"}])
    settings = ledger.settings
    charges: list[dict[str, Any]] = []
    bad: list[dict[str, Any]] = []
    outside: list[dict[str, str]] = []
    for index, event in enumerate(events):
        fields, errors = to_charge(event, settings.charge_types, settings.max_string_length)
        if not errors:
            try:
                ledger.validate(fields)
            except InvalidCharge as exc:
                errors = {event_field(name): message for name, message in exc.errors.items()}
        if errors:
            bad.extend({"field": f"events[{index}].{name}", "detail": message,
                        "event": _event_id(event)} for name, message in sorted(errors.items()))
        elif not key.may_act_for(fields["account_id"]):
            outside.append({"field": f"events[{index}].subject", "detail": "outside this key's account"})
        charges.append(fields)
    if bad:
        count = len({e["field"].split("]")[0] for e in bad})
        first = f'{bad[0]["field"]}: {bad[0]["detail"]}'  # clients that show only the detail still see why
        raise Problem(400, f"{count} of {len(events)} event(s) invalid, nothing was stored; first: {first}",
                      errors=bad)
    if outside:
        raise Problem(403, f"this key records events for subject {key.account_id!r} only; nothing was stored",
                      errors=outside)
    differing = {o.index: names for o in ledger.record_charges(charges) if (names := _conflicting(o.error))}
    if differing:
        conflicts = [{"field": f"events[{index}].{event_field(name)}", "detail": "differs from the event "
                      "recorded with this source and id"} for index, names in differing.items() for name in names]
        raise Problem(409, _conflict_detail(len(events), len(differing)), errors=conflicts)


def _conflict_detail(events: int, conflicting: int) -> str:
    """What a 409 says happened: a lone event stored nothing; in a batch, the rest were recorded."""
    if events == 1:
        return ("this event was recorded before with the same source and id but other facts; "
                "nothing was stored")
    return (f"{conflicting} of {events} events were recorded before with the same source and id but "
            "other facts and were not stored; the others were recorded (or were already)")


def _conflicting(error: LedgerError | None) -> list[str]:
    """The charge fields that make a resent event a conflict: any but its time."""
    if not isinstance(error, ChargeConflict):
        return []
    return [name for name in error.fields if name != "occurred_at"]


def _event_id(event: Any) -> str | None:
    """The event's id as given, escaped where unprintable (it is echoed in the answer)."""
    value = event.get("id") if isinstance(event, dict) else None
    return printable(value[:256]) if isinstance(value, str) else None
