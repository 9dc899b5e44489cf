"""Text rules over HTTP, through a real ``ledger serve``: every text field and field name of every door.

Each refused character class (controls, lone surrogates, unassigned code
points, and in ids invisible and direction controls) in each field gets the
field named with the character (``U+200B``) and nothing stored, one charge,
a batch item (its valid neighbour stored, once) or an event alike; hostile
field names are named escaped. No answer is a 5xx, and every answer is JSON
that decodes. One server per store serves the module: each test's charges
have ids of its own, and each counts what it added to the store.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from http_helpers import bearer, module_store_url, shared_server  # noqa: F401 - fixtures
from ledger import Ledger, Settings
from tests.reliability.hostile_corpus import HOSTILE_NAMES

#: One worker runs the module, so its shared server starts once per store.
pytestmark = pytest.mark.xdist_group("http-input-text")

REFUSED = {"a\x00b": "U+0000", "x\x1b[2J": "U+001B", "two\nlines": "U+000A", "x\x85y": "U+0085",
           "\ud800": "U+D800", "x\udfff": "U+DFFF", "\u0378": "U+0378"}
INVISIBLE = {"a\u200bb": "U+200B", "\u200dx": "U+200D", "\u202eacme": "U+202E", "x\u2066y\u2069": "U+2066",
             "\ufeffx": "U+FEFF"}
ID_FIELDS = ["account_id", "user_id", "charge_id"]
FREE_TEXT = ["provider", "model", "session_key", "reference"]
#: Event field -> whether it is an id (refuses invisible characters too).
EVENT_FIELDS = {"subject": True, "id": True, "source": True, "data.user_id": True, "type": False,
                "data.model": False, "data.provider": False, "data.reference": False, "data.session_key": False}
CHARGE = {"account_id": "acme", "user_id": "u1", "charge_type": "completion", "prompt_tokens": 3,
          "completion_tokens": 1, "occurred_at": "2026-02-01T10:00:00Z"}
EVENT = {"specversion": "1.0", "id": "e", "source": "gw", "type": "prompt", "subject": "acme",
         "time": "2026-02-01T10:00:00Z", "data": {"tokens": 5, "type": "input"}}


class Door:
    """The server, an admin key, and the store's charge count to compare with; charge ids start ``prefix``."""

    def __init__(self, server: Any, prefix: str) -> None:
        self.http = httpx.Client(base_url=server.url, timeout=30,
                                 headers=bearer(server.new_key("--role", "admin")))
        self.ledger = Ledger(Settings(database_url=server.database_url))
        self.prefix = prefix
        self.serial = 0

    def post(self, path: str, body: Any, content_type: str = "application/json") -> httpx.Response:
        """``body`` as JSON with ASCII escapes: a lone surrogate travels as ``\\ud800``, as any client sends it."""
        answer = self.http.post(path, content=json.dumps(body).encode(), headers={"Content-Type": content_type})
        assert answer.status_code < 500, (path, body, answer.text)
        if answer.content:
            answer.json()  # decodes, whatever was echoed
        return answer

    def charges(self) -> int:
        self.ledger.sequence()
        table = self.ledger.recorder.events_record_cls.__table__
        with self.ledger.recorder.transaction(commit=False) as session:
            return int(session.execute(sa.select(sa.func.count()).select_from(table)
                                       .where(table.c.topic.like("%ChargeRecorded"))).scalar())

    def fresh(self, **fields: Any) -> dict[str, Any]:
        self.serial += 1
        return {**CHARGE, "charge_id": f"{self.prefix}-{self.serial}", **fields}

    def close(self) -> None:
        self.http.close()
        self.ledger.close()


def named(answer: httpx.Response, field: str, code: str) -> bool:
    """The answer names ``field`` and the character."""
    errors = answer.json().get("errors") or []
    return any(e["field"] == field and code in e["detail"] for e in errors)


def expectations() -> list[tuple[str, str, str | None]]:
    """(field, value, the code its refusal names, or None when the value is kept).

    A charge type is text before it is looked up: a refused character is named as such.
    """
    cases = [(name, value, code) for name in ID_FIELDS + FREE_TEXT + ["charge_type"]
             for value, code in REFUSED.items()]
    cases += [(name, value, code if name in ID_FIELDS else None) for name in ID_FIELDS + FREE_TEXT
              for value, code in INVISIBLE.items()]
    return cases


def test_each_character_class_in_each_charge_field(shared_server):
    door = Door(shared_server, "charge")
    try:
        failures = []
        for name, value, code in expectations():
            before = door.charges()
            charge = door.fresh(**{name: value})
            one = door.post("/v1/charges", charge)
            ok = one.status_code == 201 if code is None else one.status_code == 422 and named(one, name, code)
            neighbour = door.fresh()
            batch = door.post("/v1/charges/batch", {"charges": [neighbour, door.fresh(**{name: value})]})
            outcomes = [o["status"] for o in batch.json()["outcomes"]]
            if code is None:
                ok = ok and outcomes == ["recorded", "recorded"]
            else:
                item = batch.json()["outcomes"][1]
                ok = ok and outcomes == ["recorded", "invalid"] and any(
                    e["field"] == name and code in e["detail"] for e in item["errors"])
            grown = door.charges() - before
            if not ok or grown != (3 if code is None else 1):
                failures.append((name, ascii(value), one.status_code, one.text[:200], batch.text[:300], grown))
        assert failures == []
    finally:
        door.close()


def test_each_character_class_in_each_event_field(shared_server):
    door = Door(shared_server, "event")
    try:
        failures = []
        serial = 0
        for path, is_id in EVENT_FIELDS.items():
            for value, code in {**REFUSED, **INVISIBLE}.items():
                refused = value in REFUSED or is_id
                serial += 1
                event = json.loads(json.dumps({**EVENT, "id": f"e-{serial}"}))
                holder, key = (event["data"], path[5:]) if path.startswith("data.") else (event, path)
                holder[key] = value
                before = door.charges()
                batch = [{**EVENT, "id": f"n-{serial}"}, event]
                answer = door.post("/api/v1/events", batch, "application/cloudevents-batch+json")
                grown = door.charges() - before
                if refused:
                    ok = answer.status_code == 400 and named(answer, f"events[1].{path}", code) and grown == 0
                else:
                    ok = answer.status_code == 204 and grown == 2
                if not ok:
                    failures.append((path, ascii(value), answer.status_code, answer.text[:300], grown))
        assert failures == []
    finally:
        door.close()


def test_hostile_field_names_are_named_escaped_and_nothing_else_is_lost(shared_server):
    door = Door(shared_server, "name")
    try:
        for name in HOSTILE_NAMES:
            shown = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in name)
            before = door.charges()
            one = door.post("/v1/charges", {**door.fresh(), name: 1})
            assert one.status_code == 422 and shown in [e["field"] for e in one.json()["errors"]], one.text
            batch = door.post("/v1/charges/batch", {"charges": [door.fresh(), {**door.fresh(), name: 1}]})
            assert batch.status_code == 200, batch.text
            first, second = batch.json()["outcomes"]
            assert first["status"] == "recorded" and second["status"] == "invalid"
            assert [e["field"] for e in second["errors"]] == [shown]
            assert door.charges() - before == 1
            # CloudEvents: unknown attributes and data fields are ignored, as OpenMeter ignores them.
            event = {**EVENT, "id": f"name-{ascii(name)}", name: "x", "data": {**EVENT["data"], name: 1}}
            assert door.post("/api/v1/events", event, "application/cloudevents+json").status_code == 204
            assert door.charges() - before == 2
            reversal = door.post("/v1/charges/name-1/reversal", {name: 1})
            assert reversal.status_code == 422, reversal.text
    finally:
        door.close()


def test_reversal_reasons_follow_the_free_text_rules(shared_server):
    door = Door(shared_server, "reason")
    try:
        assert door.post("/v1/charges", door.fresh()).status_code == 201  # reason-1
        for value, code in REFUSED.items():
            answer = door.post("/v1/charges/reason-1/reversal", {"reason": value, "account_id": "acme"})
            assert answer.status_code == 422 and named(answer, "reason", code), answer.text
        for path in ("/v1/charges/reason%001/reversal", "/v1/charges/reason%E2%80%8B1/reversal"):
            assert door.post(path, {"account_id": "acme"}).status_code == 404
        answer = door.post("/v1/charges/reason-1/reversal", {"reason": "\u202eevil \u200b", "account_id": "acme"})
        assert answer.status_code == 200, answer.text
    finally:
        door.close()
