"""The Ledger service on each real store: exactly once, append-only, nothing lost."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from ledger import (
    AlreadyReversed,
    ChargeConflict,
    InvalidCharge,
    Totals,
    UnknownAccount,
    UnknownCharge,
)
from ledger.store.schema import charge_index

T0 = datetime(2026, 2, 1, 12, tzinfo=timezone.utc)


def charge(**overrides):
    fields = dict(account_id="acme", user_id="u1", charge_type="completion", provider="openai",
                  model="gpt-4o", prompt_tokens=100, completion_tokens=50, occurred_at=T0)
    fields.update(overrides)
    return fields


def stored_events(ledger) -> list:
    return ledger.recorder.select_notifications(start=1, limit=100_000)


def test_seed_example_is_recorded_durably(ledger, make_ledger):
    receipt = ledger.record_charge(user_profile_id=123, charge_type="usage",
                                   prompt_tokens=100, completion_tokens=50)
    assert receipt.account_id == "profile-123" and not receipt.duplicate
    fresh = make_ledger()  # another process's view: only what was committed
    assert fresh.account_totals("profile-123") == Totals.of_unpriced(1, 100, 50, 150)


def test_duplicate_returns_the_original_receipt_and_stores_nothing(ledger):
    first = ledger.record_charge(**charge(charge_id="c-1"))
    count = len(stored_events(ledger))
    again = ledger.record_charge(**charge(charge_id="c-1"))
    assert again.duplicate and again.charge_id == "c-1" and again.account_id == "acme"
    assert again.recorded_at == first.recorded_at
    assert len(stored_events(ledger)) == count
    assert ledger.account_totals("acme") == Totals.of_unpriced(1, 100, 50, 150)


def test_retry_without_a_time_is_still_a_duplicate(ledger):
    fields = charge(charge_id="task-7")
    del fields["occurred_at"]
    ledger.record_charge(**fields)
    assert ledger.record_charge(**fields).duplicate
    assert ledger.account_totals("acme").charges == 1


def test_conflicting_payload_names_the_differences(ledger):
    ledger.record_charge(**charge(charge_id="c-1"))
    with pytest.raises(ChargeConflict) as caught:
        ledger.record_charge(**charge(charge_id="c-1", model="gpt-4o-mini", prompt_tokens=101))
    assert caught.value.fields == ["model", "prompt_tokens", "total_tokens"]
    assert "recorded 'gpt-4o', now 'gpt-4o-mini'" in str(caught.value)
    assert ledger.account_totals("acme") == Totals.of_unpriced(1, 100, 50, 150)


def test_invalid_charge_stores_nothing(ledger):
    with pytest.raises(InvalidCharge) as caught:
        ledger.record_charge(**charge(prompt_tokens=-1))
    assert list(caught.value.errors) == ["prompt_tokens"]
    assert stored_events(ledger) == []


def test_batch_reports_per_item_and_keeps_valid_neighbours(ledger):
    items = [charge(charge_id=f"b-{i}", prompt_tokens=i, completion_tokens=0) for i in range(20)]
    items[3] = charge(charge_id="b-3", charge_type="nonsense")
    items[7] = charge(charge_id="b-2", prompt_tokens=999, completion_tokens=0)  # conflicts with b-2
    items[11] = charge(charge_id="b-10", prompt_tokens=10, completion_tokens=0)  # repeats b-10
    outcomes = ledger.record_charges(items)
    assert [o.index for o in outcomes] == list(range(20))
    assert isinstance(outcomes[3].error, InvalidCharge) and "charge_type" in outcomes[3].error.errors
    assert isinstance(outcomes[7].error, ChargeConflict)
    assert outcomes[11].ok and outcomes[11].receipt.duplicate
    recorded = [i for i in range(20) if i not in (3, 7, 11)]
    assert all(outcomes[i].ok and not outcomes[i].receipt.duplicate for i in recorded)
    assert ledger.account_totals("acme") == Totals.of_unpriced(17, sum(recorded), 0, sum(recorded))
    # A second submission of the whole batch is all duplicates (or the same errors).
    again = ledger.record_charges(items)
    assert all(o.receipt.duplicate for o in again if o.ok)
    assert ledger.account_totals("acme").charges == 17


def test_batch_across_accounts_in_one_transaction(ledger):
    items = [charge(account_id=f"acct-{i % 5}", charge_id=f"x-{i}") for i in range(50)]
    assert all(o.ok for o in ledger.record_charges(items))
    for n in range(5):
        assert ledger.account_totals(f"acct-{n}") == Totals.of_unpriced(10, 1000, 500, 1500)


def test_reversal_is_a_new_event(ledger):
    ledger.record_charge(**charge(charge_id="c-1"))
    ledger.record_charge(**charge(charge_id="c-2", prompt_tokens=1, completion_tokens=1))
    receipt = ledger.reverse_charge("c-1", reason="customer refund")
    assert receipt.account_id == "acme"
    assert ledger.account_totals("acme") == Totals.of_unpriced(1, 1, 1, 2)
    topics = [n.topic.rsplit(".", 1)[-1] for n in stored_events(ledger)]
    assert topics == ["Opened", "ChargeRecorded", "ChargeRecorded", "ChargeReversed"]
    with pytest.raises(AlreadyReversed):
        ledger.reverse_charge("c-1", reason="again")
    with pytest.raises(UnknownCharge):
        ledger.reverse_charge("never-recorded")
    assert ledger.account_totals("acme") == Totals.of_unpriced(1, 1, 1, 2)


def test_reversed_charge_id_stays_a_duplicate(ledger):
    ledger.record_charge(**charge(charge_id="c-1"))
    ledger.reverse_charge("c-1")
    assert ledger.record_charge(**charge(charge_id="c-1")).duplicate
    assert ledger.account_totals("acme").charges == 0


def test_unknown_account(ledger):
    with pytest.raises(UnknownAccount):
        ledger.account_totals("nobody")


def test_index_and_event_commit_together(ledger):
    """A failure after the index row is written leaves neither row nor event."""
    ledger.record_charge(**charge(charge_id="ok"))
    with pytest.raises(Exception):
        with ledger.recorder.transaction(commit=True) as session:
            ledger.record_charge(**charge(charge_id="doomed"))
            raise RuntimeError("crash before commit")
    assert ledger.store.find_charge("acme", "doomed") is None
    assert len(stored_events(ledger)) == 2
    assert ledger.record_charge(**charge(charge_id="doomed")).duplicate is False


def test_recorded_events_are_never_rewritten(ledger):
    """Append-only: later activity leaves every earlier stored event byte-identical."""
    ledger.record_charge(**charge(charge_id="c-1"))
    before = {(n.id, n.state) for n in stored_events(ledger)}
    ledger.record_charge(**charge(charge_id="c-2"))
    ledger.reverse_charge("c-1")
    after = {(n.id, n.state) for n in stored_events(ledger)}
    assert before <= after


def test_late_charge_keeps_its_time(ledger):
    late = T0 - timedelta(days=45)
    ledger.record_charge(**charge(charge_id="late", occurred_at=late.isoformat()))
    event = ledger.mapper.to_domain_event(stored_events(ledger)[-1])
    assert event.occurred_at == late and event.recorded_at > late


def test_index_row_holds_the_facts(ledger):
    ledger.record_charge(**charge(charge_id="c-1"))
    with ledger.recorder.transaction(commit=False) as session:
        row = session.execute(sa.select(charge_index)).one()
    assert row.charge_id == "c-1" and row.account_id == "acme" and len(row.payload_hash) == 64


@pytest.mark.postgres
def test_subscribers_are_notified_of_appended_charges(postgres_url):
    """The append path sends the NOTIFY the library's subscriptions listen for."""
    import threading

    from ledger import Ledger, Settings

    ledger = Ledger(Settings(database_url=postgres_url))
    ledger.record_charge(**charge(charge_id="before"))
    subscription = ledger.recorder.subscribe(gt=2)
    timer = threading.Timer(0.3, lambda: ledger.record_charge(**charge(charge_id="after")))
    timer.start()
    with subscription:
        notification = next(iter(subscription))
    timer.join()
    ledger.close()
    assert notification.id == 3 and notification.topic.endswith("ChargeRecorded")


def test_a_dropped_append_connection_is_replaced_and_the_charge_recorded_once(postgres_url):
    """The appender's own connection killed between calls: the next call reconnects (via the retry)."""
    from ledger import Ledger, Settings

    ledger = Ledger(Settings(database_url=postgres_url))
    try:
        ledger.record_charge(**charge(charge_id="first"))
        pid = ledger.store._pg.get_backend_pid()
        engine = sa.create_engine(postgres_url)
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            connection.commit()
        engine.dispose()
        assert not ledger.record_charge(**charge(charge_id="second")).duplicate
        assert ledger.store._pg.get_backend_pid() != pid
        assert ledger.record_charge(**charge(charge_id="second")).duplicate
        assert ledger.account_totals("acme").charges == 2
    finally:
        ledger.close()


def test_a_long_replay_leaves_a_snapshot(make_ledger):
    writer = make_ledger(snapshot_interval=10)
    writer.record_charges([charge(charge_id=f"s-{i}") for i in range(25)])
    reader = make_ledger(snapshot_interval=10)
    assert reader.account_totals("acme") == Totals.of_unpriced(25, 2500, 1250, 3750)
    snapshots = reader.snapshots.recorder.select_events(reader.get_account("acme").id)
    assert [s.originator_version for s in snapshots] == [26]
    writer.record_charge(**charge(charge_id="s-late"))
    assert make_ledger(snapshot_interval=10).account_totals("acme") == Totals.of_unpriced(26, 2600, 1300, 3900)


@pytest.mark.parametrize("transport", ["joined", "array literals"])
def test_a_batch_numbers_each_account_in_order_whatever_it_holds(ledger, monkeypatch, transport):
    """New and existing accounts, known ids, repeats within the batch: versions contiguous, in id order."""
    if transport == "array literals":
        import ledger.store.pg_calls as calls_module

        monkeypatch.setattr(calls_module, "_joined", lambda columns, count: None)
    ledger.record_charge(**charge(account_id="old", charge_id="k-1"))
    ledger.record_charge(**charge(account_id="old", charge_id="k-2"))
    odd = 'quote " back \\ brace {x,y} comma, ü 中 NULL'
    items = []
    for i in range(30):
        items.append(charge(account_id=["old", "new-a", f"new ü {odd}", "new-b"][i % 4], charge_id=f"n-{i}",
                            reference=odd, prompt_tokens=i, completion_tokens=0))
    items[5] = charge(account_id="old", charge_id="k-1")  # known, same facts
    items[9] = charge(account_id="old", charge_id="k-2", prompt_tokens=7)  # known, other facts
    items[12] = dict(items[2])  # repeats an earlier position of this batch
    items[13] = charge(account_id="new-a", charge_id="k-2")  # another account's id: its own charge
    items[14] = dict(items[2], prompt_tokens=999)  # ... with other facts
    outcomes = ledger.record_charges(items)
    assert outcomes[5].receipt.duplicate
    assert isinstance(outcomes[9].error, ChargeConflict) and set(outcomes[9].error.differences) == {
        "prompt_tokens", "total_tokens"}
    assert outcomes[13].receipt.account_id == "new-a"
    assert outcomes[12].receipt.duplicate and outcomes[12].receipt.recorded_at == outcomes[2].receipt.recorded_at
    assert isinstance(outcomes[14].error, ChargeConflict)
    new = [i for i in range(30) if i not in (5, 9, 12, 14)]
    assert all(outcomes[i].ok and not outcomes[i].receipt.duplicate for i in new)
    row = ledger.store.find_charge(items[2]["account_id"], "n-2")
    assert row.payload_hash == ledger.validate(items[2]).payload_hash() and row.account_id == items[2]["account_id"]
    streams: dict = {}
    for event in stored_events(ledger):
        streams.setdefault(event.originator_id, []).append((event.originator_version, event.topic))
    for versions in streams.values():  # in notification order: 1, 2, 3, ... with Opened first
        assert [v for v, _ in versions] == list(range(1, len(versions) + 1))
        assert versions[0][1].endswith("Opened")
    totals = sum((ledger.account_totals(a) for a in {it["account_id"] for it in items}), Totals())
    assert totals.charges == 2 + len(new)  # "old" held k-1 and k-2 before
    assert ledger.account_totals(f"new ü {odd}").charges == len([i for i in new if i % 4 == 2])


def test_objects_older_versions_made_are_retired_at_start(make_ledger, store_url):
    """An unused index on the charge-id table (and PG's old append overload) slowed every append."""
    make_ledger().close()
    engine = sa.create_engine(store_url)
    postgres = engine.dialect.name == "postgresql"
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(
                "CREATE INDEX ix_ledger_charge_ids_account_id ON ledger_charge_ids (account_id)"
            )
            if postgres:
                connection.exec_driver_sql(
                    "CREATE FUNCTION ledger_append_charges(text[], text[], uuid[], text[], text[], bytea[], "
                    "bytea[], timestamptz, text, text) RETURNS integer LANGUAGE sql AS 'SELECT 1'"
                )
        ledger = make_ledger()
        assert not ledger.record_charge(**charge(charge_id="after-upgrade")).duplicate
        indexes = {index["name"] for index in sa.inspect(engine).get_indexes("ledger_charge_ids")}
        assert "ix_ledger_charge_ids_account_id" not in indexes
        if postgres:
            with engine.connect() as connection:
                overloads = connection.exec_driver_sql(
                    "SELECT count(*) FROM pg_proc WHERE proname = 'ledger_append_charges' AND pronargs = 10"
                ).scalar_one()
            assert overloads == 0
    finally:
        engine.dispose()
