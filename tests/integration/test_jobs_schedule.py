"""The daily job's schedule, in the billing time zone, across DST changes, without waiting.

The crontab is checked the way Huey's scheduler checks it (a naive UTC
timestamp once a minute), and through the real ``jobs.huey`` of a process
configured by environment variables.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from jobs.schedule import ZonedCrontab

ROOT = Path(__file__).resolve().parents[2]
UTC = timezone.utc


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def runs(schedule: ZonedCrontab, start: datetime, days: int) -> list[datetime]:
    return schedule.next_runs(start, count=days * 24 * 60, horizon_days=days)


def test_daily_run_is_at_the_local_time_on_both_sides_of_spring_forward():
    schedule = ZonedCrontab("15 0 * * *", "Europe/Paris")
    found = schedule.next_runs(utc(2026, 3, 27), count=3)
    assert found == [utc(2026, 3, 27, 23, 15), utc(2026, 3, 28, 23, 15), utc(2026, 3, 29, 22, 15)]
    assert {r.astimezone(schedule.zone).strftime("%H:%M") for r in found} == {"00:15"}


def test_a_time_the_clocks_skip_runs_right_after_the_jump_once():
    schedule = ZonedCrontab("30 2 * * *", "Europe/Paris")  # 02:30 does not exist on 29 March 2026
    found = schedule.next_runs(utc(2026, 3, 28, 12), count=2)
    assert found == [utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30)]  # 03:00 CEST, then 02:30 CEST


def test_a_time_that_occurs_twice_runs_on_its_first_pass_only():
    schedule = ZonedCrontab("30 2 * * *", "Europe/Paris")  # 02:30 happens twice on 25 October 2026
    found = schedule.next_runs(utc(2026, 10, 24, 12), count=2)
    assert found == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]
    assert not schedule.fires_at(utc(2026, 10, 25, 1, 30))  # the second 02:30 (CET)


@pytest.mark.parametrize(
    "zone, transitions",
    [
        ("Europe/Paris", [utc(2026, 3, 29), utc(2026, 10, 25)]),
        ("America/New_York", [utc(2026, 3, 8, 5), utc(2026, 11, 1, 5)]),
        ("Australia/Sydney", [utc(2026, 4, 4, 13), utc(2026, 10, 3, 14)]),
    ],
)
@pytest.mark.parametrize("hour", [0, 1, 2, 3])
def test_a_daily_schedule_runs_exactly_once_per_local_date_around_dst(zone, transitions, hour):
    schedule = ZonedCrontab(f"30 {hour} * * *", zone)
    tz = ZoneInfo(zone)
    for transition in transitions:
        start = transition - timedelta(days=2)
        found = runs(schedule, start, days=4)
        per_date = Counter(r.astimezone(tz).date() for r in found)
        first = (start + timedelta(minutes=1)).astimezone(tz).date()
        last = (start + timedelta(days=4)).astimezone(tz).date()
        complete_dates = [first + timedelta(days=i) for i in range(1, (last - first).days)]
        assert all(per_date[d] == 1 for d in complete_dates), per_date
        for r in found:  # at the configured wall time, or just after a skipped one
            local = r.astimezone(tz)
            assert (local.hour, local.minute) == (hour, 30) or local.minute == 0


def test_huey_style_checks_fire_once_even_when_a_minute_is_skipped_or_repeated():
    schedule = ZonedCrontab("15 0 * * *", "UTC")
    naive = lambda *a: datetime(*a)  # noqa: E731 - Huey passes naive UTC timestamps
    assert schedule(naive(2026, 6, 1, 0, 13, 59)) is False
    assert schedule(naive(2026, 6, 1, 0, 14, 59, 900_000)) is False
    # The scheduler's 60-second timer drifted: 00:15 was never asked about.
    assert schedule(naive(2026, 6, 1, 0, 16, 0, 100_000)) is True
    assert schedule(naive(2026, 6, 1, 0, 16, 30)) is False  # the same minute again
    assert schedule(naive(2026, 6, 1, 0, 17, 0)) is False
    assert schedule(naive(2026, 6, 2, 0, 15, 1)) is True


def test_bad_crontab_is_refused():
    with pytest.raises(ValueError):
        ZonedCrontab("15 0 * *", "UTC")
    with pytest.raises(ValueError):
        ZonedCrontab("61 0 * * *", "UTC")


def test_the_configured_jobs_huey_enqueues_the_daily_job_at_local_time_across_dst(tmp_path):
    """A process configured by environment: LEDGER_BILLING_TZ and LEDGER_AGGREGATE_SCHEDULE."""
    probe = """
import json, sys
from datetime import datetime
from jobs import huey
from jobs.tasks import AGGREGATE_SCHEDULE
out = []
for text in sys.argv[1:]:
    AGGREGATE_SCHEDULE._last = None  # each probe is its own scheduler tick
    tasks = huey.read_periodic(datetime.fromisoformat(text))
    out.append(sorted(type(t).__name__ for t in tasks if type(t).__name__ == "aggregate_charges"))
print(json.dumps(out))
"""
    probes = [
        "2026-03-28T23:15:00",  # 00:15 CET on 29 March (DST starts at 02:00)
        "2026-03-28T22:15:00",  # 23:15 CET: no
        "2026-03-29T22:15:00",  # 00:15 CEST on 30 March
        "2026-03-29T23:15:00",  # 01:15 CEST: no
        "2026-10-24T22:15:00",  # 00:15 CEST on 25 October (DST ends at 03:00)
        "2026-10-25T23:15:00",  # 00:15 CET on 26 October
        "2026-10-25T22:15:00",  # 23:15 CET: no
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env.update(
        PYTHONPATH=str(ROOT),
        LEDGER_BILLING_TZ="Europe/Paris",
        LEDGER_AGGREGATE_SCHEDULE="15 0 * * *",
        LEDGER_HUEY_URL=f"sqlite:///{tmp_path / 'queue.db'}",
        LEDGER_DATABASE_URL=f"sqlite:///{tmp_path / 'ledger.db'}",
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, *probes], env=env, cwd=tmp_path,
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    due = [bool(names) for names in json.loads(done.stdout)]
    assert due == [True, False, True, False, True, True, False]
    assert json.loads(done.stdout)[0] == ["aggregate_charges"]
    assert not (tmp_path / "queue.db").exists()  # asking the schedule touches no queue
