"""The rollup as a value: its digest, its billing dates, and how a day folds."""

from __future__ import annotations

import hashlib
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.billing_keys import billing_date, day_end
from ledger.compaction_rules import Rules
from ledger.rollup_day import RollupDay
from ledger.rollup_digest import digest_item, digest_of
from ledger.store.event_log import decode_state
from ledger.domain import CHARGE_RECORDED_TOPIC, CHARGE_REVERSED_TOPIC, DAY_ROLLED_UP_TOPIC

UTC = timezone.utc
NOW = datetime(2026, 6, 1, tzinfo=UTC)
OLD = datetime(2026, 1, 10, tzinfo=UTC)
RULES = Rules(before=date(2026, 2, 1), projected_position=100, cutoff=NOW - timedelta(days=2),
               zone=ZoneInfo("UTC"), time_zone="UTC")


def raw(charge_id: str, prompt: int, completion: int, *, user: str = "u1", model: str | None = "m",
        recorded_at: datetime = OLD) -> dict:
    return dict(charge_id=charge_id, account_id="acme", user_id=user, charge_type="completion",
                provider=None, model=model, prompt_tokens=prompt, completion_tokens=completion,
                total_tokens=prompt + completion, recorded_at=recorded_at)


def test_digest_format_is_the_documented_text():
    items = [("b", -1, 1, 2, 3), ("a", 1, 1, 2, 3), ("é", 1, 0, 0, 0)]
    text = '["a",1,1,2,3]\n["b",-1,1,2,3]\n["é",1,0,0,0]\n'
    assert digest_of(items) == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert digest_of(items, previous="ff") == hashlib.sha256(
        ("previous:ff\n" + text).encode("utf-8")).hexdigest()


@settings(max_examples=50 * settings.default.max_examples // 100, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=8), st.sampled_from([1, -1]),
                          st.integers(0, 10**12), st.integers(0, 10**12), st.integers(0, 10**12)),
                max_size=20), st.randoms())
def test_digest_ignores_order_and_sees_every_figure(items, rnd):
    shuffled = list(items)
    rnd.shuffle(shuffled)
    assert digest_of(shuffled) == digest_of(items)
    if items:
        changed = list(items)
        first = changed[0]
        changed[0] = (first[0], first[1], first[2] + 1, first[3], first[4])
        assert digest_of(changed) != digest_of(items)
        assert digest_of(items[1:]) != digest_of(items)
    assert digest_of(items, previous="x") != digest_of(items)


def test_digest_item_signs_reversals_and_refuses_other_events():
    assert digest_item(CHARGE_RECORDED_TOPIC, raw("c", 3, 4)) == ("c", 1, 3, 4, 7)
    assert digest_item(CHARGE_REVERSED_TOPIC, raw("c", 3, 4)) == ("c", -1, 3, 4, 7)
    with pytest.raises(ValueError):
        digest_item(DAY_ROLLED_UP_TOPIC, raw("c", 3, 4))


def test_decode_state_reads_transcoded_datetimes():
    state = b'{"at":{"_type_":"datetime_iso","_data_":"2026-01-01T10:00:00+00:00"},"n":1}'
    assert decode_state(state) == {"at": datetime(2026, 1, 1, 10, tzinfo=UTC), "n": 1}


def test_billing_dates_and_day_ends_follow_the_zone_across_dst():
    york = ZoneInfo("America/New_York")
    assert billing_date(datetime(2026, 3, 8, 4, 30, tzinfo=UTC), york) == date(2026, 3, 7)
    assert billing_date(datetime(2026, 3, 8, 5, 30, tzinfo=UTC), york) == date(2026, 3, 8)
    assert day_end(date(2026, 3, 7), york) == datetime(2026, 3, 8, 5, tzinfo=UTC)
    # The day clocks spring forward is 23 hours long; the day they fall back, 25.
    assert day_end(date(2026, 3, 8), york) - day_end(date(2026, 3, 7), york) == timedelta(hours=23)
    assert day_end(date(2026, 11, 1), york) - day_end(date(2026, 10, 31), york) == timedelta(hours=25)


def test_rules_need_a_closed_day_before_the_cutoff():
    assert RULES.day_is_due(date(2026, 1, 31))
    assert not RULES.day_is_due(date(2026, 2, 1))  # not before the cut-off
    late = Rules(before=date(2026, 7, 1), projected_position=100, cutoff=NOW - timedelta(days=2),
                  zone=ZoneInfo("UTC"), time_zone="UTC")
    assert late.day_is_due(date(2026, 5, 29)) and not late.day_is_due(date(2026, 5, 30))
    assert RULES.may_prune(100, OLD) and not RULES.may_prune(101, OLD)
    assert not RULES.may_prune(5, NOW - timedelta(days=1))
    assert RULES.may_prune(5, (NOW - timedelta(days=3)).replace(tzinfo=None))  # SQLite drops zones


def test_a_day_folds_charges_and_reversals_per_group_keeping_zero_groups():
    day = RollupDay(date(2026, 1, 1))
    day.add_raw(1, CHARGE_RECORDED_TOPIC, raw("a", 10, 5), 100, RULES)
    day.add_raw(2, CHARGE_RECORDED_TOPIC, raw("b", 1, 1, user="u2", model=None), 100, RULES)
    day.add_raw(3, CHARGE_REVERSED_TOPIC, raw("b", 1, 1, user="u2", model=None), 100, RULES)
    day.add_raw(4, CHARGE_RECORDED_TOPIC, raw("c", 2, 0), 100, RULES)

    fields = day.rollup_fields("acme", RULES, NOW)

    assert day.ready and day.pruned_ids == [1, 2, 3, 4] and day.pruned_bytes == 400
    assert fields["groups"] == [
        dict(user_id="u1", charge_type="completion", provider=None, model="m",
             charges=2, prompt_tokens=12, completion_tokens=5, total_tokens=17,
             cost_micros=0, unpriced_charges=2),
        dict(user_id="u2", charge_type="completion", provider=None, model=None,
             charges=0, prompt_tokens=0, completion_tokens=0, total_tokens=0,
             cost_micros=0, unpriced_charges=0),
    ]
    assert (fields["charges"], fields["events"]) == (2, 4)
    assert (fields["first_position"], fields["last_position"]) == (1, 4)
    assert fields["billing_date"] == "2026-01-01" and fields["time_zone"] == "UTC"
    assert fields["digest"] == digest_of([("a", 1, 10, 5, 15), ("b", 1, 1, 1, 2),
                                          ("b", -1, 1, 1, 2), ("c", 1, 2, 0, 2)])


def test_a_later_rollup_starts_from_the_earlier_one_and_covers_it():
    first = RollupDay(date(2026, 1, 1))
    first.add_raw(3, CHARGE_RECORDED_TOPIC, raw("a", 10, 5), 100, RULES)
    earlier = first.rollup_fields("acme", RULES, OLD)

    day = RollupDay(date(2026, 1, 1))
    day.add_rollup(9, earlier, 500, RULES)
    day.add_raw(12, CHARGE_RECORDED_TOPIC, raw("late", 1, 0), 100, RULES)
    fields = day.rollup_fields("acme", RULES, NOW)

    assert day.pruned_ids == [12, 9] and day.pruned_bytes == 600
    assert fields["groups"][0]["charges"] == 2 and fields["groups"][0]["total_tokens"] == 16
    assert (fields["events"], fields["first_position"], fields["last_position"]) == (2, 3, 12)
    assert fields["digest"] == digest_of([("late", 1, 1, 0, 1)], previous=earlier["digest"])


def test_a_day_waits_while_anything_to_prune_is_unprojected_or_recent():
    unprojected = RollupDay(date(2026, 1, 1))
    unprojected.add_raw(101, CHARGE_RECORDED_TOPIC, raw("a", 1, 1), 100, RULES)
    recent = RollupDay(date(2026, 1, 1))
    recent.add_raw(5, CHARGE_RECORDED_TOPIC, raw("a", 1, 1, recorded_at=NOW), 100, RULES)
    recent_rollup = RollupDay(date(2026, 1, 1))
    rollup = dict(account_id="acme", billing_date="2026-01-01", time_zone="UTC", groups=[],
                  charges=0, events=0, digest="d", first_position=1, last_position=1, recorded_at=NOW)
    recent_rollup.add_rollup(6, rollup, 100, RULES)
    recent_rollup.add_raw(7, CHARGE_RECORDED_TOPIC, raw("a", 1, 1), 100, RULES)
    only_rollup = RollupDay(date(2026, 1, 1))
    only_rollup.add_rollup(6, {**rollup, "recorded_at": OLD}, 100, RULES)

    assert not unprojected.ready and not recent.ready and not recent_rollup.ready
    assert not only_rollup.ready  # nothing new: nothing to do


def test_raw_events_stored_before_a_rollup_of_their_day_block_it():
    day = RollupDay(date(2026, 1, 1))
    day.add_raw(1, CHARGE_RECORDED_TOPIC, raw("a", 1, 1), 100, RULES)
    day.add_rollup(2, dict(account_id="acme", billing_date="2026-01-01", time_zone="UTC", groups=[],
                           charges=0, events=0, digest="d", first_position=1, last_position=1,
                           recorded_at=OLD), 100, RULES)
    assert day.blocked
