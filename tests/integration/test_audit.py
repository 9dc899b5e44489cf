"""Audit and rebuild on each real store: they find what is wrong and pass what is right."""

from __future__ import annotations

import json
import threading
from datetime import date, datetime, timedelta, timezone


from ledger.compaction import compact
from ledger.domain import CHARGE_RECORDED_TOPIC, CHARGE_REVERSED_TOPIC
from ledger.rollup_digest import digest_item, digest_of
from ledger.store.schema import VALUE_COLUMNS
from ledger.store.schema import daily_billing_records as records_table
from projections import Projector, audit, rebuild
from test_projector import Model, charges, group, head, live, roll_up

UTC = timezone.utc
DAY = date(2026, 3, 1)


def unpriced(values) -> dict[str, int]:
    """A model's token figures as a record's (no prices set: every charge unpriced)."""
    return dict(zip(VALUE_COLUMNS, (*values, 0, values[0])))


def figures(model: Model) -> dict[str, int]:
    return unpriced([sum(v[i] for v in model.records().values()) for i in range(4)])


def projected(ledger, n: int = 40) -> Model:
    model = Model()
    model.record(ledger, charges(n))
    model.reverse(ledger, "c-1")
    model.reverse(ledger, "c-7")
    Projector(ledger, batch_size=9).run()
    return model


def test_a_faithful_projection_audits_clean_with_conservation_figures(ledger):
    model = projected(ledger)
    result = audit(ledger, batch_size=11)
    assert result.clean, result.to_dict()
    assert result.differences == [] and result.difference_count == 0
    assert result.position == result.log_position == head(ledger)
    c = result.conservation
    assert c.balanced and c.records == c.log == figures(model)
    assert (c.charge_events, c.reversal_events, c.rollup_events, c.accounts_checked) == (40, 2, 0, 0)
    assert json.loads(json.dumps(result.to_dict()))["clean"] is True


def test_audit_lists_a_corrupted_live_row(ledger):
    model = projected(ledger)
    target = next(iter(sorted(model.records())))
    account, day, user, charge_type, provider, model_name = target
    with ledger.recorder.transaction(commit=True) as session:
        t = records_table
        updated = session.execute(
            t.update()
            .where(t.c.account_id == account, t.c.billing_date == date.fromisoformat(day), t.c.user_id == user,
                   t.c.charge_type == charge_type, t.c.provider == (provider or ""), t.c.model == (model_name or ""))
            .values(total_tokens=t.c.total_tokens + 1000)
        )
        assert updated.rowcount == 1
    result = audit(ledger)
    assert not result.clean
    assert result.difference_count == 1
    [difference] = result.differences
    assert difference.key == {"account_id": account, "billing_date": date.fromisoformat(day), "user_id": user,
                              "charge_type": charge_type, "provider": provider, "model": model_name}
    expected = unpriced(model.records()[target])
    assert difference.rebuilt == expected
    assert difference.live == {**expected, "total_tokens": expected["total_tokens"] + 1000}
    assert result.conservation.records["total_tokens"] == result.conservation.log["total_tokens"] + 1000
    assert not result.conservation.balanced
    shown = result.to_dict()["differences"][0]
    assert shown["key"]["billing_date"] == day and shown["live"]["total_tokens"] == expected["total_tokens"] + 1000


def test_audit_lists_missing_and_extra_rows(ledger):
    model = projected(ledger)
    gone = sorted(model.records())[-1]
    with ledger.recorder.transaction(commit=True) as session:
        t = records_table
        session.execute(t.delete().where(t.c.account_id == gone[0], t.c.billing_date == date.fromisoformat(gone[1]),
                                         t.c.user_id == gone[2], t.c.charge_type == gone[3]))
        session.execute(t.insert().values(account_id="ghost", billing_date=DAY, user_id="u", charge_type="tool",
                                          provider="", model="", charges=1, prompt_tokens=1, completion_tokens=0,
                                          total_tokens=1, updated_at=datetime.now(UTC)))
    result = audit(ledger)
    by_account = {d.key["account_id"]: d for d in result.differences}
    assert by_account["ghost"].rebuilt is None and by_account["ghost"].live["charges"] == 1
    assert by_account[gone[0]].live is None and by_account[gone[0]].rebuilt is not None
    assert not result.clean


def test_audit_compares_at_the_live_position_while_the_log_moves_on(ledger):
    projected(ledger)
    position = Projector(ledger).position()
    Model().record(ledger, charges(10, start=100))  # recorded, not yet projected
    result = audit(ledger)
    assert result.clean, result.to_dict()
    assert result.position == position < result.log_position == head(ledger)
    caught_up = audit(ledger, catch_up=True)
    assert caught_up.clean and caught_up.position == head(ledger)


def test_rebuild_diff_and_swap_repair_a_corrupted_table(ledger):
    model = projected(ledger)
    with ledger.recorder.transaction(commit=True) as session:
        session.execute(records_table.update().values(charges=records_table.c.charges + 1))
    diff = rebuild(ledger)
    rows = len(model.records()) + 2  # the two reversed charges left rows of zeros, now ones
    assert not diff.clean and not diff.swapped and diff.difference_count == diff.rows == rows
    assert rebuild(ledger, max_differences=3).difference_count == rows
    assert len(rebuild(ledger, max_differences=3).differences) == 3
    swapped = rebuild(ledger, swap=True, batch_size=7)
    assert swapped.swapped and swapped.position == head(ledger)
    assert live(ledger) == model.records()
    assert audit(ledger).clean


def _rollup_of_raw_day(ledger, account: str, day: date) -> None:
    """A rollup exactly as compaction writes it, but with the raw events left in place."""
    items, positions, groups = [], [], {}
    for n in ledger.recorder.select_notifications(start=1, limit=100_000):
        if n.topic not in (CHARGE_RECORDED_TOPIC, CHARGE_REVERSED_TOPIC):
            continue
        state = json.loads(n.state)
        if state["account_id"] != account or state["occurred_at"]["_data_"][:10] != day.isoformat():
            continue
        item = digest_item(n.topic, state)
        items.append(item)
        positions.append(n.id)
        key = (state["user_id"], state["charge_type"], state["provider"], state["model"])
        g = groups.setdefault(key, [0, 0, 0])
        g[0] += item[1]
        g[1] += item[1] * item[2]
        g[2] += item[1] * item[3]
    account_obj = ledger.get_account(account)
    account_obj.roll_up_day(
        account_id=account, billing_date=day.isoformat(), time_zone="UTC",
        groups=[group(k[0], *v, charge_type=k[1], provider=k[2], model=k[3]) for k, v in groups.items()],
        charges=sum(v[0] for v in groups.values()), events=len(items), digest=digest_of(items),
        first_position=min(positions), last_position=max(positions), recorded_at=datetime.now(UTC),
    )
    ledger.save(account_obj)


def test_a_rollup_is_verified_against_the_raw_events_it_covers(ledger):
    model = Model()
    model.record(ledger, charges(12, accounts=2, step=timedelta(minutes=30)))  # all on DAY
    model.reverse(ledger, "c-2")
    _rollup_of_raw_day(ledger, "acct-0", DAY)
    Projector(ledger).run()
    assert live(ledger) == model.records()
    result = audit(ledger)
    assert result.clean, result.to_dict()
    assert (result.rollups_checked, result.rollups_verified) == (1, 1)


def test_a_rollup_that_misstates_its_day_is_caught(ledger):
    model = Model()
    model.record(ledger, charges(6, accounts=1, step=timedelta(minutes=30)))
    roll_up(ledger, "acct-0", DAY, [group("u0", 2, 5, 5)])  # claims less than was charged
    Projector(ledger).run()
    result = audit(ledger)
    assert not result.clean
    assert result.difference_count == 0  # live and rebuilt both applied it ...
    c = result.conservation
    assert c.records == c.log == c.accounts_log != c.accounts  # ... but the account still counts every charge
    assert c.accounts == figures(model) and c.accounts_checked == 1
    assert [issue.problem for issue in result.rollup_issues] == [
        "covers 0 events but 6 are accounted for in the log"
    ]


def test_audit_after_compaction_is_clean(ledger):
    model = Model()
    model.record(ledger, charges(30, accounts=3))
    model.reverse(ledger, "c-4")
    projector = Projector(ledger)
    projector.run()
    compact(ledger, before=date(2026, 3, 5), projected_position=projector.position(), grace=timedelta(0))
    result = audit(ledger, catch_up=True)
    assert result.clean, result.to_dict()
    c = result.conservation
    assert c.rollup_events > 0 and c.accounts_checked == 3
    assert c.accounts == c.accounts_log == c.records == figures(model)


def test_audit_and_rebuild_right_after_compaction_before_the_projector_runs(ledger):
    """Compaction pruned what the live table counts and put its rollups past the live position."""
    model = Model()
    model.record(ledger, charges(30, accounts=3))
    projector = Projector(ledger)
    projector.run()
    compact(ledger, before=date(2026, 3, 5), projected_position=projector.position(), grace=timedelta(0))
    assert projector.position() < head(ledger)
    assert rebuild(ledger).clean
    result = audit(ledger)
    assert result.clean, result.to_dict()
    assert live(ledger) == model.records()


def _record_in_background(ledger, model: Model, count: int) -> threading.Thread:
    def work() -> None:
        for start in range(1000, 1000 + count, 10):
            model.record(ledger, charges(10, start=start, accounts=4))

    thread = threading.Thread(target=work)
    thread.start()
    return thread


def test_rebuild_while_charges_are_recorded_ends_consistent(make_ledger):
    writer, reader = make_ledger(), make_ledger()
    model = Model()
    model.record(writer, charges(200, accounts=4))
    Projector(reader).run()
    thread = _record_in_background(writer, model, 300)
    swaps = 0
    while thread.is_alive():
        result = rebuild(reader, swap=True, batch_size=50)
        swaps += result.swapped
        assert audit(reader, batch_size=50).clean
    thread.join()
    Projector(reader).run()
    assert swaps >= 1
    assert live(reader) == model.records()
    final = audit(reader)
    assert final.clean and final.position == head(reader) and not final.log_changed
