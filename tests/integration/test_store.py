"""The store boundary: each dialect's store keeps the Store protocol, numbers streams by one rule,
installs its SQL with the registry's lock keys, and takes its pool from the settings."""

from __future__ import annotations

import inspect

import pytest
import sqlalchemy as sa

from ledger import Ledger, Settings
from ledger.domain import account_uuid
from ledger.store.base import Store
from ledger.store.locks import LockKey
from ledger.store.postgres import WRITE_PATH_SQL, PostgresStore
from ledger.store.recorder import LedgerRecorder
from ledger.store.sqlite import SQLiteStore


def _protocol_members() -> set[str]:
    return {name for name in vars(Store) if not name.startswith("_")}


@pytest.mark.parametrize("store_class", [PostgresStore, SQLiteStore])
def test_each_store_offers_every_protocol_member_with_its_signature(store_class):
    for name in _protocol_members():
        mine, theirs = getattr(store_class, name), vars(Store)[name]
        if isinstance(theirs, property):
            assert isinstance(mine, property), name
            continue
        expected = list(inspect.signature(theirs).parameters)
        assert list(inspect.signature(mine).parameters) == expected, name


def test_the_ledger_store_is_its_dialect_store(ledger):
    expected = PostgresStore if ledger.store.dialect == "postgresql" else SQLiteStore
    assert type(ledger.store) is expected
    assert ledger.store.events_table.name == "ledger_events"
    assert ledger.store.snapshots_table.name == "ledger_snapshots"


def test_installed_sql_holds_the_registry_keys_and_no_mark():
    assert not any("@LockKey" in script for script in WRITE_PATH_SQL)
    assert all(str(int(key)) not in script for script in WRITE_PATH_SQL[:2] for key in LockKey)


@pytest.mark.postgres
def test_postgres_lock_key_functions_answer_the_registry(postgres_url):
    ledger = Ledger(Settings(database_url=postgres_url))
    try:
        with ledger.store.engine.connect() as connection:
            prices, sequencer = connection.execute(
                sa.text("SELECT ledger_prices_lock_key(), ledger_sequencer_lock_key()")
            ).one()
        assert (prices, sequencer) == (LockKey.PRICES, LockKey.SEQUENCER)
    finally:
        ledger.close()


def _charge(n: int) -> dict:
    return {"account_id": "acme", "charge_id": f"c-{n}", "charge_type": "completion", "prompt_tokens": n}


@pytest.mark.parametrize("batch", [1, 3, 250])  # the intake (one, several) and, on PostgreSQL, the locked path
def test_a_stream_continues_after_its_snapshot_whatever_the_path(make_ledger, batch):
    """An account whose events were pruned below its snapshot: the next charge follows the snapshot."""
    ledger = make_ledger()
    ledger.record_charge(**_charge(0))
    ledger.sequence()
    store = ledger.store
    stream = account_uuid("acme")
    with store.engine.begin() as connection:
        state = connection.execute(
            sa.select(store.events_table.c.state).where(store.events_table.c.originator_id == stream)
            .order_by(store.events_table.c.originator_version.desc()).limit(1)
        ).scalar_one()
        connection.execute(store.snapshots_table.insert().values(
            originator_id=stream, originator_version=10, topic="ledger.domain:Account", state=state))
    ledger.record_charges([_charge(n) for n in range(1, batch + 1)])
    ledger.sequence()
    with store.engine.connect() as connection:
        versions = connection.execute(
            sa.select(store.events_table.c.originator_version).where(store.events_table.c.originator_id == stream)
            .order_by(store.events_table.c.originator_version)
        ).scalars().all()
    assert versions == [1, 2, *range(11, 11 + batch)]


@pytest.mark.postgres
def test_the_pool_comes_from_the_settings(postgres_url):
    ledger = Ledger(Settings(database_url=postgres_url, pool_size=3, pool_max_overflow=2, pool_recycle_seconds=60))
    try:
        pool = ledger.store.engine.pool
        assert (pool.size(), pool._max_overflow, pool._recycle) == (3, 2, 60)  # type: ignore[attr-defined]
    finally:
        ledger.close()


def test_old_import_paths_warn_and_resolve():
    from ledger import persistence, sequencer
    from ledger.store.schema import charge_index
    from ledger.store.sequencer import Sequencer

    with pytest.warns(DeprecationWarning, match="ledger.store.recorder"):
        assert persistence.LedgerRecorder is LedgerRecorder
    with pytest.warns(DeprecationWarning):
        assert persistence.charge_ids is charge_index
    with pytest.warns(DeprecationWarning):
        assert sequencer.Sequencer is Sequencer
    with pytest.raises(AttributeError):
        persistence.nothing_here  # noqa: B018


@pytest.mark.postgres
@pytest.mark.parametrize("batch", [1, 3])  # the intake's one-charge path and its set-based path
def test_an_intake_row_carries_the_opened_state_only_while_the_log_lacks_the_account(postgres_url, batch):
    """The Opened event is written once, by the sequencer, for a stream it does not hold yet; rows of an
    account the log already holds leave it out (less WAL), and sequencing still numbers them after it."""
    ledger = Ledger(Settings(database_url=postgres_url, sequence_interval_ms=10_000))  # no turn of its own meanwhile

    def record(prefix: str) -> list[int]:
        ledger.record_charges([{"charge_id": f"{prefix}-{n}", "account_id": "fresh", "user_id": "u",
                                "charge_type": "completion", "prompt_tokens": 1, "completion_tokens": 1}
                               for n in range(batch)])
        with ledger.store.engine.connect() as connection:
            return [length for (length,) in connection.execute(sa.text(
                "SELECT length(opened_state) FROM ledger_intake WHERE originator_id = :o ORDER BY seq"
            ), {"o": str(account_uuid("fresh"))})]

    try:
        assert all(length > 0 for length in record("first"))  # a new account: its Opened state goes along
        ledger.sequence()
        assert record("later") == [0] * batch  # the log holds it now
        ledger.sequence()
        account = ledger.get_account("fresh")
        assert account.version == 1 + 2 * batch
        assert ledger.account_totals("fresh").charges == 2 * batch
    finally:
        ledger.close()
