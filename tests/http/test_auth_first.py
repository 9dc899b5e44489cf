"""Authentication comes first: no key, a malformed, unknown or revoked key is 401 whatever the body.

Through a real ``ledger serve``: every endpoint, with bodies that would
otherwise be 400 (malformed JSON), 413 (too large), 415 (wrong content type)
or 422 (bad fields), answers 401 to a caller without a valid key, and stores
nothing. A key outside its role is 403 before its body is looked at. One
server per store serves the module: each test makes its own keys, and counts
what it stored from its own start.
"""

from __future__ import annotations

import json

import httpx
import pytest

from http_helpers import Server, bearer, ledger_cli, module_store_url, shared_server  # noqa: F401 - fixtures
from ledger import Ledger, Settings

#: One worker runs the module, so its shared server starts once per store.
pytestmark = pytest.mark.xdist_group("http-auth-first")

UNKNOWN = "lk_0123456789abcdef_" + "A" * 43  # well formed, never issued
GOOD = {"account_id": "acme", "charge_type": "completion", "prompt_tokens": 1, "charge_id": "c1"}
EVENT = {"specversion": "1.0", "id": "e1", "source": "app", "type": "prompt", "subject": "acme",
         "data": {"tokens": 5, "type": "input"}}
LIMIT = 1024 * 1024  # LEDGER_HTTP_MAX_BODY_BYTES's default

#: (path, content type it takes, a valid body)
WRITES = [
    ("/v1/charges", "application/json", GOOD),
    ("/v1/charges/batch", "application/json", {"charges": [GOOD]}),
    ("/v1/charges/c1/reversal", "application/json", {"reason": "test", "account_id": "acme"}),
    ("/api/v1/events", "application/cloudevents+json", EVENT),
]
READS = ["/v1/accounts/acme/totals", "/v1/usage"]


def bodies(content_type: str, valid: dict) -> dict[str, tuple[bytes, str]]:
    """Bodies each refused by one check of the body (or accepted), by name: (content, content type)."""
    return {
        "valid": (json.dumps(valid).encode(), content_type),
        "too large": (b'{"x": "' + b"x" * LIMIT + b'"}', content_type),
        "wrong content type": (json.dumps(valid).encode(), "text/plain"),
        "no content type": (json.dumps(valid).encode(), ""),
        "malformed JSON": (b'{"account_id": ', content_type),
        "not UTF-8": (b"\xff\xfe{", content_type),
        "empty": (b"", content_type),
        "surrogate field name": (b'{"\\ud800": 1}', content_type),
        "hostile values": (json.dumps({**valid, "charge_id": "a\x00\u200b\ud800"}).encode(), content_type),
    }


def stored(url: str) -> int:
    """Events in the log (charges sequenced first, as readers do)."""
    ledger = Ledger(Settings(database_url=url))
    try:
        ledger.sequence()
        return ledger.recorder.max_notification_id() or 0
    finally:
        ledger.close()


def credentials(server: Server) -> dict[str, dict[str, str]]:
    """Each way of holding no valid key; the revoked key is made and revoked with ``ledger keys``."""
    revoked = server.new_key_made("--role", "admin")
    ledger_cli(server.database_url, "keys", "revoke", revoked["id"])
    return {"no key": {}, "not bearer": {"Authorization": "Basic YWxhZGRpbjpvcGVuc2VzYW1l"},
            "malformed": bearer("nope"), "scheme only": {"Authorization": "Bearer"},
            "unknown": bearer(UNKNOWN), "revoked": bearer(revoked["key"])}


def test_every_endpoint_answers_401_before_looking_at_the_body(shared_server):
    refused = credentials(shared_server)
    before = stored(shared_server.database_url)
    failures = []
    with httpx.Client(base_url=shared_server.url, timeout=60) as http:
        for path, content_type, valid in WRITES:
            for body_name, (content, kind) in bodies(content_type, valid).items():
                for who, headers in refused.items():
                    answer = http.post(path, content=content, headers={**headers, "Content-Type": kind})
                    if answer.status_code != 401 or "www-authenticate" not in answer.headers:
                        failures.append((path, body_name, who, answer.status_code, answer.text[:200]))
                    elif answer.headers["content-type"] != "application/problem+json":
                        failures.append((path, body_name, who, answer.headers["content-type"]))
        for path in READS:
            for who, headers in refused.items():
                answer = http.get(path, headers=headers)
                if answer.status_code != 401:
                    failures.append((path, who, answer.status_code))
    assert failures == []
    assert stored(shared_server.database_url) == before


def test_a_declared_oversized_body_is_401_unread(shared_server):
    """A Content-Length over the limit is answered at once: 401 to an unknown key, 413 to a known one."""
    admin = shared_server.new_key("--role", "admin")
    huge = b"[" + b"1," * (LIMIT // 2) + b"1]"
    with httpx.Client(base_url=shared_server.url, timeout=60) as http:
        for path, content_type, _ in WRITES:
            headers = {"Content-Type": content_type}
            assert http.post(path, content=huge, headers={**headers, **bearer(UNKNOWN)}).status_code == 401
            assert http.post(path, content=huge, headers={**headers, **bearer(admin)}).status_code == 413


def test_a_key_outside_its_role_is_403_before_its_body_is_judged(shared_server):
    reader = shared_server.new_key("--role", "read", "--account", "acme")
    before = stored(shared_server.database_url)
    with httpx.Client(base_url=shared_server.url, timeout=60) as http:
        for path, content_type, valid in WRITES:
            for body_name, (content, kind) in bodies(content_type, valid).items():
                answer = http.post(path, content=content, headers={**bearer(reader), "Content-Type": kind})
                assert answer.status_code == 403, (path, body_name, answer.text)
    assert stored(shared_server.database_url) == before


def test_a_valid_key_still_gets_each_body_refusal(shared_server):
    """The order changed, not the checks: with a good key each bad body gets its own status."""
    admin = shared_server.new_key("--role", "admin")
    expected = {"too large": 413, "wrong content type": 415, "no content type": 415, "malformed JSON": 400,
                "not UTF-8": 400}
    with httpx.Client(base_url=shared_server.url, timeout=60) as http:
        for path, content_type, valid in WRITES:
            for body_name, status in expected.items():
                content, kind = bodies(content_type, valid)[body_name]
                answer = http.post(path, content=content, headers={**bearer(admin), "Content-Type": kind})
                assert answer.status_code == status, (path, body_name, answer.text)


def test_bad_query_parameters_are_401_for_an_unknown_key(shared_server):
    """FastAPI's own parameter checks answer after the key's: a bad limit is no way to probe without one."""
    for name, headers in credentials(shared_server).items():
        for query in ("limit=0", "limit=many", "acount=x"):
            answer = httpx.get(f"{shared_server.url}/v1/usage?{query}", headers=headers, timeout=30)
            assert answer.status_code == 401, (name, query, answer.text)
