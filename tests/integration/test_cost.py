"""Costs on each real store: pinned at record time, conserved, repriced without touching anything."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from ledger import InvalidCharge, Totals, Unpriced
from ledger.appender import Appender
from ledger.compaction import compact
from ledger.domain import CHARGE_RECORDED_TOPIC, account_uuid
from ledger.pricing import table_of, validate_price
from projections import Projector, audit
from projections.reports import records
from projections.reprice import reprice

UTC = timezone.utc
CHANGE = datetime(2026, 1, 10, 12, tzinfo=UTC)
ONE_US = timedelta(microseconds=1)
OLD = {"provider": "openai", "model": "gpt-4o", "prompt_micros_per_million": 2_000_000,
       "completion_micros_per_million": 8_000_000, "effective_from": "2025-01-01T00:00:00Z"}
NEW = {**OLD, "prompt_micros_per_million": 2_500_000, "completion_micros_per_million": 10_000_000,
       "effective_from": CHANGE.isoformat()}


def charge(charge_id: str, at: datetime, prompt: int = 1000, completion: int = 500, account: str = "acme",
           model: str = "gpt-4o", **more):
    return {"charge_id": charge_id, "account_id": account, "user_id": "ada", "charge_type": "completion",
            "provider": "openai", "model": model, "prompt_tokens": prompt, "completion_tokens": completion,
            "occurred_at": at.isoformat(), **more}


def record_cost(ledger) -> int:
    return sum(r["cost_micros"] for r in records(ledger))


def test_a_charge_is_costed_by_the_price_in_effect_at_its_time_to_the_microsecond(ledger):
    old, new = ledger.set_prices([OLD, NEW])
    before = ledger.record_charge(**charge("before", CHANGE - ONE_US))
    at = ledger.record_charge(**charge("at", CHANGE))
    after = ledger.record_charge(**charge("after", CHANGE + ONE_US))
    assert (before.cost_micros, before.price_version) == (2_000 + 4_000, old.version)
    assert (at.cost_micros, at.price_version) == (2_500 + 5_000, new.version)
    assert (after.cost_micros, after.price_version) == (7_500, new.version)
    event = ledger.mapper.to_domain_event(ledger.recorder.select_notifications(start=1, limit=100)[-1])
    assert (event.cost_micros, event.price_version) == (7_500, new.version)
    assert ledger.account_totals("acme") == Totals(3, 3000, 1500, 4500, 21_000, 0)


def test_a_retry_keeps_the_cost_it_was_first_recorded_with(ledger):
    ledger.set_prices([OLD])
    first = ledger.record_charge(**charge("c1", CHANGE))
    ledger.set_prices([NEW])  # now a different price covers the charge's time
    again = ledger.record_charge(**charge("c1", CHANGE))
    assert again.duplicate and (again.cost_micros, again.price_version) == (first.cost_micros, first.price_version)
    assert ledger.account_totals("acme").cost_micros == first.cost_micros


def test_a_price_set_by_another_process_is_never_missed(make_ledger):
    writer, pricer = make_ledger(), make_ledger()
    assert writer.record_charge(**charge("c0", CHANGE)).price_version is None  # caches the empty catalogue
    pricer.set_prices([NEW])
    receipt = writer.record_charge(**charge("c1", CHANGE))  # the store refuses the stale catalogue
    assert receipt.cost_micros == 7_500 and receipt.price_version is not None


def test_unpriced_charges_are_recorded_and_counted_by_default(ledger):
    ledger.set_prices([OLD])
    receipt = ledger.record_charge(**charge("c1", CHANGE, model="mystery"))
    assert (receipt.cost_micros, receipt.price_version) == (None, None)
    ledger.record_charge(**charge("c2", CHANGE))
    Projector(ledger).run()
    rows = {r["model"]: r for r in records(ledger)}
    assert (rows["mystery"]["cost_micros"], rows["mystery"]["unpriced_charges"]) == (0, 1)
    assert (rows["gpt-4o"]["cost_micros"], rows["gpt-4o"]["unpriced_charges"]) == (6_000, 0)


def test_unpriced_charges_can_be_refused_naming_why_and_keeping_valid_neighbours(make_ledger):
    ledger = make_ledger(unpriced="reject")
    ledger.set_prices([OLD])
    with pytest.raises(Unpriced) as caught:
        ledger.record_charge(**charge("c1", CHANGE, model="mystery"))
    assert isinstance(caught.value, InvalidCharge) and "mystery" in caught.value.errors["model"]
    outcomes = ledger.record_charges([charge("ok", CHANGE), charge("no", CHANGE, model="mystery")])
    assert outcomes[0].ok and isinstance(outcomes[1].error, Unpriced)
    assert ledger.store.find_charge("acme", "no") is None and ledger.account_totals("acme").charges == 1


def test_many_small_charges_sum_exactly_to_their_costs(ledger):
    ledger.set_prices([{**OLD, "prompt_micros_per_million": 150_000, "completion_micros_per_million": 600_000}])
    outcomes = ledger.record_charges(
        [charge(f"c{i}", CHANGE + timedelta(seconds=i), prompt=i % 17, completion=i % 5) for i in range(3000)]
    )
    costs = [o.receipt.cost_micros for o in outcomes]
    expected = [((i % 17) * 150_000 + (i % 5) * 600_000 + 500_000) // 1_000_000 for i in range(3000)]
    assert costs == expected
    Projector(ledger).run()
    assert record_cost(ledger) == sum(expected) == ledger.account_totals("acme").cost_micros


def test_a_reversal_takes_back_exactly_the_cost_of_its_charge(ledger):
    ledger.set_prices([OLD])
    ledger.record_charge(**charge("c1", CHANGE))
    ledger.set_prices([NEW])  # the reversal must not re-cost the charge
    ledger.record_charge(**charge("c2", CHANGE))
    receipt = ledger.reverse_charge("c1")
    assert (receipt.cost_micros, receipt.price_version) == (6_000, 2)
    Projector(ledger).run()
    assert record_cost(ledger) == 7_500 == ledger.account_totals("acme").cost_micros


def test_reprice_reports_the_difference_per_account_and_day_and_touches_nothing(ledger):
    ledger.set_prices([OLD])
    day1, day2 = datetime(2026, 1, 5, 9, tzinfo=UTC), datetime(2026, 1, 6, 9, tzinfo=UTC)
    ledger.record_charges([charge("a1", day1), charge("a2", day2), charge("b1", day1, account="beta"),
                           charge("b2", day1, account="beta", model="mystery")])
    Projector(ledger).run()
    live_before = records(ledger)
    position = ledger.recorder.max_notification_id()
    other = table_of([validate_price({**NEW, "effective_from": "2026-01-06T00:00:00Z"}, ["completion"]),
                      validate_price({**OLD, "model": "mystery", "prompt_micros_per_million": 1_000_000,
                                      "completion_micros_per_million": 0}, ["completion"])])
    result = reprice(ledger, other, start=date(2026, 1, 5))
    got = {(d.account_id, d.billing_date.day): (d.cost_micros, d.repriced_micros, d.unpriced_charges,
                                                d.repriced_unpriced) for d in result.days}
    assert got == {
        ("acme", 5): (6_000, 0, 0, 1),  # before the file's gpt-4o price: unpriced under it
        ("acme", 6): (6_000, 7_500, 0, 0),
        ("beta", 5): (6_000 + 0, 1_000, 1, 1),  # mystery is priced by the file; gpt-4o is not yet
    }
    assert result.total("repriced_micros") - result.total("cost_micros") == (0 + 7_500 + 1_000) - 18_000
    assert reprice(ledger, other, start=date(2026, 1, 6)).to_dict()["days"] == [
        {"account_id": "acme", "billing_date": date(2026, 1, 6), "charges": 1, "cost_micros": 6_000,
         "repriced_micros": 7_500, "unpriced_charges": 0, "repriced_unpriced": 0, "basis": "charges",
         "difference_micros": 1_500}]
    assert records(ledger) == live_before and ledger.recorder.max_notification_id() == position
    assert ledger.price_table(refresh=True).version == 2  # the live catalogue is untouched


def test_cost_is_conserved_through_compaction_and_audits_clean(ledger):
    ledger.set_prices([OLD, {**OLD, "charge_type": "tool", "per_call_micros": 1_000}])
    items = [charge(f"c{i}", datetime(2026, 1, 1 + i % 4, 10, tzinfo=UTC) + timedelta(minutes=i),
                    prompt=i * 7, completion=i % 11, charge_type="tool" if i % 3 == 0 else "completion",
                    model="gpt-4o" if i % 5 else "mystery")
             for i in range(200)]
    for item in items:
        item["user_id"] = f"u{int(item['charge_id'][1:]) % 3}"
    outcomes = ledger.record_charges(items)
    for i in range(0, 200, 9):
        ledger.reverse_charge(f"c{i}")
    reversed_cost = sum(outcomes[i].receipt.cost_micros or 0 for i in range(0, 200, 9))
    expected_cost = sum(o.receipt.cost_micros or 0 for o in outcomes) - reversed_cost
    Projector(ledger).run()
    before = records(ledger)
    totals = ledger.account_totals("acme")
    assert record_cost(ledger) == expected_cost == totals.cost_micros > 0
    assert sum(r["unpriced_charges"] for r in before) == totals.unpriced_charges > 0

    result = compact(ledger, before=date(2026, 1, 5), projected_position=ledger.recorder.max_notification_id(),
                     grace=timedelta(0))
    assert result.days == 4 and result.events_pruned > 200
    Projector(ledger).run()
    assert records(ledger) == before
    assert ledger.account_totals("acme") == totals
    checked = audit(ledger)
    assert checked.clean, checked.to_dict()
    assert checked.conservation.records["cost_micros"] == checked.conservation.log["cost_micros"] == expected_cost
    assert checked.conservation.accounts["cost_micros"] == expected_cost
    repriced = reprice(ledger, ledger.price_table())  # the live catalogue: compacted days reprice per group
    assert {d.basis for d in repriced.days} == {"rollup"}
    assert repriced.total("cost_micros") == expected_cost


def test_audit_catches_a_tampered_cost(ledger):
    ledger.set_prices([OLD])
    ledger.record_charge(**charge("c1", CHANGE))
    Projector(ledger).run()
    engine = ledger.recorder.datastore.engine
    with engine.begin() as connection:
        connection.exec_driver_sql("UPDATE daily_billing_records SET cost_micros = cost_micros + 1")
    checked = audit(ledger)
    assert not checked.clean and checked.difference_count == 1
    assert checked.conservation.records["cost_micros"] == checked.conservation.log["cost_micros"] + 1


def test_direct_encoding_is_byte_identical_to_the_mapper_priced_or_not(ledger):
    ledger.set_prices([OLD])
    appender: Appender = ledger.appender
    for charge_id, model in (("p", "gpt-4o"), ("u", "mystery")):
        ledger.record_charge(**charge(charge_id, CHANGE, model=model))
        stored = ledger.recorder.select_notifications(start=1, limit=100)[-1]
        event = ledger.mapper.to_domain_event(stored)
        valid = ledger.validate(charge(charge_id, CHANGE, model=model))
        cost = (event.cost_micros, event.price_version)
        assert stored.state == appender.charge_state(valid, account_uuid("acme"), event.recorded_at, cost)
        via_mapper = ledger.mapper.to_stored_event(
            appender._charge_event(valid, account_uuid("acme"), event.recorded_at, cost)
        ).state
        assert stored.state == via_mapper


def test_events_recorded_before_costs_existed_still_load_and_project(ledger):
    """An old ChargeRecorded (no cost fields) is an unpriced charge."""
    ledger.record_charge(**charge("new", CHANGE))
    stored = ledger.recorder.select_notifications(start=1, limit=100)[-1]
    state = json.loads(stored.state)
    del state["cost_micros"], state["price_version"]
    state["charge_id"] = "old"
    table = ledger.recorder.events_record_cls.__table__
    engine = ledger.recorder.datastore.engine
    with engine.begin() as connection:
        connection.execute(table.insert().values(
            originator_id=stored.originator_id, originator_version=stored.originator_version + 1,
            topic=CHARGE_RECORDED_TOPIC, state=json.dumps(state).encode()))
    fresh_totals = ledger.repository.get(account_uuid("acme"))
    assert fresh_totals.totals == Totals.of_unpriced(2, 2000, 1000, 3000)
    Projector(ledger).run()
    assert [(r["charges"], r["unpriced_charges"], r["cost_micros"]) for r in records(ledger)] == [(2, 2, 0)]
