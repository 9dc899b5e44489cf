"""The Account aggregate: deterministic ids, running totals, immutable events."""

from __future__ import annotations

from datetime import UTC, datetime

from ledger.domain import Account, Totals, account_uuid

T = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)


def charge(account: Account, charge_id: str, prompt: int, completion: int) -> None:
    account.trigger_event(
        Account.ChargeRecorded,
        charge_id=charge_id, account_id=account.account_id, user_id="u", charge_type="completion",
        provider="openai", model="gpt", prompt_tokens=prompt, completion_tokens=completion,
        total_tokens=prompt + completion, occurred_at=T, recorded_at=T,
        user_profile_id=None, session_key=None, reference=None,
    )


def test_id_is_derived_from_the_account_key():
    assert Account(account_id="acme").id == account_uuid("acme") == account_uuid("acme")
    assert account_uuid("acme") != account_uuid("acme2")


def test_totals_count_charges_net_of_reversals():
    account = Account(account_id="acme")
    charge(account, "c1", 10, 5)
    charge(account, "c2", 1, 1)
    assert account.totals == Totals.of_unpriced(2, 11, 6, 17)
    account.reverse_charge(
        charge_id="c2", reason="test", account_id="acme", user_id="u", charge_type="completion",
        provider="openai", model="gpt", prompt_tokens=1, completion_tokens=1, total_tokens=2,
        occurred_at=T, recorded_at=T,
    )
    assert account.totals == Totals.of_unpriced(1, 10, 5, 15)
    events = account.collect_events()
    assert [type(e).__name__ for e in events] == ["Opened", "ChargeRecorded", "ChargeRecorded", "ChargeReversed"]
    assert [e.originator_version for e in events] == [1, 2, 3, 4]


def test_rollup_changes_no_running_total():
    account = Account(account_id="acme")
    charge(account, "c1", 10, 5)
    account.roll_up_day(
        account_id="acme", billing_date="2026-01-02", time_zone="UTC",
        groups=[dict(user_id="u", charge_type="completion", provider="openai", model="gpt",
                     charges=1, prompt_tokens=10, completion_tokens=5, total_tokens=15)],
        charges=1, events=1, digest="0" * 64, first_position=1, last_position=2, recorded_at=T,
    )
    assert account.totals == Totals.of_unpriced(1, 10, 5, 15)


def test_totals_arithmetic():
    assert Totals.of_unpriced(1, 2, 3, 5) + Totals.of_unpriced(1, 1, 1, 2) == Totals.of_unpriced(2, 3, 4, 7)
    assert -Totals.of_unpriced(1, 2, 3, 5) == Totals.of_unpriced(-1, -2, -3, -5)


def test_appender_writes_events_byte_for_byte_as_the_mapper(tmp_path):
    """The direct encoder of the append path and the library's mapper agree."""
    from ledger import Ledger, Settings
    from ledger.appender import Appender

    ledger = Ledger(Settings(database_url=f"sqlite:///{tmp_path / 'l.db'}"))
    try:
        appender: Appender = ledger.appender
        charge = ledger.validate(dict(account_id="acme ü", user_id="ユーザー", charge_type="tool",
                                      provider="p", prompt_tokens=3, reference='x"\\\n'.strip()))
        direct = appender.charge_state(charge, account_uuid("acme ü"), T)
        appender._direct = False
        assert appender.charge_state(charge, account_uuid("acme ü"), T) == direct
    finally:
        ledger.close()
