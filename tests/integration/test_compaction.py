"""Compaction on each real store: totals never move, only the stored rows shrink.

``fold_log`` is the reference reading of a (compacted) log: a rollup sets its
account-day, charges add, reversals subtract. The tests compare it, the
account totals and a plain model of what was accepted.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta, timezone
from typing import Any, Iterable
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from ledger import AlreadyReversed, ChargeConflict, Ledger, Totals
from ledger.compaction import CompactionError, compact
from ledger.domain import (
    CHARGE_RECORDED_TOPIC,
    CHARGE_REVERSED_TOPIC,
    DAY_ROLLED_UP_TOPIC,
    account_uuid,
)
from ledger.rollup_digest import digest_item, digest_of
from ledger.store.event_log import decode_state

UTC = timezone.utc
NO_GRACE = timedelta(0)
DAY1, DAY2, DAY3 = date(2026, 1, 1), date(2026, 1, 2), date(2026, 1, 3)
Key = tuple[str, str, str, str, "str | None", "str | None"]


# -- helpers shared by the compaction tests ------------------------------------


def charge(n: int, *, account: str = "acme", user: str = "u1", day: date = DAY1,
           hour: int = 10, charge_type: str = "completion", provider: str | None = "openai",
           model: str | None = "gpt-4o", prompt: int | None = None, completion: int | None = None,
           zone: ZoneInfo = ZoneInfo("UTC")) -> dict[str, Any]:
    """A charge with id ``c-n``; tokens vary with ``n`` unless given."""
    occurred = datetime(day.year, day.month, day.day, hour, n % 60, tzinfo=zone)
    return dict(charge_id=f"c-{n}", account_id=account, user_id=user, charge_type=charge_type,
                provider=provider, model=model,
                prompt_tokens=prompt if prompt is not None else 10 + n % 7,
                completion_tokens=completion if completion is not None else n % 5,
                occurred_at=occurred.astimezone(UTC).isoformat())


class Model:
    """What the ledger accepted, as plain Python: the expected totals."""

    def __init__(self, zone: str = "UTC") -> None:
        self.zone = ZoneInfo(zone)
        self.charges: dict[str, dict[str, Any]] = {}
        self.reversed: set[str] = set()

    def record(self, ledger: Ledger, fields: dict[str, Any]) -> None:
        receipt = ledger.record_charge(**fields)
        if not receipt.duplicate:
            self.charges[fields["charge_id"]] = fields

    def reverse(self, ledger: Ledger, charge_id: str) -> None:
        ledger.reverse_charge(charge_id, "test")
        self.reversed.add(charge_id)

    def records(self) -> dict[Key, tuple[int, int, int, int]]:
        rows: dict[Key, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        for charge_id, c in self.charges.items():
            day = datetime.fromisoformat(c["occurred_at"]).astimezone(self.zone).date().isoformat()
            key = (c["account_id"], day, c["user_id"], c["charge_type"], c.get("provider"), c.get("model"))
            if charge_id in self.reversed:
                continue  # counted once, cancelled once
            prompt, completion = c["prompt_tokens"], c["completion_tokens"]
            for i, value in enumerate((1, prompt, completion, prompt + completion)):
                rows[key][i] += value
        return nonzero(rows)

    def totals(self, account: str) -> Totals:
        total = Totals()
        for charge_id, c in self.charges.items():
            if c["account_id"] == account and charge_id not in self.reversed:
                p, q = c["prompt_tokens"], c["completion_tokens"]
                total = total + Totals.of_unpriced(1, p, q, p + q)
        return total

    def accounts(self) -> set[str]:
        return {c["account_id"] for c in self.charges.values()}


def nonzero(rows: dict[Key, Any]) -> dict[Key, tuple[int, int, int, int]]:
    return {k: tuple(v) for k, v in rows.items() if any(v)}


def notifications(ledger: Ledger, topics: Iterable[str] = ()) -> list[Any]:
    return ledger.recorder.select_notifications(0, 10**9, topics=tuple(topics),
                                                inclusive_of_start=False)


def fold_log(ledger: Ledger) -> dict[Key, tuple[int, int, int, int]]:
    """Daily records rebuilt from the log alone: rollups set their day, raw events add."""
    zone = ledger.settings.zone
    days: dict[tuple[str, str], dict[tuple, list[int]]] = defaultdict(dict)
    for n in notifications(ledger, (CHARGE_RECORDED_TOPIC, CHARGE_REVERSED_TOPIC, DAY_ROLLED_UP_TOPIC)):
        state = decode_state(n.state)
        if n.topic == DAY_ROLLED_UP_TOPIC:
            days[(state["account_id"], state["billing_date"])] = {
                (g["user_id"], g["charge_type"], g["provider"], g["model"]):
                    [g["charges"], g["prompt_tokens"], g["completion_tokens"], g["total_tokens"]]
                for g in state["groups"]
            }
            continue
        day = state["occurred_at"].astimezone(zone).date().isoformat()
        group = (state["user_id"], state["charge_type"], state["provider"], state["model"])
        totals = days[(state["account_id"], day)].setdefault(group, [0, 0, 0, 0])
        sign = 1 if n.topic == CHARGE_RECORDED_TOPIC else -1
        for i, name in enumerate(("prompt_tokens", "completion_tokens", "total_tokens"), start=1):
            totals[i] += sign * state[name]
        totals[0] += sign
    rows = {
        (account, day, *group): values
        for (account, day), groups in days.items()
        for group, values in groups.items()
    }
    return nonzero(rows)


def topic_counts(ledger: Ledger) -> Counter[str]:
    return Counter(n.topic.rsplit(".", 1)[-1] for n in notifications(ledger))


def rollups(ledger: Ledger) -> list[dict[str, Any]]:
    return [decode_state(n.state) | {"id": n.id}
            for n in notifications(ledger, (DAY_ROLLED_UP_TOPIC,))]


def run(ledger: Ledger, before: date = date(2026, 2, 1), position: int | None = None,
        grace: timedelta | None = NO_GRACE, **kwargs: Any):
    """Compact as if the projector had applied everything stored so far."""
    if position is None:
        position = ledger.recorder.max_notification_id() or 0
    return compact(ledger, before=before, projected_position=position, grace=grace, **kwargs)


def check(ledger: Ledger, model: Model, *others: Ledger) -> None:
    """Every reading agrees with the model: the log, this ledger, fresh ledgers."""
    assert fold_log(ledger) == model.records()
    for reader in (ledger, *others):
        for account in model.accounts():
            assert reader.account_totals(account) == model.totals(account)


def history_charge(n: int) -> dict[str, Any]:
    return charge(n, account=("acme", "zeta")[n % 2], user=f"u{n % 3 % 2}",
                  day=(DAY1, DAY2, DAY3)[n % 3], model=("a", "b")[n % 4 // 2])


def history(ledger: Ledger, model: Model, count: int = 30) -> None:
    """Two accounts, three days, two users, two models, a few reversals."""
    for n in range(count):
        model.record(ledger, history_charge(n))
    for n in (0, 4, 8):
        if n < count:
            model.reverse(ledger, f"c-{n}")


# -- tests -------------------------------------------------------------------


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
