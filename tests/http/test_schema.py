"""Schemathesis against the API's own OpenAPI document, through a real ``ledger serve``.

Two properties, bounded so each store takes seconds:

- every operation answers as documented (status, content type, body
  schema) to generated requests, valid and not, and without a key is 401;
- hostile text in every field and every field name (lone surrogates, NUL and
  other controls, invisible and direction-control characters, unassigned code
  points: :data:`hostile_corpus.HOSTILE_TEXT`) never gets a 5xx, and the log
  grows by exactly what the answer says was stored: nothing for a refusal.

One server per store serves both.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterator

import pytest
import schemathesis
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from http_helpers import bearer, module_store_url, shared_server  # noqa: F401 - fixtures
from ledger import Ledger, Settings
from tests.reliability.hostile_corpus import HOSTILE_NAMES, HOSTILE_TEXT, url_safe

#: One worker runs the module, so its shared server starts once per store.
pytestmark = pytest.mark.xdist_group("http-schema")

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
#: Names of text fields in any body (charges, batch items, reversals, events, event data):
#: set on any object of a body, each is either that object's field or an unknown one.
TEXT_FIELDS = ["account_id", "user_id", "charge_id", "provider", "model", "session_key", "reference",
               "charge_type", "occurred_at", "reason", "id", "source", "type", "subject", "time"]
USAGE_PARAMETERS = ["account", "user", "from", "to", "charge_type", "provider", "model", "group_by"]
SETTINGS = dict(deadline=None, suppress_health_check=list(HealthCheck), database=None)

for media_type in ("application/cloudevents+json", "application/cloudevents-batch+json"):
    @schemathesis.serializer(media_type)
    def _as_json(ctx, value):  # noqa: ANN001 - schemathesis's signature
        return json.dumps(value).encode()  # ASCII escapes: a lone surrogate travels as "\ud800"


class Log:
    """The charges and reversals in the log, as a reader sees them (acknowledged charges sequenced first)."""

    def __init__(self, url: str) -> None:
        self.ledger = Ledger(Settings(database_url=url))

    def count(self) -> int:
        self.ledger.sequence()
        table = self.ledger.recorder.events_record_cls.__table__
        stored = sa.or_(table.c.topic.like("%ChargeRecorded"), table.c.topic.like("%ChargeReversed"))
        with self.ledger.recorder.transaction(commit=False) as session:
            return int(session.execute(sa.select(sa.func.count()).select_from(table).where(stored)).scalar())


@pytest.fixture
def log(shared_server) -> Iterator[Log]:
    log = Log(shared_server.database_url)
    yield log
    log.ledger.close()


def test_every_operation_answers_as_documented(shared_server):
    key = shared_server.new_key("--role", "admin")
    schema = schemathesis.openapi.from_url(f"{shared_server.url}/openapi.json")
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

        @given(case=schema.as_strategy(mode))
        @settings(max_examples=60 * settings.default.max_examples // 100, **SETTINGS)
        def answers_as_documented(case):
            response = case.call(headers=bearer(key))
            case.validate_response(response, checks=CHECKS)
            anonymous = case.call()
            if case.path != "/healthz":
                assert anonymous.status_code == 401
            case.validate_response(anonymous, checks=CHECKS)

        answers_as_documented()


def test_hostile_text_anywhere_is_refused_or_stored_as_answered(shared_server, log):
    key = shared_server.new_key("--role", "admin")
    schema = schemathesis.openapi.from_url(f"{shared_server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {f"{o.method.upper()} {o.path}" for o in operations} >= {
        "POST /v1/charges", "POST /v1/charges/batch", "POST /v1/charges/{charge_id}/reversal",
        "GET /v1/accounts/{account_id}/totals", "GET /v1/usage", "POST /api/v1/events"}
    for operation in operations:

        @given(case=operation.as_strategy(GenerationMode.POSITIVE), data=st.data())
        @settings(max_examples=30 * settings.default.max_examples // 100, **SETTINGS)
        def never_5xx_and_stores_only_what_it_answers(case, data):
            spoiled = spoil(case, data.draw)
            for headers in (bearer(key), {}):
                before = log.count()
                response = case.call(headers=headers)
                grown = log.count() - before
                shown = (case.method, case.path, spoiled, response.status_code, response.text[:300])
                assert response.status_code < 500, shown
                if not headers and case.path != "/healthz":
                    assert response.status_code == 401, shown
                assert grown in stored_by(case, response), (*shown, grown)
                case.validate_response(response, checks=CHECKS)

        never_5xx_and_stores_only_what_it_answers()


def spoil(case: Any, draw: Callable[[Any], Any]) -> str:
    """Put hostile text in one place of ``case``: a body value, a body field name, the query or the path."""
    objects = list(_objects(case.body))
    places = [*(["value", "name"] if objects else []), *(["query"] if case.path == "/v1/usage" else []),
              *(["path"] if case.path_parameters else [])]
    if not places:
        return "nothing to spoil"
    place = draw(st.sampled_from(places))
    if place == "path":
        name = draw(st.sampled_from(sorted(case.path_parameters)))
        case.path_parameters[name] = draw(_hostile(url_safe(HOSTILE_TEXT)))
        return f"path {name}={case.path_parameters[name]!a}"
    if place == "query":
        name = draw(st.sampled_from(USAGE_PARAMETERS))
        case.query = {**(case.query or {}), name: draw(_hostile(url_safe(HOSTILE_TEXT)))}
        return f"query {name}={case.query[name]!a}"
    target = draw(st.sampled_from(objects))
    if place == "name":
        name = draw(st.sampled_from(HOSTILE_NAMES))
        target[name] = draw(st.sampled_from([1, "x", None]))
        return f"field name {name!a}"
    name = draw(st.sampled_from(sorted({*TEXT_FIELDS, *(k for k, v in target.items() if isinstance(v, str))})))
    target[name] = draw(_hostile(HOSTILE_TEXT))
    return f"field {name}={target[name]!a}"


def stored_by(case: Any, response: Any) -> range:
    """How many events the answer says the request added to the log."""
    status, path = response.status_code, case.path
    if case.method.upper() == "GET" or status >= 400 and not (path == "/api/v1/events" and status == 409):
        return range(0, 1)
    if path == "/v1/charges":
        return range(1, 2) if status == 201 else range(0, 1)
    if path == "/v1/charges/batch":
        recorded = response.json()["recorded"]
        return range(recorded, recorded + 1)
    if path == "/v1/charges/{charge_id}/reversal":
        return range(1, 2)
    events = case.body if isinstance(case.body, list) else [case.body]
    return range(0, len(events) + 1)  # 204: new events and resends; 409: the others were stored


def _hostile(texts: list[str]) -> st.SearchStrategy[str]:
    """One hostile text, alone or inside ordinary text."""
    return st.builds(lambda text, before, after: f"{before}{text}{after}", st.sampled_from(texts),
                     st.sampled_from(["", "acme-"]), st.sampled_from(["", "-1"]))


def _objects(body: Any) -> Iterator[dict[str, Any]]:
    """Every JSON object in ``body``, nested ones included."""
    if isinstance(body, dict):
        yield body
        for value in body.values():
            yield from _objects(value)
    elif isinstance(body, list):
        for value in body:
            yield from _objects(value)
