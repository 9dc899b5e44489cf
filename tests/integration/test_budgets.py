"""Budgets, reservations, credits and alerts on each real store: the semantics the issue names, one by one."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta

import pytest
from conftest import wait_until

from ledger.budget_rules import current_period, utc_now
from ledger.budgets import budget_uuid
from ledger.errors import (
    BudgetExceeded,
    ChargeConflict,
    InvalidBudget,
    InvalidReservation,
    ReservationConflict,
    UnknownBudget,
    UnknownReservation,
)
from projections import Projector
from projections.reports import records

NOW = utc_now()
#: A price of 1 micro per token (prompt and completion), so cost = tokens.
PRICE = {"provider": "openai", "model": "gpt", "prompt_micros_per_million": 1_000_000,
         "completion_micros_per_million": 1_000_000, "effective_from": datetime(2020, 1, 1, tzinfo=UTC)}


def call(tokens: int, **extra):
    """A charge of ``tokens`` tokens (cost ``tokens`` micros with PRICE)."""
    fields = {"user_id": "ann", "charge_type": "completion", "provider": "openai", "model": "gpt",
              "prompt_tokens": tokens // 2, "completion_tokens": tokens - tokens // 2}
    fields.update(extra)
    return fields


@pytest.fixture
def priced(ledger):
    ledger.set_price(**PRICE)
    return ledger


def test_setting_changing_and_removing_a_budget_are_events(priced):
    first = priced.set_budget("b", account_id="acme", limit_micros=1000)
    assert (first.created, first.changed, first.status.version) == (True, True, 1)
    again = priced.set_budget("b", account_id="acme", limit_micros=1000)
    assert (again.created, again.changed) == (False, False)
    changed = priced.set_budget("b", account_id="acme", limit_micros=2000, thresholds=[90])
    assert (changed.created, changed.changed, changed.status.limit_micros) == (False, True, 2000)
    assert changed.status.thresholds == (90,)
    priced.remove_budget("b")
    with pytest.raises(UnknownBudget):
        priced.budget_status("b")
    topics = [e.topic for e in priced.recorder.select_events(budget_uuid("b"))]
    assert [t.rsplit(".", 1)[-1] for t in topics] == ["Set", "Changed", "Removed"]


def test_a_budget_belongs_to_one_account(priced):
    priced.set_budget("b", account_id="acme", limit_micros=1000)
    with pytest.raises(InvalidBudget) as caught:
        priced.set_budget("b", account_id="other", limit_micros=1000)
    assert "account_id" in caught.value.errors


def test_spent_counts_the_scope_and_period_net_of_reversals(priced):
    priced.set_budget("month", account_id="acme", limit_micros=10**6)
    priced.set_budget("ann", account_id="acme", user_id="ann", limit_tokens=10**6, period="day")
    priced.set_budget("all", account_id="acme", limit_micros=10**6, period="total")
    last_month = current_period("month", priced.settings.zone, NOW).start_at - timedelta(hours=1)
    priced.record_charge(account_id="acme", charge_id="c1", **call(100))
    priced.record_charge(account_id="acme", charge_id="c2", **call(40, user_id="bob"))
    priced.record_charge(account_id="acme", charge_id="old", occurred_at=last_month, **call(7))
    priced.record_charge(account_id="acme", charge_id="gone", **call(1000))
    priced.record_charge(account_id="beta", charge_id="c1", **call(5000))
    priced.reverse_charge("gone", account_id="acme")
    assert priced.budget_status("month").spent_micros == 140
    assert priced.budget_status("ann").spent_tokens == 100
    assert priced.budget_status("all").spent_micros == 147


def test_folding_changes_no_figure_and_a_folded_charge_can_still_be_reversed(priced):
    priced.set_budget("b", account_id="acme", limit_micros=10**6)
    for i in range(5):
        priced.record_charge(account_id="acme", charge_id=f"c{i}", **call(10 * (i + 1)))
    before = priced.budget_status("b")
    assert priced.fold_spend() == 5
    assert priced.budget_status("b") == before
    priced.reverse_charge("c4", account_id="acme")
    assert priced.budget_status("b").spent_micros == before.spent_micros - 50
    priced.record_charge(account_id="acme", charge_id="late", **call(3))
    assert priced.budget_status("b").spent_micros == before.spent_micros - 50 + 3


def test_a_hard_budget_holds_up_to_its_limit_and_not_one_micro_more(priced):
    priced.set_budget("b", account_id="acme", limit_micros=1000)
    priced.record_charge(account_id="acme", **call(300))
    first = priced.reserve("acme", estimate_micros=400)
    with pytest.raises(BudgetExceeded) as caught:
        priced.reserve("acme", estimate_micros=301)
    assert caught.value.budget_id == "b"
    assert caught.value.figures == {"limit_micros": 1000, "spent_micros": 300, "held_micros": 400,
                                    "remaining_micros": 300}
    exact = priced.reserve("acme", estimate_micros=300)  # exactly the remaining: no false refusal
    assert priced.budget_status("b").remaining_micros == 0
    priced.release(first.reservation_id)
    priced.release(exact.reservation_id)
    assert priced.budget_status("b").figures() == {"limit_micros": 1000, "spent_micros": 300, "held_micros": 0,
                                                   "remaining_micros": 700}


def test_soft_budgets_never_refuse_and_other_users_budgets_do_not_apply(priced):
    priced.set_budget("soft", account_id="acme", limit_micros=10, mode="soft")
    priced.set_budget("bob", account_id="acme", user_id="bob", limit_micros=10)
    held = priced.reserve("acme", user_id="ann", estimate_micros=500)
    assert priced.budget_status("soft").held_micros == 500
    assert priced.budget_status("bob").held_micros == 0
    with pytest.raises(BudgetExceeded):
        priced.reserve("acme", user_id="bob", estimate_micros=11)
    priced.release(held.reservation_id)


def test_unreserved_charges_are_never_refused_and_then_block_reservations(priced):
    priced.set_budget("b", account_id="acme", limit_micros=100)
    receipt = priced.record_charge(account_id="acme", **call(250))
    assert not receipt.duplicate
    status = priced.budget_status("b")
    assert (status.spent_micros, status.remaining_micros) == (250, 0)
    with pytest.raises(BudgetExceeded):
        priced.reserve("acme", estimate_micros=1)


def test_capture_settles_the_hold_and_counts_the_real_cost(priced):
    priced.set_budget("b", account_id="acme", limit_micros=1000)
    r = priced.reserve("acme", user_id="ann", estimate_micros=100)
    captured = priced.capture(r.reservation_id, **call(180))  # above the estimate: counted all the same
    assert (captured.charge_id, captured.account_id, captured.cost_micros) == (r.reservation_id, "acme", 180)
    assert (captured.reservation_id, captured.hold_expired, captured.duplicate) == (r.reservation_id, False, False)
    assert priced.budget_status("b").figures() == {"limit_micros": 1000, "spent_micros": 180, "held_micros": 0,
                                                   "remaining_micros": 820}
    assert priced.reservation_state(r.reservation_id) == "captured"
    again = priced.capture(r.reservation_id, **call(180))
    assert again.duplicate and priced.budget_status("b").spent_micros == 180
    with pytest.raises(ChargeConflict):
        priced.capture(r.reservation_id, **call(181))
    with pytest.raises(ReservationConflict):
        priced.capture(r.reservation_id, charge_id="another", **call(180))
    with pytest.raises(ReservationConflict):
        priced.release(r.reservation_id)


def test_capture_under_the_callers_charge_id(priced):
    priced.set_budget("b", account_id="acme", limit_micros=1000)
    r = priced.reserve("acme", estimate_micros=100)
    receipt = priced.capture(r.reservation_id, charge_id="chatcmpl-1", **call(90))
    assert receipt.charge_id == "chatcmpl-1"
    assert priced.budget_status("b").figures()["held_micros"] == 0
    assert priced.capture(r.reservation_id, charge_id="chatcmpl-1", **call(90)).duplicate


def test_released_and_unknown_reservations_cannot_be_captured(priced):
    r = priced.reserve("acme", estimate_micros=10)
    priced.release(r.reservation_id)
    priced.release(r.reservation_id)  # twice: harmless
    with pytest.raises(ReservationConflict):
        priced.capture(r.reservation_id, **call(5))
    with pytest.raises(UnknownReservation):
        priced.capture("nope", **call(5))
    with pytest.raises(UnknownReservation):
        priced.release("nope")
    assert priced.store.find_charge("acme", r.reservation_id) is None


def test_a_capture_may_not_move_the_charge_to_another_account_or_user(priced):
    r = priced.reserve("acme", user_id="ann", estimate_micros=10)
    with pytest.raises(InvalidReservation) as caught:
        priced.capture(r.reservation_id, **call(5, account_id="beta"))
    assert "account_id" in caught.value.errors
    with pytest.raises(InvalidReservation):
        priced.capture(r.reservation_id, **call(5, user_id="bob"))


def test_holds_expire_by_themselves_and_a_late_capture_still_records(priced):
    priced.set_budget("b", account_id="acme", limit_micros=100)
    r = priced.reserve("acme", estimate_micros=100, ttl_seconds=3)
    with pytest.raises(BudgetExceeded):
        priced.reserve("acme", estimate_micros=1)
    time.sleep(max(0.0, (r.expires_at - utc_now()).total_seconds()) + 0.05)
    assert priced.budget_status("b").held_micros == 0
    assert priced.reservation_state(r.reservation_id) == "expired"
    late = priced.capture(r.reservation_id, **call(60))
    assert late.hold_expired and priced.budget_status("b").spent_micros == 60


def test_reservation_ids_make_reserve_idempotent(priced):
    priced.set_budget("b", account_id="acme", limit_micros=100)
    first = priced.reserve("acme", estimate_micros=60, reservation_id="gw-1")
    again = priced.reserve("acme", estimate_micros=60, reservation_id="gw-1")
    assert (again.duplicate, again.expires_at) == (True, first.expires_at)
    assert priced.budget_status("b").held_micros == 60
    with pytest.raises(ReservationConflict):
        priced.reserve("acme", estimate_micros=61, reservation_id="gw-1")


def test_token_budgets_need_a_token_estimate(priced):
    priced.set_budget("t", account_id="acme", limit_tokens=100)
    with pytest.raises(InvalidReservation) as caught:
        priced.reserve("acme", estimate_micros=5)
    assert "estimate_tokens" in caught.value.errors


def test_the_context_manager_releases_unless_captured(priced):
    priced.set_budget("b", account_id="acme", limit_micros=100)
    with pytest.raises(RuntimeError), priced.reservation("acme", estimate_micros=100):
        raise RuntimeError("the model call failed")
    with priced.reservation("acme", estimate_micros=100):
        pass  # no capture: released
    assert priced.budget_status("b").held_micros == 0
    with priced.reservation("acme", user_id="ann", estimate_micros=100) as r:
        receipt = r.capture(**call(70))
    assert receipt.charge_id == r.reservation_id
    assert priced.budget_status("b").figures()["spent_micros"] == 70


def test_spent_equals_the_daily_billing_records_of_its_scope_and_period(priced):
    priced.set_budget("b", account_id="acme", limit_micros=10**6)
    for i in range(6):
        r = priced.reserve("acme", user_id="ann", estimate_micros=50)
        if i % 3 == 0:
            priced.release(r.reservation_id)
        else:
            priced.capture(r.reservation_id, **call(10 + i))
        priced.record_charge(account_id="acme", **call(5 + i, user_id="bob"))
    priced.fold_spend()
    priced.record_charge(account_id="acme", charge_id="rev", **call(99))
    priced.reverse_charge("rev", account_id="acme")
    Projector(priced).run()
    period = current_period("month", priced.settings.zone, utc_now())
    billed = records(priced, account_id="acme", start=period.start, end=period.end - timedelta(days=1),
                     group_by=["account_id"])
    assert priced.budget_status("b").spent_micros == billed[0]["cost_micros"]


def test_credits_cover_spend_earliest_expiry_first(priced):
    soon = utc_now() + timedelta(days=3)
    priced.grant_credits("acme", 1000, grant_id="forever")
    priced.grant_credits("acme", 300, expires_at=soon, grant_id="soon")
    assert priced.grant_credits("acme", 300, expires_at=soon, grant_id="soon").duplicate
    priced.record_charge(account_id="acme", **call(400))
    balance = priced.balance("acme")
    left = {g.grant_id: g.remaining_micros for g in balance.grants}
    assert left == {"soon": 0, "forever": 900}
    assert (balance.balance_micros, balance.granted_micros, balance.used_micros) == (900, 1300, 400)


def test_a_credits_budget_stops_the_account_when_credit_runs_out(priced):
    priced.set_budget("prepaid", account_id="acme", limit="credits")
    with pytest.raises(BudgetExceeded):
        priced.reserve("acme", estimate_micros=1)
    priced.grant_credits("acme", 500)
    r = priced.reserve("acme", user_id="ann", estimate_micros=400)
    with pytest.raises(BudgetExceeded) as caught:
        priced.reserve("acme", estimate_micros=101)
    assert caught.value.figures["remaining_micros"] == 100
    priced.capture(r.reservation_id, **call(450))
    status = priced.budget_status("prepaid")
    assert (status.limit_micros, status.spent_micros, status.remaining_micros, status.period) == (
        500, 450, 50, "total")
    assert priced.balance("acme").balance_micros == 50


def test_each_threshold_fires_once_per_period(priced):
    priced.set_budget("b", account_id="acme", limit_micros=1000, thresholds=[50, 80, 100])
    assert priced.check_budget_alerts() == []
    priced.record_charge(account_id="acme", **call(600))
    fired = priced.check_budget_alerts()
    assert [a.threshold for a in fired] == [50]
    assert priced.check_budget_alerts() == []
    r = priced.reserve("acme", user_id="ann", estimate_micros=10, reservation_id="r1")
    priced.capture(r.reservation_id, **call(450))
    with pytest.raises(BudgetExceeded):  # the next reservation checks, and its refusal keeps the alerts it fired
        priced.reserve("acme", estimate_micros=1)
    sent = priced.budget_alerts(account_id="acme")
    assert sorted(a.threshold for a in sent) == [50, 80, 100]
    body = next(a.body for a in sent if a.threshold == 100)
    assert body["type"] == "budget.threshold_crossed"
    assert (body["spent_micros"], body["limit_micros"], body["budget_id"]) == (1050, 1000, "b")
    assert body["period_start"] == current_period("month", priced.settings.zone, utc_now()).start.isoformat()
    assert isinstance(date.fromisoformat(body["period_start"]), date)


def test_the_audit_proves_every_budgets_spent_and_every_balance_from_the_log(priced):
    from ledger.store.schema import spend
    from projections.audit import audit

    priced.set_budget("b", account_id="acme", limit_micros=10**6)
    priced.set_budget("ann", account_id="acme", user_id="ann", limit_tokens=10**6, period="day")
    priced.set_budget("prepaid", account_id="acme", limit="credits")
    priced.grant_credits("acme", 500, expires_at=utc_now() + timedelta(days=1))
    priced.grant_credits("acme", 5000)
    for i in range(4):
        priced.record_charge(account_id="acme", charge_id=f"c{i}", **call(100 + i, user_id=["ann", "bob"][i % 2]))
    priced.fold_spend()
    priced.reverse_charge("c1", account_id="acme")
    priced.record_charge(account_id="acme", charge_id="late", **call(9))
    result = audit(priced, catch_up=True)
    assert result.clean, result.to_dict()
    assert {p.budget_id: (p.spent, p.spent_log) for p in result.budgets} == {
        "b": (100 + 102 + 103 + 9, 100 + 102 + 103 + 9), "ann": (100 + 102 + 9, 100 + 102 + 9),
        "prepaid": (314, 314)}
    assert [(p.account_id, p.balance, p.balance_log) for p in result.balances] == [("acme", 5186, 5186)]
    # a fold that counted a charge twice is caught
    with priced.store.transaction(commit=True) as session:
        session.execute(spend.update().where(spend.c.user_id == "ann").values(cost_micros=spend.c.cost_micros + 1))
    broken = audit(priced)
    assert not broken.clean
    assert {p.budget_id for p in broken.budgets if not p.ok} == {"b"}
    assert not all(p.ok for p in broken.balances)


def test_fields_named_like_parameters_are_refused_as_unknown_fields(priced):
    from ledger.errors import InvalidCharge

    with pytest.raises(InvalidCharge) as caught:
        priced.record_charge(account_id="acme", self=1, **call(5))
    assert "self" in caught.value.errors
    r = priced.reserve("acme", estimate_micros=10)
    with pytest.raises(InvalidCharge) as caught:
        priced.capture(r.reservation_id, reservation_id="other", **call(5))
    assert "reservation_id" in caught.value.errors
    assert priced.reservation_state(r.reservation_id) == "held"


@pytest.mark.postgres
@pytest.mark.parametrize("function", ["ledger_intake_account_charges", "ledger_append_account_charges"])
def test_a_previous_release_calling_the_intake_without_typed_facts_still_counts_in_budgets(postgres_url, function):
    """Its processes call the 12-argument write functions during an upgrade: the facts are read from the payloads."""
    import sqlalchemy as sa

    from ledger import Ledger, Settings

    ledger = Ledger(Settings(database_url=postgres_url))
    try:
        ledger.set_price(**PRICE)
        ledger.set_budget("b", account_id="acme", limit_micros=10**6, period="total")
        batch, _ = ledger.appender.batch_of(
            [ledger.validated({"account_id": "acme", "charge_id": f"old-{i}", **call(10 * (i + 1))}) for i in range(2)],
            ledger.price_table(), utc_now(),
        )
        topics = ledger.store.topics
        with ledger.store.engine.begin() as connection:
            connection.execute(sa.text(
                f"SELECT * FROM {function}(:ids, :accounts, CAST(:origins AS uuid[]), :hashes, "
                ":payloads, :states, :opened, :at, :topic, :opened_topic, CAST(:catalogue AS uuid), :version)"
            ), {"ids": list(batch.charge_ids), "accounts": list(batch.account_ids),
                "origins": [str(o) for o in batch.originators], "hashes": list(batch.hashes),
                "payloads": list(batch.payloads), "states": list(batch.states), "opened": list(batch.opened_states),
                "at": batch.recorded_at, "topic": topics.charge_recorded, "opened_topic": topics.account_opened,
                "catalogue": str(topics.catalogue_id), "version": batch.catalogue_version})
        assert ledger.budget_status("b").spent_micros == 10 + 20
        ledger.sequence()
        assert ledger.account_totals("acme").cost_micros == 30
    finally:
        ledger.close()


@pytest.mark.postgres
def test_a_reservation_nobody_queues_behind_is_durable_in_one_call_and_a_queued_one_flushes_after(postgres_url):
    """Uncontended, the reservation's own commit is synchronous (no second round trip); when it had to wait for a
    budget's lock its commit skips the flush (so its lock is not held through it) and the caller flushes after."""
    import threading

    import sqlalchemy as sa

    from ledger import Ledger, Settings
    from ledger.store.locks import LockKey

    ledger = Ledger(Settings(database_url=postgres_url))
    try:
        ledger.set_budget("cap", account_id="acme", limit_tokens=10_000, period="total")
        sent: list[str] = []
        call_once = ledger.store.call

        def spy(sql, params):
            sent.append(sql)
            return call_once(sql, params)

        ledger.store.call = spy  # the real call, recorded
        first = ledger.reserve("acme", estimate_tokens=100)
        assert [s for s in sent if "ledger_flush" in s] == []
        assert ledger.reservation_state(first.reservation_id) == "held"

        sent.clear()
        engine = sa.create_engine(postgres_url)
        outcome: list[object] = []
        with engine.connect() as other:
            other.execute(sa.text("SELECT pg_advisory_xact_lock(:k, hashtext('cap'))"), {"k": int(LockKey.BUDGET)})
            waiting = threading.Thread(target=lambda: outcome.append(ledger.reserve("acme", estimate_tokens=200)))
            waiting.start()
            wait_until(lambda: other.execute(sa.text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND classid = :k "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ), {"k": int(LockKey.BUDGET)}).scalar(), "the reservation to wait for the budget's lock", timeout=10,
                       poll=0.01)
            assert outcome == []  # still waiting for the budget's lock
            other.rollback()
        waiting.join(timeout=10)
        engine.dispose()
        (second,) = outcome
        assert [s for s in sent if "ledger_flush" in s] == ["SELECT ledger_flush()"]
        assert ledger.budget_status("cap").held_tokens == 300
        assert ledger.reservation_state(second.reservation_id) == "held"
    finally:
        ledger.close()
