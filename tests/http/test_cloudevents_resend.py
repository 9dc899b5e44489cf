"""CloudEvents resends count once, as OpenMeter counts them, through a real ``ledger serve``.

The ``cloudevents`` SDK stamps a new ``time`` whenever an event is built, so
a client that rebuilds an event to retry it sends the same (source, id) with
another time; one that leaves the time out gets "now". Either is the same
event: 204, counted once. Any other difference is a 409 naming the fields.
One server per store serves the module; each test counts a subject of its own.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest
from cloudevents.conversion import to_structured
from cloudevents.http import CloudEvent

from http_helpers import bearer, module_store_url, shared_server  # noqa: F401 - fixtures

#: One worker runs the module, so its shared server starts once per store.
pytestmark = pytest.mark.xdist_group("http-cloudevents-resend")


def build(event_id: str, subject: str, *, prompt: int = 10, stamped: bool = True, **attributes: str) -> CloudEvent:
    """An event for ``subject`` as a client builds it for each attempt (the SDK stamps the time now unless
    told not to)."""
    base = {"type": "prompt", "source": "gateway", "id": event_id, "subject": subject, **attributes}
    if not stamped:
        base["time"] = None  # the SDK then leaves the attribute out
    return CloudEvent(base, {"prompt_tokens": prompt, "completion_tokens": 2, "model": "gpt-4o"})


def send(http: httpx.Client, key: str, *events: CloudEvent, batch: bool = False) -> httpx.Response:
    if batch:
        body = json.dumps([json.loads(to_structured(event)[1]) for event in events])
        headers = {"Content-Type": "application/cloudevents-batch+json"}
    else:
        (event,) = events
        headers, body = to_structured(event)
    return http.post("/api/v1/events", content=body, headers={**headers, **bearer(key)})


def totals(http: httpx.Client, key: str, subject: str) -> tuple[int, int, int]:
    figures = http.get(f"/v1/accounts/{subject}/totals", headers=bearer(key)).json()
    return figures["charges"], figures["prompt_tokens"], figures["total_tokens"]


def test_a_rebuilt_event_counts_once(shared_server):
    subject = "customer-r1"
    key = shared_server.new_key("--role", "admin")
    with httpx.Client(base_url=shared_server.url, timeout=30) as http:
        first = build("evt-1", subject)
        assert send(http, key, first).status_code == 204
        time.sleep(0.01)
        retry = build("evt-1", subject)
        assert retry["time"] != first["time"]  # what the SDK does: a new time per build
        answer = send(http, key, retry)
        assert answer.status_code == 204, answer.text
        assert send(http, key, build("evt-1", subject, time="2031-05-05T05:05:05Z")).status_code == 204
        assert totals(http, key, subject) == (1, 10, 12)


def test_an_event_first_sent_without_time_then_with_one_counts_once(shared_server):
    subject = "customer-r2"
    key = shared_server.new_key("--role", "admin")
    with httpx.Client(base_url=shared_server.url, timeout=30) as http:
        untimed = build("evt-2", subject, stamped=False)
        assert "time" not in json.loads(to_structured(untimed)[1])
        assert send(http, key, untimed).status_code == 204
        assert send(http, key, build("evt-2", subject)).status_code == 204
        assert send(http, key, build("evt-2", subject, stamped=False)).status_code == 204
        assert totals(http, key, subject) == (1, 10, 12)
        # And the other way round: first with a time, then without.
        assert send(http, key, build("evt-3", subject, time="2026-02-01T10:00:00Z")).status_code == 204
        assert send(http, key, build("evt-3", subject, stamped=False)).status_code == 204
        assert totals(http, key, subject) == (2, 20, 24)


def test_a_resend_with_other_facts_is_409_naming_them_not_the_time(shared_server):
    subject = "customer-r3"
    key = shared_server.new_key("--role", "admin")
    with httpx.Client(base_url=shared_server.url, timeout=30) as http:
        assert send(http, key, build("evt-4", subject)).status_code == 204
        changed = send(http, key, build("evt-4", subject, prompt=11))
        assert changed.status_code == 409, changed.text
        assert {e["field"] for e in changed.json()["errors"]} == {"events[0].data.prompt_tokens",
                                                                 "events[0].data.total_tokens"}
        other_user = build("evt-4", subject)
        other_user.data["user_id"] = "someone-else"
        assert {e["field"] for e in send(http, key, other_user).json()["errors"]} == {"events[0].data.user_id"}
        assert totals(http, key, subject) == (1, 10, 12)


def test_a_rebuilt_batch_counts_each_event_once(shared_server):
    subject = "customer-r4"
    key = shared_server.new_key("--role", "ingest")
    reader = shared_server.new_key("--role", "read", "--account", subject)
    with httpx.Client(base_url=shared_server.url, timeout=30) as http:
        first = [build("b-1", subject), build("b-2", subject, stamped=False)]
        assert send(http, key, *first, batch=True).status_code == 204
        time.sleep(0.01)
        rebuilt = [build("b-1", subject), build("b-2", subject), build("b-3", subject)]
        answer = send(http, key, *rebuilt, batch=True)
        assert answer.status_code == 204, answer.text
        assert totals(http, reader, subject) == (3, 30, 36)
        mixed = [build("b-1", subject), build("b-2", subject, prompt=99), build("b-4", subject)]
        conflict = send(http, key, *mixed, batch=True)
        assert conflict.status_code == 409
        assert {e["field"] for e in conflict.json()["errors"]} == {"events[1].data.prompt_tokens",
                                                                  "events[1].data.total_tokens"}
        assert totals(http, reader, subject) == (4, 40, 48)  # b-4 stored; b-1 a resend; b-2 refused
