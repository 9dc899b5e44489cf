"""Schemathesis against the app's own OpenAPI document: no 5xx, and every response as documented.

Bounded (a few examples per operation) so it runs in seconds; with an admin
key every operation is reached, and with no key the 401 path is too.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from http_helpers import bearer
from ledger_service.http import create_app
from ledger_service.keys import create_key

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

for media_type in ("application/cloudevents+json", "application/cloudevents-batch+json"):
    @schemathesis.serializer(media_type)
    def _as_json(ctx, value):  # noqa: ANN001 - schemathesis's signature
        import json

        return json.dumps(value).encode()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_answers_as_documented(ledger, mode):
    key = create_key(ledger, "admin")[1]
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(ledger))

    @given(case=schema.as_strategy(mode))
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def answers_as_documented(case):
        response = case.call(headers=bearer(key))
        case.validate_response(response, checks=CHECKS)
        anonymous = case.call()
        if case.path != "/healthz":
            assert anonymous.status_code == 401
        case.validate_response(anonymous, checks=CHECKS)

    answers_as_documented()
