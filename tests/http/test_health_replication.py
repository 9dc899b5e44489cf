"""``/healthz``'s replication object, the start-up warning and the read side, through a real ``ledger serve``.

The server on 5432 has no standby (a streaming one is the failover trials'
formation): what the server says (read here directly) decides what is
expected. The read database is a stand-in: a second database, reached
read-only, holding usage of its own, so the answers say which database served them.
"""

from __future__ import annotations

import httpx
import pytest
from conftest import (
    PG_URL,
    database_beside,
    ensure_database,
    read_only,
    replication_of,
    reset_postgres,
    scalar,
)
from http_helpers import bearer, serving

from ledger import Ledger, Settings
from ledger_service.http.schemas import HealthOut
from projections import Projector

WARNING = "an acknowledged charge could be lost"
READ_URL = database_beside("read")
READ_ONLY = read_only(READ_URL)


@pytest.mark.postgres
def test_healthz_on_postgresql_says_whether_charges_are_safe_and_serve_warned_once(tmp_path):
    reset_postgres(PG_URL)
    state = replication_of(PG_URL)
    with serving(PG_URL) as server:
        answer = httpx.get(f"{server.url}/healthz", timeout=30)
        assert answer.status_code == 200
        body = answer.json()
        HealthOut.model_validate(body)
        documented = httpx.get(f"{server.url}/openapi.json", timeout=30).json()["components"]["schemas"]
        said = server.output()
    assert (body["status"], body["database"]) == ("ok", "ok")
    replication = body["replication"]
    assert (replication["store"], replication["role"]) == ("postgresql", "primary")
    assert (replication["safe"], replication["verdict"]) == (state.safe, state.verdict)
    assert replication["synchronous_commit"] == state.synchronous_commit
    assert replication["synchronous_standby_names"] == state.synchronous_standby_names
    assert [s["name"] for s in replication["standbys"]] == [s.name for s in state.standbys]
    assert all("address" not in s for s in replication["standbys"])  # no key needed here: no addresses
    assert replication["reads"] == {"source": "primary", "lag_seconds": None, "lag_bytes": None, "status": "ok",
                                    "summary": "reads from the primary"}
    assert {"replication"} <= set(documented["HealthOut"]["properties"])
    assert {"verdict", "safe", "standbys", "reads"} <= set(documented["ReplicationOut"]["properties"])
    warnings = [line for line in said.splitlines() if WARNING in line]
    assert len(warnings) == (0 if state.safe else 1), said
    if warnings:
        assert state.verdict in warnings[0]


def test_healthz_on_sqlite_says_embedded_single_file_and_serve_warns_nothing(tmp_path):
    with serving(f"sqlite:///{tmp_path / 'ledger.db'}") as server:
        body = httpx.get(f"{server.url}/healthz", timeout=30).json()
        said = server.output()
    HealthOut.model_validate(body)
    assert (body["status"], body["database"]) == ("ok", "ok")
    replication = body["replication"]
    assert (replication["store"], replication["role"], replication["verdict"]) == ("sqlite", "embedded",
                                                                                  "embedded, single file")
    assert replication["safe"] is False and replication["standbys"] == []
    assert WARNING not in said


@pytest.fixture
def standby_usage() -> str:
    """The stand-in read database, holding account "on-standby" (7 tokens), projected; its read-only URL."""
    ensure_database(READ_URL)
    reset_postgres(READ_URL)
    with Ledger(Settings(database_url=READ_URL)) as standby:
        standby.record_charge(account_id="on-standby", charge_type="usage", charge_id="s-1", prompt_tokens=7,
                              occurred_at="2026-11-20T12:00:00Z")
        Projector(standby).run()
    return READ_ONLY


@pytest.mark.postgres
def test_usage_reads_the_read_database_while_charges_and_totals_stay_on_the_primary(standby_usage, monkeypatch):
    reset_postgres(PG_URL)
    events_before = _count(READ_URL, "ledger_events")
    monkeypatch.setenv("LEDGER_READ_DATABASE_URL", standby_usage)
    with serving(PG_URL) as server:
        admin = server.new_key("--role", "admin")
        with httpx.Client(base_url=server.url, timeout=30, headers=bearer(admin)) as http:
            created = http.post("/v1/charges", json={"account_id": "on-primary", "charge_type": "usage",
                                                     "charge_id": "p-1", "prompt_tokens": 100,
                                                     "occurred_at": "2026-11-20T12:00:00Z"})
            assert created.status_code == 201
            usage = http.get("/v1/usage", params={"group_by": "account_id"}).json()["data"]
            totals = http.get("/v1/accounts/on-primary/totals").json()
            reads = http.get("/healthz").json()["replication"]["reads"]
        events_there = _count(READ_URL, "ledger_events")
    assert [(row["account_id"], row["prompt_tokens"]) for row in usage] == [("on-standby", 7)]
    assert totals["prompt_tokens"] == 100  # from the primary's log
    assert reads["source"] == "read database" and reads["status"] == "ok" and "not a standby" in reads["summary"]
    assert events_there == events_before  # nothing the server recorded went there
    assert _count(PG_URL, "daily_billing_records") == 1  # /v1/usage projected on the primary first


def _count(url: str, table: str) -> int:
    return scalar(url, f"SELECT count(*) FROM {table}")


@pytest.mark.postgres
def test_an_unreachable_read_database_is_reported_and_the_server_stays_up(monkeypatch):
    reset_postgres(PG_URL)
    monkeypatch.setenv("LEDGER_READ_DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:1/nowhere")
    with serving(PG_URL) as server:
        answer = httpx.get(f"{server.url}/healthz", timeout=30)
        admin = server.new_key("--role", "admin")
        usage = httpx.get(f"{server.url}/v1/usage", headers=bearer(admin), timeout=30)
        created = httpx.post(f"{server.url}/v1/charges", headers=bearer(admin), timeout=30,
                            json={"account_id": "acme", "charge_type": "usage", "prompt_tokens": 1})
    assert answer.status_code == 200 and answer.json()["status"] == "ok"
    assert usage.status_code == 503 and usage.headers["Retry-After"]  # the reports need the read database
    assert created.status_code == 201  # writes never do
    reads = answer.json()["replication"]["reads"]
    assert reads["status"] == "unreachable" and "unreachable" in reads["summary"]
