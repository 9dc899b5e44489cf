"""Billing dates and the in-memory fold: pure functions, no store."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.domain import CHARGE_RECORDED_TOPIC, CHARGE_REVERSED_TOPIC, DAY_ROLLED_UP_TOPIC
from ledger.billing_keys import billing_date_function
from ledger.store.event_log import state_decoder
from ledger.store.read_model import stored_rows
from projections.day_fold import DayFold
from projections.errors import ProjectionError

ZONES = ["UTC", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "Pacific/Chatham", "Asia/Kathmandu"]
NY = ZoneInfo("America/New_York")


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat()


@settings(max_examples=300 * settings.default.max_examples // 100, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    moment=st.datetimes(
        min_value=datetime(2020, 1, 1), max_value=datetime(2035, 12, 31), timezones=st.just(timezone.utc)
    ),
)
def test_cached_billing_date_equals_direct_conversion(zone, moment):
    date_of = billing_date_function(ZoneInfo(zone))
    expected = moment.astimezone(ZoneInfo(zone)).date()
    assert date_of(iso(moment)) == expected
    assert date_of(iso(moment)) == expected  # second call answers from the cache


@pytest.mark.parametrize("zone", ZONES)
def test_every_minute_around_midnight_and_dst_changes(zone):
    """Walk minute by minute through days with DST changes: cache and direct agree."""
    tz = ZoneInfo(zone)
    date_of = billing_date_function(tz)
    for day in (date(2026, 3, 8), date(2026, 11, 1), date(2026, 4, 5), date(2026, 10, 4), date(2026, 9, 27)):
        start = datetime.combine(day, datetime.min.time(), timezone.utc) - timedelta(hours=16)
        for minute in range(0, 48 * 60, 7):
            moment = start + timedelta(minutes=minute, seconds=59, microseconds=999_999)
            assert date_of(iso(moment)) == moment.astimezone(tz).date()


def test_new_york_dst_boundaries():
    date_of = billing_date_function(NY)
    # EST (UTC-5) before 2026-03-08 07:00Z, EDT (UTC-4) after; back to EST at 2026-11-01 06:00Z.
    assert date_of("2026-03-08T04:59:59.999999+00:00") == date(2026, 3, 7)
    assert date_of("2026-03-08T05:00:00+00:00") == date(2026, 3, 8)
    assert date_of("2026-03-09T03:59:59+00:00") == date(2026, 3, 8)
    assert date_of("2026-03-09T04:00:00+00:00") == date(2026, 3, 9)
    assert date_of("2026-11-01T03:59:59+00:00") == date(2026, 10, 31)
    assert date_of("2026-11-01T04:00:00+00:00") == date(2026, 11, 1)
    assert date_of("2026-11-02T04:59:59+00:00") == date(2026, 11, 1)
    assert date_of("2026-11-02T05:00:00+00:00") == date(2026, 11, 2)
    # A timestamp written with another offset is converted exactly, not cached by hour.
    assert date_of("2026-03-08T00:30:00-05:00") == date(2026, 3, 8)


def _charge(account="acme", user="u1", at="2026-03-08T12:00:00+00:00", p=10, c=5, provider="openai", model=None):
    return {
        "account_id": account, "user_id": user, "charge_type": "completion", "provider": provider,
        "model": model, "prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c,
        "occurred_at": {"_type_": "datetime_iso", "_data_": at},
    }


def _rollup(account="acme", day="2026-03-08", groups=(), zone="UTC"):
    return {"account_id": account, "billing_date": day, "time_zone": zone, "groups": list(groups)}


def _group(user="u1", charges=1, p=10, c=5, provider="openai", model=None):
    return {"user_id": user, "charge_type": "completion", "provider": provider, "model": model,
            "charges": charges, "prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def fold(events, zone="UTC"):
    tz = ZoneInfo(zone)
    result = DayFold(tz.key, billing_date_function(tz))
    result.add_rows(((topic, json.dumps(state).encode()) for topic, state in events), state_decoder(None))
    return result


KEY = ("u1", "completion", "openai", None)
DAY = ("acme", date(2026, 3, 8))


def test_charges_add_and_reversals_subtract_per_key():
    result = fold([
        (CHARGE_RECORDED_TOPIC, _charge(p=10)),
        (CHARGE_RECORDED_TOPIC, _charge(p=20)),
        (CHARGE_REVERSED_TOPIC, _charge(p=10)),
        ("ledger.domain:Account.Opened", {"account_id": "acme"}),
    ])
    assert result.days == {DAY: {KEY: [1, 20, 5, 25, 0, 1]}}
    assert result.resets == set()


def test_unspecified_provider_and_model_are_their_own_group():
    result = fold([(CHARGE_RECORDED_TOPIC, _charge(provider=None)), (CHARGE_RECORDED_TOPIC, _charge())])
    assert result.days[DAY] == {("u1", "completion", None, None): [1, 10, 5, 15, 0, 1], KEY: [1, 10, 5, 15, 0, 1]}


def test_rollup_sets_its_day_after_the_events_before_it_and_before_those_after_it():
    result = fold([
        (CHARGE_RECORDED_TOPIC, _charge(p=1)),  # covered by the rollup: replaced
        (CHARGE_RECORDED_TOPIC, _charge(at="2026-03-09T12:00:00+00:00", p=7)),  # another day: kept
        (DAY_ROLLED_UP_TOPIC, _rollup(groups=[_group(charges=3, p=30, c=15)])),
        (CHARGE_RECORDED_TOPIC, _charge(p=2)),  # late charge after the rollup: adds on top
    ])
    assert result.resets == {DAY}
    assert result.days[DAY] == {KEY: [4, 32, 20, 52, 0, 4]}
    assert result.days[("acme", date(2026, 3, 9))] == {KEY: [1, 7, 5, 12, 0, 1]}


def test_rows_carry_every_touched_key_once():
    result = fold([(CHARGE_RECORDED_TOPIC, _charge()), (CHARGE_RECORDED_TOPIC, _charge(user="u2"))])
    rows = stored_rows(result.days, "now")
    assert sorted(rows) == [
        ("acme", "2026-03-08", "u1", "completion", "openai", "", 1, 10, 5, 15, 0, 1, "now"),
        ("acme", "2026-03-08", "u2", "completion", "openai", "", 1, 10, 5, 15, 0, 1, "now"),
    ]


def test_a_rollup_made_in_another_time_zone_is_refused():
    with pytest.raises(ProjectionError, match="time zone"):
        fold([(DAY_ROLLED_UP_TOPIC, _rollup(zone="Europe/Paris"))], zone="UTC")


def test_billing_date_of_a_charge_follows_the_zone():
    late_evening = "2026-03-09T03:30:00+00:00"  # 23:30 EDT on 2026-03-08
    assert set(fold([(CHARGE_RECORDED_TOPIC, _charge(at=late_evening))], zone="America/New_York").days) == {DAY}
    assert set(fold([(CHARGE_RECORDED_TOPIC, _charge(at=late_evening))]).days) == {("acme", date(2026, 3, 9))}
