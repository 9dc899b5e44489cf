"""Compaction on each real store: totals never move, only the stored rows shrink.

``fold_log`` (``compaction_support``) is the reference reading of a
(compacted) log: a rollup sets its account-day, charges add, reversals
subtract. The tests compare it, the account totals and a plain model of what
was accepted.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

import pytest
from compaction_support import (
    DAY1,
    DAY2,
    DAY3,
    NO_GRACE,
    UTC,
    Model,
    charge,
    check,
    fold_log,
    history,
    history_charge,
    nonzero,
    notifications,
    rollups,
    run,
    topic_counts,
)

from ledger import AlreadyReversed, ChargeConflict
from ledger.domain import (
    CHARGE_RECORDED_TOPIC,
    CHARGE_REVERSED_TOPIC,
    DAY_ROLLED_UP_TOPIC,
    account_uuid,
)
from ledger.rollup_digest import digest_item, digest_of
from ledger.store.event_log import decode_state


def test_compaction_keeps_every_total_and_shrinks_the_log(ledger, make_ledger):
    model = Model()
    history(ledger, model)
    before_rows = sum(topic_counts(ledger).values())

    result = run(ledger)

    assert result.accounts == 2 and result.days == 6 and result.rollups_written == 6
    assert result.events_pruned == 33 and result.bytes_pruned > 33 * 300
    counts = topic_counts(ledger)
    assert counts == Counter({"Opened": 2, "DayRolledUp": 6})
    assert sum(counts.values()) == before_rows - 33 + 6
    check(ledger, model, make_ledger())


def test_second_run_changes_nothing(ledger):
    model = Model()
    history(ledger, model)
    run(ledger)
    stored = [(n.id, n.state) for n in notifications(ledger)]

    again = run(ledger)

    assert (again.days, again.events_pruned, again.rollups_written, again.accounts) == (0, 0, 0, 0)
    assert [(n.id, n.state) for n in notifications(ledger)] == stored


def test_rollup_carries_groups_positions_and_digest(ledger):
    model = Model()
    history(ledger, model)
    raw = [n for n in notifications(ledger, (CHARGE_RECORDED_TOPIC, CHARGE_REVERSED_TOPIC))
           if decode_state(n.state)["account_id"] == "acme"
           and decode_state(n.state)["occurred_at"].date() == DAY1]
    items = [digest_item(n.topic, decode_state(n.state)) for n in raw]

    run(ledger)

    (rollup,) = [r for r in rollups(ledger) if (r["account_id"], r["billing_date"]) == ("acme", "2026-01-01")]
    assert rollup["digest"] == digest_of(items)
    assert rollup["events"] == len(raw)
    assert (rollup["first_position"], rollup["last_position"]) == (raw[0].id, raw[-1].id)
    assert rollup["time_zone"] == "UTC"
    assert rollup["charges"] == sum(g["charges"] for g in rollup["groups"])
    expected = {k[2:]: v for k, v in model.records().items() if k[:2] == ("acme", "2026-01-01")}
    groups = {(g["user_id"], g["charge_type"], g["provider"], g["model"]):
              (g["charges"], g["prompt_tokens"], g["completion_tokens"], g["total_tokens"])
              for g in rollup["groups"]}
    assert nonzero(groups) == expected


def test_snapshot_at_the_rollup_version_and_the_newest_event_survives(ledger, make_ledger):
    model = Model()
    history(ledger, model)
    run(ledger)

    newest = notifications(ledger)[-1]
    assert newest.topic == DAY_ROLLED_UP_TOPIC
    fresh = make_ledger()
    for account in ("acme", "zeta"):
        aggregate = fresh.get_account(account)
        snapshots = list(fresh.snapshots.get(account_uuid(account), desc=True, limit=1))
        assert snapshots and snapshots[0].originator_version == aggregate.version
    # The next event goes after the rollup: no id is reused.
    model.record(ledger, charge(99, day=DAY1))
    assert notifications(ledger)[-1].id == newest.id + 1


def test_only_closed_days_before_the_cutoff_are_compacted(ledger):
    model = Model()
    history(ledger, model)
    now = datetime.now(UTC)
    model.record(ledger, charge(100, day=now.date(), hour=0))  # today: open

    result = run(ledger, before=DAY3)

    assert {r["billing_date"] for r in rollups(ledger)} == {"2026-01-01", "2026-01-02"}
    assert result.days == 4
    assert fold_log(ledger) == model.records()
    # Everything up to today is closed; today never is.
    run(ledger, before=now.date() + timedelta(days=1))
    assert {r["billing_date"] for r in rollups(ledger)} == {"2026-01-01", "2026-01-02", "2026-01-03"}
    assert fold_log(ledger) == model.records()


def test_unprojected_events_keep_their_day(ledger):
    model = Model()
    for n in range(6):
        model.record(ledger, charge(n, day=(DAY1, DAY2)[n % 2]))
    position = ledger.recorder.max_notification_id()
    model.record(ledger, charge(50, day=DAY2))  # not yet projected

    result = run(ledger, position=position)

    assert [r["billing_date"] for r in rollups(ledger)] == ["2026-01-01"]
    assert result.skipped == 1
    assert fold_log(ledger) == model.records()
    result = run(ledger)
    assert sorted(r["billing_date"] for r in rollups(ledger)) == ["2026-01-01", "2026-01-02"]


def test_default_grace_spares_recently_recorded_events(ledger):
    model = Model()
    history(ledger, model, count=6)

    result = run(ledger, grace=None)  # compaction_grace_days: these were recorded just now

    assert result.days == 0 and result.events_pruned == 0 and result.skipped == 6
    assert not rollups(ledger)
    assert fold_log(ledger) == model.records()


def test_recent_events_are_not_pruned_within_grace(ledger):
    model = Model()
    history(ledger, model, count=6)
    recorded = max(decode_state(n.state)["recorded_at"] for n in notifications(ledger, (CHARGE_RECORDED_TOPIC,)))
    grace = datetime.now(UTC) - recorded + timedelta(hours=1)

    assert run(ledger, grace=grace).events_pruned == 0
    assert run(ledger, grace=NO_GRACE).events_pruned == 8  # 6 charges, 2 reversals


def test_late_charge_is_counted_and_the_next_run_supersedes_the_rollup(ledger, make_ledger):
    model = Model()
    history(ledger, model)
    run(ledger)
    (first,) = [r for r in rollups(ledger) if (r["account_id"], r["billing_date"]) == ("acme", "2026-01-01")]

    late = charge(200, day=DAY1, user="late-user")
    model.record(ledger, late)
    check(ledger, model, make_ledger())

    result = run(ledger)

    assert result.days == 1 and result.rollups_superseded == 1 and result.events_pruned == 2
    days = [r for r in rollups(ledger) if (r["account_id"], r["billing_date"]) == ("acme", "2026-01-01")]
    assert len(days) == 1
    (second,) = days
    late_state = digest_item(CHARGE_RECORDED_TOPIC, {**late, "total_tokens": late["prompt_tokens"] + late["completion_tokens"]})
    assert second["digest"] == digest_of([late_state], previous=first["digest"])
    assert second["events"] == first["events"] + 1
    assert second["first_position"] == first["first_position"]
    assert second["last_position"] > first["last_position"]
    check(ledger, model, make_ledger())


def test_idempotency_outlives_pruning(ledger, make_ledger):
    model = Model()
    history(ledger, model)
    run(ledger)
    pruned = history_charge(5)
    assert ledger.record_charge(**pruned) == ledger.record_charge(**pruned)
    assert ledger.record_charge(**pruned).duplicate

    with pytest.raises(ChargeConflict) as conflict:
        ledger.record_charge(**{**pruned, "prompt_tokens": 999})
    assert conflict.value.fields == ["prompt_tokens", "total_tokens"]

    model.reverse(ledger, "c-5")  # reads the index, not the pruned event
    with pytest.raises(AlreadyReversed):
        ledger.reverse_charge("c-5")
    with pytest.raises(AlreadyReversed):
        ledger.reverse_charge("c-4")  # reversed before pruning
    check(ledger, model, make_ledger())

    assert run(ledger).rollups_superseded == 1
    check(ledger, model, make_ledger())


def test_dry_run_counts_what_a_run_removes_and_writes_nothing(ledger):
    model = Model()
    history(ledger, model)
    stored = [(n.id, n.state) for n in notifications(ledger)]

    dry = run(ledger, dry_run=True)

    assert [(n.id, n.state) for n in notifications(ledger)] == stored
    assert dry.dry_run and dry.rollups_written == 0
    real = run(ledger)
    assert (dry.days, dry.events_pruned, dry.bytes_pruned, dry.accounts) == (
        real.days, real.events_pruned, real.bytes_pruned, real.accounts)
    assert dry.events_pruned == 33


def test_progress_reports_each_account(ledger):
    model = Model()
    history(ledger, model)
    calls: list[tuple[int, int]] = []

    run(ledger, progress=lambda done, total: calls.append((done, total)))

    assert calls == [(0, 2), (1, 2), (2, 2)]
