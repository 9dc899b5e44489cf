"""The LiteLLM callback in remote mode: charges go to a real ``ledger serve`` in batches.

The server runs on a loopback port; the callback's buffer and sender are the
real ones. The ledger going away and coming back loses nothing and counts
nothing twice; a buffer that stays full drops loudly, into the spill file.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import asyncio
import json
import logging
from collections.abc import Iterator

import litellm
import pytest
import sqlalchemy as sa
from conftest import PG_URL, admin_sql, scratch_database, wait_until

from ledger import Ledger, Settings
from ledger.importer import import_file
from ledger_service.integrations.litellm import LedgerCallback
from ledger_service.keys import create_key
from tests.http.http_helpers import free_port
from tests.integrations.litellm_support import (
    MESSAGES,
    all_payloads,
    asettled,
    cost,
    payloads,
    price_gpt_4o,
    registered,
    response,
    serving_on,
)


def call(n: int, account: str = "acme", *, prompt: int | None = None) -> None:
    litellm.completion(model="gpt-4o", messages=MESSAGES, user="ada", metadata={"ledger_account_id": account},
                       mock_response=response(f"chatcmpl-remote-{n}", prompt or 100 + n, 20))


def test_sync_and_async_calls_reach_ledger_serve_in_batches_once_each(ledger, store_url):
    price_gpt_4o(ledger)
    key = create_key(ledger, "ingest")[1]
    with serving_on(store_url, free_port()) as url:
        callback = LedgerCallback(url=url, key=key, batch_size=4)
        with registered(callback):
            for n in range(5):
                call(n)
            call(2)  # a retry of the same call

            async def calls() -> None:
                await asyncio.gather(*(litellm.acompletion(
                    model="gpt-4o", messages=MESSAGES, metadata={"ledger_account_id": "globex"},
                    mock_response=response(f"chatcmpl-async-{n}", 10, 5)) for n in range(3)))
                await asettled(callback, 3)

            asyncio.run(calls())
            wait_until(lambda: callback.counts.recorded + callback.counts.duplicates == 9, "9 charges handed over", 30)
            assert callback.flush(timeout=30)
        callback.close()

    acme = payloads(ledger, "acme")
    assert [c["charge_id"] for c in acme] == [f"chatcmpl-remote-{n}" for n in range(5)]
    assert [(c["user_id"], c["prompt_tokens"], c["completion_tokens"]) for c in acme] == [
        ("ada", 100 + n, 20) for n in range(5)]
    assert ledger.account_totals("acme").cost_micros == sum(cost(100 + n, 20) for n in range(5))
    assert [c["charge_id"] for c in payloads(ledger, "globex")] == [f"chatcmpl-async-{n}" for n in range(3)]
    assert (callback.counts.recorded, callback.counts.duplicates, callback.destination.pending) == (8, 1, 0)


def test_the_ledger_down_for_a_while_loses_nothing_and_counts_nothing_twice(ledger, store_url, caplog):
    price_gpt_4o(ledger)
    key = create_key(ledger, "ingest")[1]
    port = free_port()
    callback = LedgerCallback(url=f"http://127.0.0.1:{port}", key=key, batch_size=3, max_backoff_seconds=0.5)
    with registered(callback), caplog.at_level(logging.WARNING, logger="ledger_service.integrations.litellm"):
        with serving_on(store_url, port):
            for n in range(3):
                call(n)
            wait_until(lambda: callback.counts.recorded == 3, "the first charges recorded", 30)
        # The server is gone: calls go on, their charges wait in the buffer and are retried.
        for n in range(3, 9):
            call(n)
        call(1)  # a retry of a call the ledger already has
        wait_until(lambda: callback.destination.pending == 7, "7 charges buffered", 30)
        wait_until(lambda: any("not delivered yet" in r.getMessage() for r in caplog.records),
                   "a failed attempt logged", 30)
        assert not callback.flush(timeout=0.5)
        assert callback.counts.recorded == 3
        with serving_on(store_url, port):  # back, on the same address
            assert callback.flush(timeout=60)
    callback.close()

    charges = payloads(ledger, "acme")
    assert [c["charge_id"] for c in charges] == sorted(f"chatcmpl-remote-{n}" for n in range(9))
    assert ledger.account_totals("acme").charges == 9
    counts = callback.counts
    assert (counts.recorded, counts.duplicates, counts.dropped, counts.failed, counts.rejected) == (9, 1, 0, 0, 0)


def test_a_buffer_full_past_the_wait_drops_loudly_into_the_spill_file(ledger, tmp_path, caplog):
    spill = tmp_path / "unsent.jsonl"
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens: every attempt is refused
    callback = LedgerCallback(url=nowhere, key="lk_x_unused", batch_size=1, buffer_size=2, block_seconds=0.05,
                              max_backoff_seconds=0.2, spill_path=spill)
    with registered(callback), caplog.at_level(logging.ERROR, logger="ledger_service.integrations.litellm"):
        for n in range(6):
            call(n)
        wait_until(lambda: callback.counts.dropped + callback.destination.pending == 6, "6 calls handed over", 30)
        assert callback.counts.dropped >= 3  # at most 2 buffered and 1 in flight
        callback.close(timeout=0.5)  # what is still unsent is counted failed and spilled too

    counts = callback.counts
    assert counts.dropped + counts.failed == 6 and counts.recorded == 0
    spilled = [json.loads(line) for line in spill.read_text().splitlines()]
    assert sorted(c["charge_id"] for c in spilled) == sorted(f"chatcmpl-remote-{n}" for n in range(6))
    assert sum("not recorded (dropped)" in r.getMessage() for r in caplog.records) == counts.dropped

    # Nothing is lost: the spill file imports, each charge once (twice imported, still once).
    price_gpt_4o(ledger)
    assert import_file(ledger, str(spill)).recorded == 6
    assert import_file(ledger, str(spill)).duplicates == 6
    assert len(all_payloads(ledger)) == 6


def test_remote_mode_needs_a_key():
    with pytest.raises(ValueError, match="key= is required"):
        LedgerCallback(url="http://127.0.0.1:1")


@pytest.fixture
def own_database() -> Iterator[str]:
    """A PostgreSQL database of this test's own, which it may make unreachable."""
    with scratch_database("litellm_down") as name:
        yield name


@pytest.mark.postgres
def test_the_ledgers_database_down_answers_503_and_the_sender_retries_until_it_is_back(own_database, monkeypatch,
                                                                                       caplog):
    url = sa.engine.make_url(PG_URL).set(database=own_database).render_as_string(hide_password=False)
    monkeypatch.setenv("LEDGER_RETRY_DEADLINE_SECONDS", "1")  # the server refuses at once instead of waiting
    with Ledger(Settings(database_url=url)) as setup:
        key = create_key(setup, "ingest")[1]
    with serving_on(url, free_port()) as server:
        callback = LedgerCallback(url=server, key=key, max_backoff_seconds=0.5)
        with registered(callback), caplog.at_level(logging.WARNING, logger="ledger_service.integrations.litellm"):
            call(0)
            call(1)
            wait_until(lambda: callback.counts.recorded == 2, "the first charges recorded", 30)
            admin_sql(f'ALTER DATABASE "{own_database}" ALLOW_CONNECTIONS false')
            admin_sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{own_database}'")
            for n in (2, 3, 4, 0):  # new calls, and a retry of one the ledger has
                call(n)
            wait_until(lambda: any("HTTP 503" in r.getMessage() for r in caplog.records), "a 503 answer", 60)
            assert not callback.flush(timeout=0.5)
            admin_sql(f'ALTER DATABASE "{own_database}" ALLOW_CONNECTIONS true')
            assert callback.flush(timeout=60)
        callback.close()

    with Ledger(Settings(database_url=url)) as after:
        assert [c["charge_id"] for c in payloads(after, "acme")] == [f"chatcmpl-remote-{n}" for n in range(5)]
        assert after.account_totals("acme").charges == 5
    assert (callback.counts.recorded, callback.counts.duplicates, callback.counts.failed) == (5, 1, 0)
