"""OTLP JSON for the tests: an ExportTraceServiceRequest as the OTLP/HTTP JSON encoding writes it."""

from __future__ import annotations

import base64
from typing import Any

from google.protobuf.json_format import MessageToDict


def message_json(message: Any) -> dict[str, Any]:
    """``message`` as OTLP JSON: ids in hex (protobuf's JSON mapping writes base64), enums as integers."""
    body = MessageToDict(message, use_integers_for_enums=True)
    for resource_spans in body["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                for name in ("traceId", "spanId", "parentSpanId"):
                    if name in span:
                        span[name] = base64.b64decode(span[name]).hex()
    return body
