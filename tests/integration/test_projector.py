"""The projector on each real store: exact totals, exactly once, rollups set their day.

Also home of the small in-memory model the other projection tests compare with.
"""

from __future__ import annotations

import multiprocessing as mp
from datetime import date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from ledger import Ledger, Settings
from ledger.compaction import compact
from ledger.domain import account_uuid
from ledger.store.schema import daily_billing_records, projection_tracking
from projections import ProjectionError, Projector, rebuild
from projections.errors import ZoneMismatch
from projections.reports import records

UTC = timezone.utc
T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
Key = tuple[str, str, str, str, str | None, str | None]


class Model:
    """What the records must be: every accepted charge, minus its reversal, on its billing date."""

    def __init__(self, zone: str = "UTC") -> None:
        self.zone = ZoneInfo(zone)
        self.charges: dict[str, dict[str, Any]] = {}
        self.reversed: set[str] = set()

    def record(self, ledger: Ledger, items: list[dict[str, Any]]) -> None:
        for item, outcome in zip(items, ledger.record_charges(items)):
            assert outcome.ok, outcome.error
            self.charges.setdefault(item["charge_id"], item)

    def reverse(self, ledger: Ledger, charge_id: str) -> None:
        ledger.reverse_charge(charge_id, "test")
        self.reversed.add(charge_id)

    def records(self) -> dict[Key, tuple[int, int, int, int]]:
        found: dict[Key, list[int]] = {}
        for charge_id, c in self.charges.items():
            if charge_id in self.reversed:
                continue
            day = c["occurred_at"].astimezone(self.zone).date().isoformat()
            key = (c["account_id"], day, c["user_id"], c["charge_type"], c.get("provider"), c.get("model"))
            f = found.setdefault(key, [0, 0, 0, 0])
            for i, value in enumerate((1, c["prompt_tokens"], c["completion_tokens"],
                                       c["prompt_tokens"] + c["completion_tokens"])):
                f[i] += value
        return {key: tuple(f) for key, f in found.items() if any(f)}  # type: ignore[misc]


def live(source: Any) -> dict[Key, tuple[int, int, int, int]]:
    """The live records in the model's shape."""
    return {
        (r["account_id"], r["billing_date"].isoformat(), r["user_id"], r["charge_type"], r["provider"], r["model"]):
        (r["charges"], r["prompt_tokens"], r["completion_tokens"], r["total_tokens"])
        for r in records(source)
    }


def charges(n: int, *, start: int = 0, accounts: int = 3, at: datetime = T0, step: timedelta = timedelta(hours=5)
            ) -> list[dict[str, Any]]:
    """Charges spread over accounts, users, providers (some unspecified) and days."""
    return [
        {
            "charge_id": f"c-{i}",
            "account_id": f"acct-{i % accounts}",
            "user_id": f"u{i % 2}",
            "charge_type": ("completion", "tool")[i % 2],
            "provider": (None, "openai", "anthropic")[i % 3],
            "model": (None, "m1")[i % 2],
            "prompt_tokens": 10 + i,
            "completion_tokens": i % 7,
            "occurred_at": at + step * i,
        }
        for i in range(start, start + n)
    ]


def head(ledger: Ledger) -> int:
    return ledger.recorder.max_notification_id() or 0


def roll_up(ledger: Ledger, account_id: str, day: date, groups: list[dict[str, Any]], zone: str = "UTC") -> None:
    """Append a rollup as compaction would (without pruning): the test double for its event."""
    account = ledger.get_account(account_id)
    account.roll_up_day(
        account_id=account_id, billing_date=day.isoformat(), time_zone=zone, groups=groups,
        charges=sum(g["charges"] for g in groups), events=0, digest="", first_position=None,
        last_position=None, recorded_at=datetime.now(UTC),
    )
    ledger.save(account)


def group(user: str, charges: int, prompt: int, completion: int, charge_type: str = "completion",
          provider: str | None = None, model: str | None = None) -> dict[str, Any]:
    return {"user_id": user, "charge_type": charge_type, "provider": provider, "model": model,
            "charges": charges, "prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


# -- exact totals ----------------------------------------------------------------


def test_charges_and_reversals_project_to_exact_records(ledger):
    model = Model()
    model.record(ledger, charges(40))
    model.reverse(ledger, "c-3")
    model.reverse(ledger, "c-10")
    projector = Projector(ledger, batch_size=7)
    assert projector.position() == 0
    assert projector.run() == head(ledger)
    assert projector.position() == head(ledger)
    assert live(ledger) == model.records()
    assert projector.run() == 0  # nothing new: nothing changes
    assert live(ledger) == model.records()


def test_runs_resume_where_they_stopped_and_max_events_bounds_a_run(ledger):
    model = Model()
    model.record(ledger, charges(20))
    projector = Projector(ledger, batch_size=4)
    assert projector.run(max_events=6) == 6
    assert projector.position() == 6
    model.record(ledger, charges(10, start=20))
    assert Projector(ledger).run() == head(ledger) - 6  # another instance resumes from the stored position
    assert live(ledger) == model.records()


def test_billing_dates_follow_the_billing_time_zone_across_dst(make_ledger):
    ledger = make_ledger(billing_tz="America/New_York")
    model = Model("America/New_York")
    # Every 50 minutes across the 2026-03-08 spring-forward and the 2026-11-01 fall-back.
    model.record(ledger, charges(60, at=datetime(2026, 3, 7, 20, tzinfo=UTC), step=timedelta(minutes=50)))
    model.record(ledger, charges(60, start=60, at=datetime(2026, 10, 31, 20, tzinfo=UTC) - timedelta(minutes=50 * 60),
                                 step=timedelta(minutes=50)))
    Projector(ledger, batch_size=16).run()
    assert live(ledger) == model.records()
    days = {key[1] for key in live(ledger)}
    assert {"2026-03-07", "2026-03-08", "2026-03-09", "2026-10-31", "2026-11-01"} <= days


# -- exactly once ----------------------------------------------------------------


class Crash(Exception):
    pass


def test_a_crash_between_writes_and_commit_then_a_rerun_counts_once(ledger):
    model = Model()
    model.record(ledger, charges(30))
    model.reverse(ledger, "c-4")
    crashed: set[int] = set()

    def crash_once_per_batch(position: int) -> None:
        if position not in crashed:
            crashed.add(position)
            raise Crash(position)

    projector = Projector(ledger, batch_size=8, before_commit=crash_once_per_batch)
    crashes = 0
    while projector.position() < head(ledger):
        before = projector.position()
        with pytest.raises(Crash):
            projector.run()
        crashes += 1
        assert projector.position() == before  # the batch rolled back, writes and position together
        projector.run(max_events=8)  # the rerun of that batch commits
    assert crashes == len(crashed) >= 4
    assert live(ledger) == model.records()


def test_a_crash_leaves_no_partial_writes_behind(ledger):
    Model().record(ledger, charges(10))

    def crash(position: int) -> None:
        raise Crash(position)

    with pytest.raises(Crash):
        Projector(ledger, before_commit=crash).run()
    assert live(ledger) == {}
    assert Projector(ledger).position() == 0


def test_interleaved_projectors_on_one_store_count_once(make_ledger):
    first, second = make_ledger(), make_ledger()
    model = Model()
    model.record(first, charges(50))
    a, b = Projector(first, batch_size=3), Projector(second, batch_size=5)
    while a.run(max_events=3) + b.run(max_events=5):
        pass
    assert live(first) == model.records()
    assert a.position() == b.position() == head(first)


def _project_in_process(url: str, start: Any, done: Any) -> None:
    ledger = Ledger(Settings(database_url=url))
    try:
        start.wait(30)
        done.put(Projector(ledger, batch_size=25).run())
    finally:
        ledger.close()


def run_projector_processes(url: str, count: int = 2) -> list[int]:
    """Start ``count`` projector processes at once; what each applied."""
    ctx = mp.get_context("spawn")
    start, done = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_project_in_process, args=(url, start, done)) for _ in range(count)]
    for proc in procs:
        proc.start()
    start.set()
    applied = [done.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    return applied


@pytest.mark.postgres
def test_two_projector_processes_at_once_count_every_event_once(postgres_url):
    ledger = Ledger(Settings(database_url=postgres_url))
    model = Model()
    for start in range(0, 2000, 500):
        model.record(ledger, charges(500, start=start, accounts=7))
    for i in range(0, 2000, 97):
        model.reverse(ledger, f"c-{i}")
    Projector(ledger).prepare()  # tables exist before the race (creation is race-safe too)
    applied = run_projector_processes(postgres_url)
    assert sum(applied) == head(ledger)  # between them, each notification exactly once
    assert live(ledger) == model.records()
    assert Projector(ledger).position() == head(ledger)
    ledger.close()


def test_two_projector_processes_on_sqlite_count_every_event_once(sqlite_url):
    ledger = Ledger(Settings(database_url=sqlite_url))
    model = Model()
    model.record(ledger, charges(600, accounts=5))
    applied = run_projector_processes(sqlite_url)
    assert sum(applied) == head(ledger)
    assert live(ledger) == model.records()
    ledger.close()


def test_the_position_update_is_conditional(ledger):
    """A writer holding a stale position cannot commit: its batch rolls back."""
    from projections.errors import PositionMoved
    from projections.tracking import LIVE, move_position

    Model().record(ledger, charges(5))
    projector = Projector(ledger)
    projector.run()
    with pytest.raises(PositionMoved):
        with ledger.recorder.transaction(commit=True) as session:
            move_position(session, LIVE, 0, 3, datetime.now(UTC))
    assert projector.position() == head(ledger)


# -- rollups ---------------------------------------------------------------------


DAY = date(2026, 3, 1)


def test_a_rollup_sets_its_day_and_later_charges_add_on_top(ledger):
    model = Model()
    items = charges(4, accounts=1, step=timedelta(minutes=10))  # acct-0, all on DAY
    model.record(ledger, items)
    projector = Projector(ledger)
    projector.run()
    before = live(ledger)
    # A rollup equal to what was projected is a no-op in a live run ...
    groups = [group(k[2], *v[:3], charge_type=k[3], provider=k[4], model=k[5]) for k, v in before.items()]
    roll_up(ledger, "acct-0", DAY, groups)
    projector.run()
    assert live(ledger) == before == model.records()
    # ... a late charge for the day adds on top ...
    model.record(ledger, charges(1, start=100, accounts=1, at=T0 + timedelta(hours=3), step=timedelta(0)))
    projector.run()
    assert live(ledger) == model.records()
    # ... and a rebuild from position 0 ends equal.
    assert rebuild(ledger).clean


def test_a_rollup_replaces_what_came_before_it_in_the_same_batch_only(ledger):
    """Order inside one batch matters: events before the rollup are replaced, those after add."""
    ledger.record_charges(charges(2, accounts=1, step=timedelta(minutes=1)))  # c-0 (u0), c-1 (u1) on DAY
    other_day = charges(1, start=2, accounts=1, at=T0 + timedelta(days=1), step=timedelta(0))
    ledger.record_charges(other_day)
    roll_up(ledger, "acct-0", DAY, [group("u9", 5, 500, 50)])
    ledger.record_charges(charges(1, start=10, accounts=1, step=timedelta(0)))  # c-10: after it, same day
    expected = {
        ("acct-0", "2026-03-01", "u9", "completion", None, None): (5, 500, 50, 550),
        ("acct-0", "2026-03-01", "u0", "completion", "openai", None): (1, 20, 3, 23),
        ("acct-0", "2026-03-02", "u0", "completion", "anthropic", None): (1, 12, 2, 14),
    }
    for batch_size in (1, 2, 1000):  # rollup alone, split from its neighbours, all in one batch
        assert rebuild(ledger, swap=True, batch_size=batch_size).swapped
        assert live(ledger) == expected, batch_size
    live_one_batch = Projector(ledger, batch_size=1000)
    assert live_one_batch.position() == head(ledger)


def test_compaction_rollups_restore_pruned_days_in_a_rebuild(ledger):
    model = Model()
    model.record(ledger, charges(30, accounts=2))
    model.reverse(ledger, "c-5")
    projector = Projector(ledger)
    projector.run()
    result = compact(ledger, before=date(2026, 3, 5), projected_position=projector.position(),
                     grace=timedelta(0))
    assert result.events_pruned > 0
    projector.run()
    assert live(ledger) == model.records()
    assert rebuild(ledger, swap=True).swapped  # raw events gone: the rollups restore their days
    assert live(ledger) == model.records()
    model.record(ledger, charges(2, start=200, accounts=2, step=timedelta(0)))  # late, for a compacted day
    projector.run()
    assert live(ledger) == model.records()


def test_a_rollup_in_another_time_zone_stops_the_projector_without_writing(ledger):
    Model().record(ledger, charges(3, accounts=1))
    roll_up(ledger, "acct-0", DAY, [group("u0", 1, 1, 1)], zone="UTC")
    projector = Projector(ledger, billing_tz="Europe/Paris")
    with pytest.raises(ProjectionError, match="time zone"):
        projector.run()
    assert projector.position() == 0


def test_a_run_in_another_zone_is_refused_and_writes_nothing(ledger):
    model = Model()
    model.record(ledger, charges(6))
    Projector(ledger).run()
    model.record(ledger, charges(4, start=6))
    before, position = live(ledger), Projector(ledger).position()
    with pytest.raises(ZoneMismatch, match="'UTC'.*'Europe/Paris'") as refused:
        Projector(ledger, billing_tz="Europe/Paris").run()
    assert "rebuild" in str(refused.value)
    assert live(ledger) == before and Projector(ledger).position() == position
    Projector(ledger).run()  # the table's own zone goes on where it stopped
    assert live(ledger) == model.records()


def test_a_rebuild_in_a_new_zone_moves_the_table_to_that_zone(ledger):
    recorded = charges(12, step=timedelta(hours=3), at=datetime(2026, 3, 1, 2, tzinfo=UTC))
    Model().record(ledger, recorded)
    Projector(ledger).run()
    with pytest.raises(ZoneMismatch):  # a check in another zone would diff every day
        rebuild(ledger, billing_tz="America/New_York")
    result = rebuild(ledger, swap=True, billing_tz="America/New_York")
    assert result.swapped
    new_york = Model("America/New_York")
    new_york.charges = {c["charge_id"]: c for c in recorded}
    assert live(ledger) == new_york.records()
    assert Projector(ledger, billing_tz="America/New_York").run() == 0
    with pytest.raises(ZoneMismatch, match="'America/New_York'.*'UTC'"):
        Projector(ledger).run()


def test_an_unused_table_takes_the_zone_of_its_first_run(ledger):
    Projector(ledger, billing_tz="Asia/Tokyo").run()  # nothing to apply yet
    Model().record(ledger, charges(3))
    assert Projector(ledger).run() == head(ledger)  # position 0: the new zone may start


def test_tracking_made_before_zones_were_kept_gains_the_column_and_keeps_its_position(make_ledger, store_url):
    engine = sa.create_engine(store_url)
    with engine.begin() as connection:
        connection.execute(sa.text(
            "CREATE TABLE projection_tracking (name VARCHAR(128) PRIMARY KEY, position BIGINT NOT NULL, "
            "owner VARCHAR(64), updated_at TIMESTAMP)"
        ))
        connection.execute(sa.text("INSERT INTO projection_tracking (name, position) VALUES ('other', 7)"))
    engine.dispose()
    ledger = make_ledger()
    Model().record(ledger, charges(3))
    assert Projector(ledger).run() == head(ledger)
    with ledger.recorder.transaction(commit=False) as session:
        zones = dict(session.execute(sa.select(projection_tracking.c.name, projection_tracking.c.time_zone)).all())
        other = session.execute(
            sa.select(projection_tracking.c.position).where(projection_tracking.c.name == "other")
        ).scalar()
    assert zones["daily_billing_records"] == "UTC" and zones["other"] is None and other == 7


# -- tables ----------------------------------------------------------------------


def test_tables_are_created_on_first_use_with_the_agreed_names(ledger):
    Projector(ledger).position()
    names = set(sa.inspect(ledger.recorder.datastore.engine).get_table_names())
    assert {daily_billing_records.name, "daily_billing_records_rebuild", projection_tracking.name} <= names


def test_account_totals_agree_with_the_records(ledger):
    model = Model()
    model.record(ledger, charges(25, accounts=2))
    model.reverse(ledger, "c-2")
    Projector(ledger).run()
    for account in ("acct-0", "acct-1"):
        totals = ledger.account_totals(account)
        rows = [v for k, v in live(ledger).items() if k[0] == account]
        assert (totals.charges, totals.total_tokens) == (sum(r[0] for r in rows), sum(r[3] for r in rows))
    assert account_uuid("acct-0") != account_uuid("acct-1")


def test_keys_with_backslashes_quotes_and_unicode_survive_the_bulk_write(ledger):
    model = Model()
    odd = [dict(item, account_id=account, user_id=user) for item, (account, user) in zip(
        charges(4, accounts=1),
        [("ac\\me", "u\\1"), ("o'brien", 'say "hi"'), ("zürich-ß", "用户"), ("\\N", "\\\\")],
    )]
    model.record(ledger, odd)
    Projector(ledger).run()
    assert live(ledger) == model.records()
    assert rebuild(ledger).clean
