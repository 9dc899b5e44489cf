"""Compaction is invisible to the read side: live records == rebuilt == the model, audit clean.

The projector's position is what the caller hands to compaction, as the jobs
and the command line do.
"""

from __future__ import annotations

import itertools
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import PG_URL, reset_postgres
from ledger import Ledger, Settings
from ledger.compaction import compact
from projections import Projector, audit, rebuild
from projections.reports import records
from test_compaction import DAY1, Model, check, charge, history, rollups

UTC = timezone.utc
NO_GRACE = timedelta(0)


def live(ledger: Ledger) -> dict[tuple, tuple[int, int, int, int]]:
    """The live daily billing records in the model's shape (zero rows left out)."""
    found = {}
    for r in records(ledger):
        key = (r["account_id"], r["billing_date"].isoformat(), r["user_id"], r["charge_type"],
               r["provider"], r["model"])
        figures = (r["charges"], r["prompt_tokens"], r["completion_tokens"], r["total_tokens"])
        if any(figures):
            found[key] = figures
    return found


def compact_projected(ledger: Ledger, projector: Projector, before: date = date(2026, 2, 1), **kwargs: Any):
    return compact(ledger, before=before, projected_position=projector.position(), grace=NO_GRACE, **kwargs)


def assert_invisible(ledger: Ledger, projector: Projector, model: Model) -> None:
    projector.run()
    assert live(ledger) == model.records()
    check(ledger, model)
    result = audit(ledger)
    assert result.clean, result.to_dict()
    assert rebuild(ledger).clean


def test_compaction_leaves_live_and_rebuilt_records_and_the_audit_unchanged(ledger):
    model = Model()
    history(ledger, model)
    projector = Projector(ledger)
    projector.run()
    before = live(ledger)
    assert before == model.records()

    result = compact_projected(ledger, projector)

    assert result.days == 6 and result.events_pruned == 33
    assert live(ledger) == before  # nothing projected yet: the rollups come next
    assert_invisible(ledger, projector, model)
    assert audit(ledger).rollups_checked == 6


def test_a_lagging_projector_holds_back_the_days_it_has_not_applied(ledger):
    model = Model()
    history(ledger, model)
    projector = Projector(ledger, batch_size=5)
    projector.run(max_events=12)
    applied = projector.position()

    result = compact_projected(ledger, projector)

    assert result.skipped > 0
    for rollup in rollups(ledger):
        assert rollup["last_position"] <= applied
    assert_invisible(ledger, projector, model)
    assert compact_projected(ledger, projector).days == 6 - result.days
    assert_invisible(ledger, projector, model)


def test_late_charge_and_reversal_of_a_pruned_charge_then_recompaction(ledger):
    model = Model()
    history(ledger, model)
    projector = Projector(ledger)
    projector.run()
    compact_projected(ledger, projector)
    assert_invisible(ledger, projector, model)

    model.record(ledger, charge(300, day=DAY1, user="late"))
    model.reverse(ledger, "c-6")  # pruned: the index still knows it
    assert_invisible(ledger, projector, model)

    result = compact_projected(ledger, projector)

    assert result.rollups_superseded == 1 or result.rollups_superseded == 2
    assert_invisible(ledger, projector, model)


def test_interrupted_compaction_then_rerun_keeps_the_read_side_exact(ledger):
    model = Model()
    history(ledger, model)
    projector = Projector(ledger)
    projector.run()

    def crash(step: str, _aggregate_id: object) -> None:
        if step == "snapshotted":
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError):
        compact_projected(ledger, projector, on_step=crash)
    assert_invisible(ledger, projector, model)
    compact_projected(ledger, projector)
    assert_invisible(ledger, projector, model)


# -- random histories with the projector in the loop ---------------------------

DAYS = [date(2026, 1, 1) + timedelta(days=i) for i in range(3)]
ops = st.lists(st.one_of(
    st.tuples(st.just("charge"), st.integers(0, 1), st.integers(0, 1), st.integers(0, 2),
              st.integers(0, 23), st.integers(0, 40)),
    st.tuples(st.just("reverse"), st.integers(0, 10**6)),
    st.tuples(st.just("project"), st.integers(1, 8)),
    st.tuples(st.just("compact"), st.integers(0, 3)),
), min_size=1, max_size=30)


def play(url: str, zone: str, operations: list[tuple]) -> None:
    ledger = Ledger(Settings(database_url=url, billing_tz=zone))
    try:
        projector = Projector(ledger, batch_size=3)
        model = Model(zone)
        ids = itertools.count()
        for op in operations:
            if op[0] == "charge":
                _, account, user, day, hour, tokens = op
                moment = datetime.combine(DAYS[day], datetime.min.time(), UTC) + timedelta(hours=hour)
                model.record(ledger, dict(charge_id=f"c-{next(ids)}", account_id=f"a{account}",
                                          user_id=f"u{user}", charge_type="completion",
                                          prompt_tokens=tokens, completion_tokens=1,
                                          occurred_at=moment.isoformat()))
            elif op[0] == "reverse":
                open_ids = [c for c in model.charges if c not in model.reversed]
                if open_ids:
                    model.reverse(ledger, open_ids[op[1] % len(open_ids)])
            elif op[0] == "project":
                projector.run(max_events=op[1])
            else:
                compact_projected(ledger, projector, before=DAYS[0] + timedelta(days=op[1]))
        assert_invisible(ledger, projector, model)
        compact_projected(ledger, projector)
        assert_invisible(ledger, projector, model)
    finally:
        ledger.close()


_files = itertools.count()


@settings(max_examples=20 * settings.default.max_examples // 100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(zone=st.sampled_from(["UTC", "Europe/Berlin"]), operations=ops)
def test_random_histories_with_the_projector_on_sqlite(tmp_path: Path, zone, operations):
    play(f"sqlite:///{tmp_path / f'p{next(_files)}.db'}", zone, operations)


@pytest.mark.postgres
@settings(max_examples=8 * settings.default.max_examples // 100, deadline=None)
@given(zone=st.sampled_from(["UTC", "Europe/Berlin"]), operations=ops)
def test_random_histories_with_the_projector_on_postgres(zone, operations):
    reset_postgres(PG_URL)
    play(PG_URL, zone, operations)
