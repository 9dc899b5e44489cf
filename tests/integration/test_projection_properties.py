"""Replay equality over random histories: live == rebuilt == the model, on each store.

A history mixes charges (several accounts and users, some late, around the
DST changes of the billing time zone), reversals, projector runs of random
sizes, and compactions at random points (their rollups restore pruned days in
a rebuild). Hand-made rollups are exercised in test_projector and test_audit.
"""

from __future__ import annotations

import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import PG_URL, reset_postgres
from ledger import Ledger, Settings
from ledger.compaction import compact
from projections import Projector, audit, rebuild
from test_projector import Model, live

UTC = timezone.utc
#: Both 2026 DST changes of America/New_York, Lord Howe's half-hour ones, and plain days.
ANCHORS = (datetime(2026, 3, 7, 12, tzinfo=UTC), datetime(2026, 10, 31, 12, tzinfo=UTC),
           datetime(2026, 4, 4, 6, tzinfo=UTC), datetime(2026, 10, 3, 6, tzinfo=UTC))
ZONES = ("America/New_York", "Australia/Lord_Howe", "UTC")

charge_ops = st.tuples(
    st.just("charge"),
    st.integers(0, 2),  # account
    st.integers(0, 1),  # user
    st.sampled_from(("completion", "tool", "usage")),
    st.sampled_from((None, "openai")),
    st.sampled_from(ANCHORS),
    st.integers(0, 3 * 24 * 60),  # minutes after the anchor: crosses midnights and DST changes
    st.integers(0, 1000),
    st.integers(0, 100),
)
operations = st.one_of(
    charge_ops,
    st.tuples(st.just("reverse"), st.integers(0, 10_000)),
    st.tuples(st.just("project"), st.integers(1, 7), st.one_of(st.none(), st.integers(1, 9))),
    st.tuples(st.just("compact"), st.sampled_from(ANCHORS), st.integers(1, 4), st.booleans()),
)
histories = st.tuples(st.sampled_from(ZONES), st.lists(operations, min_size=1, max_size=30))


class Run:
    """One history against one fresh store."""

    def __init__(self, url: str, zone: str) -> None:
        self.ledger = Ledger(Settings(database_url=url, billing_tz=zone))
        self.model = Model(zone)
        self.projector = Projector(self.ledger, batch_size=3)
        self.count = 0

    def apply(self, op: tuple[Any, ...]) -> None:
        getattr(self, op[0])(*op[1:])

    def charge(self, account, user, charge_type, provider, anchor, minutes, prompt, completion) -> None:
        self.count += 1
        self.model.record(self.ledger, [{
            "charge_id": f"h-{self.count}", "account_id": f"acct-{account}", "user_id": f"u{user}",
            "charge_type": charge_type, "provider": provider, "prompt_tokens": prompt,
            "completion_tokens": completion, "occurred_at": anchor + timedelta(minutes=minutes),
        }])

    def reverse(self, pick: int) -> None:
        open_ids = sorted(set(self.model.charges) - self.model.reversed)
        if open_ids:
            self.model.reverse(self.ledger, open_ids[pick % len(open_ids)])

    def project(self, batch_size: int, max_events: int | None) -> None:
        Projector(self.ledger, batch_size=batch_size).run(max_events=max_events)

    def compact(self, anchor: datetime, days: int, project_first: bool) -> None:
        if project_first:
            self.projector.run()
        before = anchor.date() + timedelta(days=days)
        compact(self.ledger, before=before, projected_position=self.projector.position(), grace=timedelta(0))

    def check(self) -> None:
        self.projector.run()
        expected = self.model.records()
        assert live(self.ledger) == expected
        assert rebuild(self.ledger, batch_size=4).clean  # rebuilt == live
        result = audit(self.ledger, batch_size=5)
        assert result.clean, result.to_dict()
        assert rebuild(self.ledger, swap=True, batch_size=64).swapped
        assert live(self.ledger) == expected

    def close(self) -> None:
        self.ledger.close()


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_live_equals_rebuilt_equals_the_model_over_random_histories(store):
    @settings(max_examples=(25 if store == "sqlite" else 10) * settings.default.max_examples // 100, deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(history=histories)
    def check(history):
        zone, ops = history
        with tempfile.TemporaryDirectory() as folder:
            if store == "sqlite":
                url = f"sqlite:///{Path(folder) / 'ledger.db'}"
            else:
                reset_postgres(PG_URL)
                url = PG_URL
            run = Run(url, zone)
            try:
                for op in ops:
                    run.apply(op)
                run.check()
            finally:
                run.close()

    check()
