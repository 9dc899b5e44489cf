"""Compaction at its edges: a crash at any step, a writer with a cached account, billing
time zones, bounded transactions, the stored rows it removes, snapshot intervals and a
writer winning the race.

Same reference readings as ``test_compaction.py`` (``compaction_support``).
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import date

import pytest
import sqlalchemy as sa
from compaction_support import (
    DAY1,
    DAY2,
    Model,
    charge,
    check,
    history,
    notifications,
    rollups,
    run,
    topic_counts,
)

from ledger import Ledger
from ledger.compaction import CompactionError
from ledger.domain import (
    CHARGE_RECORDED_TOPIC,
    CHARGE_REVERSED_TOPIC,
    account_uuid,
)


class Crash(Exception):
    pass


@pytest.mark.parametrize("step", ["rolled_up", "saved", "snapshotted", "pruned", "committed"])
def test_interrupted_anywhere_then_rerun_gives_exact_totals(ledger, make_ledger, step):
    model = Model()
    history(ledger, model)
    stored = [(n.id, n.state) for n in notifications(ledger)]
    seen: list[str] = []

    def crash(at: str, aggregate_id) -> None:
        seen.append(at)
        if at == step:
            raise Crash(at)

    with pytest.raises(Crash):
        run(ledger, on_step=crash)

    if step != "committed":  # the account's transaction rolled back whole
        assert [(n.id, n.state) for n in notifications(ledger)] == stored
    else:  # the first account is done, the second untouched
        assert len(rollups(ledger)) == 3
    check(ledger, model, make_ledger())

    result = run(ledger)

    assert result.accounts == (1 if step == "committed" else 2)
    assert len(rollups(ledger)) == 6
    assert topic_counts(ledger) == Counter({"Opened": 2, "DayRolledUp": 6})
    check(ledger, model, make_ledger())


def test_a_writer_with_a_cached_account_keeps_working_after_pruning(make_ledger):
    writer, other, compactor = make_ledger(), make_ledger(), make_ledger()
    model = Model()
    model.record(writer, charge(1))
    writer.account_totals("acme")  # cached at this version
    for n in range(2, 8):
        model.record(other, charge(n))

    run(compactor)

    assert writer.account_totals("acme") == model.totals("acme")
    model.record(writer, charge(9))
    check(writer, model, other, compactor, make_ledger())


def test_billing_dates_follow_the_billing_time_zone_across_dst(make_ledger):
    ledger = make_ledger(billing_tz="America/New_York")
    model = Model("America/New_York")
    # 2026-03-08 02:00 EST -> EDT. 23:30 local on the 7th, 00:30 and 23:30 local on the 8th.
    for n, moment in enumerate(("2026-03-08T04:30:00+00:00", "2026-03-08T05:30:00+00:00",
                                "2026-03-09T03:30:00+00:00", "2026-03-09T04:30:00+00:00")):
        model.record(ledger, {**charge(n), "occurred_at": moment})

    run(ledger, before=date(2026, 3, 10))

    assert sorted((r["billing_date"], r["charges"], r["time_zone"]) for r in rollups(ledger)) == [
        ("2026-03-07", 1, "America/New_York"),
        ("2026-03-08", 2, "America/New_York"),
        ("2026-03-09", 1, "America/New_York"),
    ]
    check(ledger, model)


def test_a_changed_billing_time_zone_is_refused_not_mixed(make_ledger):
    ledger = make_ledger()
    model = Model()
    history(ledger, model, count=3)
    run(ledger)
    other = make_ledger(billing_tz="Asia/Tokyo")
    other.record_charge(**charge(77, day=DAY1))

    with pytest.raises(CompactionError, match="Asia/Tokyo"):
        run(other)


def test_many_days_of_one_account_are_split_into_bounded_transactions(ledger, monkeypatch):
    import ledger.compaction as compaction

    monkeypatch.setattr(compaction, "MAX_EVENTS_PER_TRANSACTION", 6)
    model = Model()
    for n in range(24):
        model.record(ledger, charge(n, day=date(2026, 1, 1 + n % 8)))
    calls: list[tuple[int, int]] = []

    result = run(ledger, progress=lambda done, total: calls.append((done, total)))

    assert result.days == 8 and result.accounts == 1
    assert calls[-1] == (4, 4)  # 8 days x 3 events, at most 6 events per transaction
    check(ledger, model)


def test_stored_rows_of_compacted_days_are_gone(ledger):
    model = Model()
    for n in range(200):
        model.record(ledger, charge(n, user=f"u{n % 4}", day=DAY1))
    table = ledger.recorder.events_record_cls.__table__
    engine = ledger.recorder.datastore.engine

    def raw_rows() -> int:
        ledger.sequence()  # every acknowledged charge is in the log before it is counted there
        with engine.connect() as connection:
            return connection.execute(
                sa.select(sa.func.count()).select_from(table).where(
                    table.c.topic.in_((CHARGE_RECORDED_TOPIC, CHARGE_REVERSED_TOPIC)))
            ).scalar_one()

    assert raw_rows() == 200
    run(ledger)
    assert raw_rows() == 0
    assert json.loads(notifications(ledger)[-1].state)["events"] == 200
    check(ledger, model)


@pytest.mark.parametrize("charges", [8, 7])
def test_a_rollup_on_a_snapshot_interval_is_snapshotted_once(make_ledger, charges):
    ledger = make_ledger(snapshot_interval=10)
    model = Model()
    for n in range(charges):  # Opened is version 1: the first rollup lands on version 10 or 9
        model.record(ledger, charge(n, day=(DAY1, DAY2)[n % 2]))

    run(ledger)

    aggregate = ledger.get_account("acme")
    assert aggregate.version == charges + 3  # two rollups
    versions = [s.originator_version for s in ledger.snapshots.get(account_uuid("acme"))]
    assert versions[-1] == aggregate.version and len(versions) == len(set(versions))
    check(ledger, model, make_ledger())


@pytest.mark.postgres
def test_a_writer_that_wins_the_race_makes_compaction_retry_under_the_lock(postgres_url):
    import threading

    from ledger import Settings

    ledgers = [Ledger(Settings(database_url=postgres_url)) for _ in range(3)]
    ledger, writer, fresh = ledgers
    try:
        model = Model()
        history(ledger, model)
        raced: list[bool] = []

        def race(step: str, aggregate_id) -> None:
            if step == "rolled_up" and not raced:  # between the fold and the save
                raced.append(True)
                def record_and_sequence() -> None:  # the charge reaches the account's stream now
                    model.record(writer, charge(500, day=DAY1))
                    writer.sequence()

                thread = threading.Thread(target=record_and_sequence)
                thread.start()
                thread.join()

        result = run(ledger, on_step=race)

        assert result.retries == 1
        assert result.days == 5 and result.skipped == 1  # acme's DAY1 now holds a charge newer than the run
        check(ledger, model, fresh)
        assert run(ledger).days == 1
        (day1,) = [r for r in rollups(ledger) if (r["account_id"], r["billing_date"]) == ("acme", "2026-01-01")]
        assert day1["events"] == 7  # 5 charges, 1 reversal, the racing charge
        check(ledger, model, fresh)
    finally:
        for each in ledgers:
            each.close()
