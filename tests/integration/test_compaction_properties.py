"""Random histories with compactions (some interrupted) at random points, on both stores.

After every compaction and at the end, the log folded from scratch (rollups
set their day, raw events add) equals a plain model of the accepted charges,
and every account's totals equal the model's, from this ledger and a fresh one.
"""

from __future__ import annotations

import itertools
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import PG_URL, reset_postgres
from ledger import Ledger, Settings
from test_compaction import Model, check, run

UTC = timezone.utc
DAYS = [date(2026, 1, 1) + timedelta(days=i) for i in range(4)]
STEPS = ["rolled_up", "saved", "snapshotted", "pruned", "committed"]

charges = st.tuples(st.just("charge"), st.integers(0, 2), st.integers(0, 1), st.integers(0, 3),
                    st.integers(0, 23), st.integers(0, 1), st.integers(0, 50), st.integers(0, 50))
duplicates = st.tuples(st.just("duplicate"), st.integers(0, 10**6))
reversals = st.tuples(st.just("reverse"), st.integers(0, 10**6))
compactions = st.tuples(st.just("compact"), st.integers(0, 4), st.integers(0, 3), st.booleans())
crashes = st.tuples(st.just("crash"), st.sampled_from(STEPS), st.integers(0, 4))
operations = st.lists(st.one_of(charges, charges, charges, duplicates, reversals, compactions, crashes),
                      min_size=1, max_size=40)
zones = st.sampled_from(["UTC", "America/New_York"])


class Crash(Exception):
    pass


def play(url: str, zone: str, ops: list[tuple]) -> None:
    ledger = Ledger(Settings(database_url=url, billing_tz=zone))
    fresh = Ledger(Settings(database_url=url, billing_tz=zone))
    try:
        model = Model(zone)
        ids = itertools.count()
        for op in ops:
            kind = op[0]
            if kind == "charge":
                _, account, user, day, hour, ctype, prompt, completion = op
                moment = datetime.combine(DAYS[day], datetime.min.time(), UTC) + timedelta(hours=hour)
                model.record(ledger, dict(
                    charge_id=f"c-{next(ids)}", account_id=f"acct-{account}", user_id=f"u{user}",
                    charge_type=("completion", "tool")[ctype], provider=None, model=("m1", None)[ctype],
                    prompt_tokens=prompt, completion_tokens=completion, occurred_at=moment.isoformat()))
            elif kind == "duplicate" and model.charges:
                known = list(model.charges.values())
                model.record(ledger, known[op[1] % len(known)])
            elif kind == "reverse":
                open_ids = [c for c in model.charges if c not in model.reversed]
                if open_ids:
                    model.reverse(ledger, open_ids[op[1] % len(open_ids)])
            elif kind == "compact":
                _, before, lag, dry_run = op
                top = ledger.recorder.max_notification_id() or 0
                run(ledger, before=DAYS[0] + timedelta(days=before), position=max(0, top - lag),
                    dry_run=dry_run)
                check(ledger, model)
            elif kind == "crash":
                _, step, nth = op
                calls = itertools.count()

                def crash(at: str, _aggregate_id: object) -> None:
                    if at == step and next(calls) == nth:
                        raise Crash(at)

                try:
                    run(ledger, on_step=crash)
                except Crash:
                    pass
                check(ledger, model)
        run(ledger)
        assert run(ledger).events_pruned == 0  # a second run finds nothing
        check(ledger, model, fresh)
    finally:
        ledger.close()
        fresh.close()


@settings(max_examples=25 * settings.default.max_examples // 100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(zone=zones, ops=operations)
def test_random_histories_compact_invisibly_on_sqlite(tmp_path: Path, zone, ops):
    path = tmp_path / f"h{next(_files)}.db"
    play(f"sqlite:///{path}", zone, ops)


_files = itertools.count()


@pytest.mark.postgres
@settings(max_examples=10 * settings.default.max_examples // 100, deadline=None)
@given(zone=zones, ops=operations)
def test_random_histories_compact_invisibly_on_postgres(zone, ops):
    reset_postgres(PG_URL)
    play(PG_URL, zone, ops)
