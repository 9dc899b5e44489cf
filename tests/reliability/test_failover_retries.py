"""Through a lost or frozen PostgreSQL, recording retries with the same charge ids and never counts twice.

The ledger talks to the real server through a loopback proxy
(:mod:`tests.fault_proxy`) that the test cuts (every connection closed),
deafens (the server's answers held back: a commit that happened, whose
caller cannot know) or freezes (nothing forwarded, sockets open: a
SIGSTOPped primary). Counts are read straight from the server, past the proxy.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from conftest import PG_URL, wait_until

from ledger import Ledger, Settings
from ledger.errors import LedgerUnavailable
from tests.fault_proxy import FaultProxy

pytestmark = pytest.mark.postgres

#: Small deadlines keep the file fast; the proof of "no hang" is a generous multiple of them.
DEADLINE = 3.0
CONNECT_TIMEOUT = 1


@pytest.fixture
def made() -> Iterator[list[Ledger]]:
    ledgers: list[Ledger] = []
    yield ledgers
    for ledger in ledgers:
        ledger.close()


@pytest.fixture
def proxy(postgres_url, made) -> Iterator[FaultProxy]:
    """The proxy (closed before the test's ledgers are, so a failed test cannot leave them waiting on it)."""
    proxy = FaultProxy()
    yield proxy
    proxy.close()


@pytest.fixture
def ledger(proxy, made) -> Ledger:
    """A ledger whose every connection goes through the proxy; one charge recorded (schema made, pool warm)."""
    ledger = Ledger(Settings(database_url=proxy.url(PG_URL), retry_deadline_seconds=DEADLINE,
                             connect_timeout_seconds=CONNECT_TIMEOUT, sequence_interval_ms=20))
    made.append(ledger)
    ledger.record_charge(**charge("warm-up"))
    return ledger


@pytest.fixture
def server() -> Iterator[sa.engine.Engine]:
    """The server itself, past the proxy."""
    engine = sa.create_engine(PG_URL)
    yield engine
    engine.dispose()


def charge(charge_id: str | None, account: str = "acme", prompt: int = 10) -> dict[str, Any]:
    fields: dict[str, Any] = {"account_id": account, "charge_type": "completion", "prompt_tokens": prompt}
    if charge_id is not None:
        fields["charge_id"] = charge_id
    return fields


def indexed(server: sa.engine.Engine, account: str = "acme") -> dict[str, int]:
    """Per charge id, how many times the server holds it in the index (at most once, by its key)."""
    with server.connect() as connection:
        rows = connection.execute(sa.text(
            "SELECT charge_id, count(*) FROM ledger_charge_index WHERE account_id = :a GROUP BY charge_id"
        ), {"a": account}).all()
    return {charge_id: count for charge_id, count in rows}


def counted(account: str = "acme") -> int:
    """Charges the log counts for the account, read by a ledger on the server directly."""
    with Ledger(Settings(database_url=PG_URL)) as direct:
        direct.sequence()
        return direct.account_totals(account).charges


def in_thread(call, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    future = pool.submit(call, *args, **kwargs)
    pool.shutdown(wait=False)
    return future


# -- an unknown outcome resolves to the original receipt ---------------------------------


def test_a_commit_whose_answer_is_lost_answers_with_the_original_receipt(ledger, proxy, server):
    """The commit happens, its answer is lost with the connection: the retry finds the charge, counted once."""
    proxy.deafen()
    future = in_thread(ledger.record_charge, **charge("c-1"))
    wait_until(lambda: "c-1" in indexed(server), "the charge committed on the server", timeout=10)
    proxy.cut()
    proxy.thaw()
    receipt = future.result(timeout=DEADLINE * 3)
    assert receipt.charge_id == "c-1"
    assert receipt.duplicate  # the original, recorded by the attempt whose answer was lost
    assert indexed(server)["c-1"] == 1
    assert counted() == 2  # the warm-up and c-1, once


def test_a_generated_id_is_made_once_before_the_first_attempt(ledger, proxy, server):
    """Without a caller's id, the retry carries the id the first attempt stored: one charge, not two."""
    before = set(indexed(server))
    proxy.deafen()
    future = in_thread(ledger.record_charges, [charge(None, prompt=7), charge(None, prompt=8)])
    wait_until(lambda: len(indexed(server)) == len(before) + 2, "both charges committed", timeout=10)
    proxy.cut()
    proxy.thaw()
    outcomes = future.result(timeout=DEADLINE * 3)
    stored = set(indexed(server)) - before
    assert {outcome.receipt.charge_id for outcome in outcomes} == stored
    assert all(outcome.receipt.duplicate for outcome in outcomes)
    assert counted() == 3


def test_a_cut_before_the_commit_arrives_stores_the_charge_on_the_retry(ledger, proxy, server):
    """The request never reached the server: the retry stores it, as new."""
    proxy.freeze()
    future = in_thread(ledger.record_charge, **charge("c-2"))
    time.sleep(0.3)
    proxy.cut()
    proxy.thaw()
    receipt = future.result(timeout=DEADLINE * 3)
    assert (receipt.charge_id, receipt.duplicate) == ("c-2", False)
    assert indexed(server)["c-2"] == 1
    assert counted() == 2


def test_group_commit_through_a_cut_counts_every_charge_once(ledger, proxy, server):
    """Concurrent callers share transactions; a cut mid-commit fails the shared one, each caller retries."""
    ids = [f"g-{n}" for n in range(40)]
    proxy.deafen()
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(ledger.record_charge, **charge(charge_id)) for charge_id in ids]
        wait_until(lambda: any(charge_id.startswith("g-") for charge_id in indexed(server)),
                   "a shared transaction committed", timeout=10)
        proxy.cut()
        proxy.thaw()
        receipts = [future.result(timeout=DEADLINE * 3) for future in futures]
    assert [r.charge_id for r in receipts] == ids
    held = indexed(server)
    assert all(held[charge_id] == 1 for charge_id in ids)
    assert counted() == len(ids) + 1


# -- a frozen primary: LedgerUnavailable by the deadline, never a hang ---------------------


def test_a_frozen_server_raises_ledger_unavailable_and_the_same_call_succeeds_after(ledger, proxy, server):
    proxy.freeze()
    started = time.monotonic()
    with pytest.raises(LedgerUnavailable) as raised:
        ledger.record_charge(**charge("f-1"))
    waited = time.monotonic() - started
    assert waited < 3 * DEADLINE + CONNECT_TIMEOUT, f"waited {waited:.1f} s"  # no hang
    assert raised.value.charge_ids == ["f-1"]
    assert "retried with the same charge id" in str(raised.value)
    proxy.thaw()
    receipt = ledger.record_charge(**charge("f-1"))
    assert receipt.charge_id == "f-1"
    assert indexed(server)["f-1"] == 1
    assert counted() == 2


def test_a_generated_id_is_named_by_ledger_unavailable(ledger, proxy, server):
    """A charge without an id: the error names the id it was given, and retrying with it counts it once."""
    proxy.freeze()
    with pytest.raises(LedgerUnavailable) as raised:
        ledger.record_charge(**charge(None, account="beta"))
    (charge_id,) = raised.value.charge_ids
    proxy.thaw()
    receipt = ledger.record_charge(**charge(charge_id, account="beta"))
    assert receipt.charge_id == charge_id
    assert indexed(server, "beta") == {charge_id: 1}
    assert counted("beta") == 1


# -- a read-only server (a demoted primary, a standby) --------------------------------------


def test_a_read_only_server_is_retried_on_a_new_connection(postgres_url, made, server):
    """A connection that finds the server read-only is dropped with the pool's; the retry's new one writes."""
    ledger = Ledger(Settings(database_url=postgres_url, retry_deadline_seconds=10, connect_timeout_seconds=1))
    made.append(ledger)
    ledger.record_charge(**charge("warm-up"))
    database = sa.engine.make_url(postgres_url).database
    with server.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql(f'ALTER DATABASE "{database}" SET default_transaction_read_only = on')
    try:
        # Connections opened now are read-only: the ledger's next one (after its own is dropped) sees it.
        ledger.store._close_connection()
        future = in_thread(ledger.record_charge, **charge("r-1"))
        time.sleep(1.0)  # a few read-only attempts
    finally:
        with server.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql(f'ALTER DATABASE "{database}" RESET default_transaction_read_only')
    receipt = future.result(timeout=15)
    assert (receipt.charge_id, receipt.duplicate) == ("r-1", False)
    assert indexed(server)["r-1"] == 1


# -- long-running parts carry on -----------------------------------------------------------


def test_the_sequencer_carries_on_after_a_cut_and_says_so_once(ledger, proxy, caplog):
    caplog.set_level(logging.WARNING, logger="ledger.store.sequencer")
    for n in range(5):
        ledger.record_charge(**charge(f"s-{n}"))
    proxy.cut(refuse=True)
    lost = "lost the database"
    for _ in range(3):  # turns that fail while the database is gone: one line says so
        ledger.store._sequencer.poke()
        wait_until(lambda: any(lost in r.getMessage() for r in caplog.records), "the sequencer's line", timeout=10)
        time.sleep(0.1)
    proxy.heal()
    for n in range(5, 10):
        ledger.record_charge(**charge(f"s-{n}"))
    wait_until(lambda: counted() == 11, "every charge sequenced into the log", timeout=15)
    wait_until(lambda: any("reached the database again" in r.getMessage() for r in caplog.records),
               "the sequencer's line when it is back", timeout=10)
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert sum(lost in line for line in lines) == 1
    assert sum("reached the database again" in line for line in lines) == 1


# -- reservations: idempotent by reservation id -------------------------------------------


def test_reserve_and_capture_through_lost_answers_hold_once_and_record_once(ledger, proxy, server):
    """A reservation made without an id gets it before the first attempt; the capture's retry finds its charge."""
    def holds() -> list[tuple[str, str]]:
        with server.connect() as connection:
            return [tuple(row) for row in connection.execute(sa.text("SELECT reservation_id, state FROM ledger_holds"))]

    proxy.deafen()
    future = in_thread(ledger.reserve, "acme", estimate_micros=1_000)
    wait_until(holds, "the hold committed on the server", timeout=10)
    proxy.cut()
    proxy.thaw()
    reservation = future.result(timeout=DEADLINE * 3)
    assert holds() == [(reservation.reservation_id, "held")]

    reservation = ledger.reserve("acme", estimate_micros=1_000)  # made here: its capture is one call
    proxy.deafen()
    future = in_thread(ledger.capture, reservation.reservation_id, charge_type="completion", prompt_tokens=3)
    wait_until(lambda: dict(holds())[reservation.reservation_id] == "captured", "the capture committed",
               timeout=10)
    proxy.cut()
    proxy.thaw()
    captured = future.result(timeout=DEADLINE * 3)
    assert captured.charge_id == reservation.reservation_id
    assert indexed(server)[reservation.reservation_id] == 1
    assert counted() == 2


# -- ledger serve: 503 with Retry-After during the window, never 500 ------------------------


def test_ledger_serve_answers_503_with_retry_after_while_the_database_is_gone(proxy, monkeypatch, server):
    from tests.http.http_helpers import bearer, ledger_command, serving

    monkeypatch.setenv("LEDGER_RETRY_DEADLINE_SECONDS", str(DEADLINE))
    monkeypatch.setenv("LEDGER_CONNECT_TIMEOUT_SECONDS", str(CONNECT_TIMEOUT))
    with serving(proxy.url(PG_URL)) as running:
        key = json.loads(ledger_command(PG_URL, "keys", "create", "--role", "ingest", "--json"))["key"]

        def post(charge_id: str) -> httpx.Response:
            return httpx.post(f"{running.url}/v1/charges", json=charge(charge_id), headers=bearer(key),
                              timeout=DEADLINE * 4)

        assert post("h-0").status_code in (200, 201)
        proxy.cut(refuse=True)
        refused = post("h-1")
        assert refused.status_code == 503, refused.text
        assert int(refused.headers["Retry-After"]) > 0
        assert "h-1" in refused.json()["charge_ids"]
        proxy.heal()
        proxy.freeze()
        frozen = post("h-2")
        assert frozen.status_code == 503, frozen.text
        assert int(frozen.headers["Retry-After"]) > 0
        proxy.thaw()
        for charge_id in ("h-1", "h-2"):
            assert post(charge_id).status_code in (200, 201)
        admin = json.loads(ledger_command(PG_URL, "keys", "create", "--role", "admin", "--json"))["key"]
        totals = f"{running.url}/v1/accounts/acme/totals"
        assert httpx.get(totals, headers=bearer(admin), timeout=DEADLINE * 4).status_code == 200
        with proxy.frozen():  # a read waits on a frozen server for the request's bound, not forever
            read = httpx.get(totals, headers=bearer(admin), timeout=DEADLINE * 6)
        assert read.status_code == 503, read.text
        assert int(read.headers["Retry-After"]) > 0
    assert {charge_id: indexed(server)[charge_id] for charge_id in ("h-0", "h-1", "h-2")} == {
        "h-0": 1, "h-1": 1, "h-2": 1}


def test_the_projector_carries_on_after_a_cut_exactly_once(ledger, proxy):
    """A run that loses the database fails as transient (the worker retries it); the next one completes,
    each charge projected once: the audit, which reads the log, finds the records equal to it."""
    from jobs.retries import is_transient
    from projections import Projector
    from projections.audit import audit

    for n in range(30):
        ledger.record_charge(**charge(f"p-{n}", account=f"acct-{n % 3}"))
    Projector(ledger).run(max_events=10)
    proxy.cut(refuse=True)
    with pytest.raises(Exception) as raised:
        Projector(ledger).run()
    assert is_transient(raised.value)
    proxy.heal()
    projector = Projector(ledger)
    projector.run()
    assert projector.position() == ledger.log_position()
    assert audit(ledger).clean


# -- multi-host URLs -----------------------------------------------------------------------


def test_a_multi_host_url_records_on_the_host_that_answers(postgres_url, made, server):
    """libpq tries each ``host`` in turn; a dead first host is passed over (and the writable one kept)."""
    from tests.http.http_helpers import free_port

    target = sa.engine.make_url(postgres_url)
    dead = f"127.0.0.1:{free_port()}"
    url = (f"postgresql+psycopg2://{target.username}@/{target.database}"
           f"?host={dead}&host={target.host}:{target.port or 5432}")
    ledger = Ledger(Settings(database_url=url, retry_deadline_seconds=10, connect_timeout_seconds=1))
    made.append(ledger)
    assert ledger.record_charge(**charge("m-1")).charge_id == "m-1"
    assert indexed(server) == {"m-1": 1}
    with ledger.store.engine.connect() as connection:
        assert connection.exec_driver_sql("SHOW transaction_read_only").scalar() == "off"
