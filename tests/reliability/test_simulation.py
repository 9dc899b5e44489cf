"""A deterministic simulation of the whole ledger against a plain model.

A Hypothesis state machine drives the real ledger, projector, compaction,
rebuild and audit on a real store, with faults injected at random points of
their transactions (the projector's ``before_commit``, compaction's
``on_step``, and the Nth SQL statement of any operation), and process
restarts. After every step:

* no double counting: every account's running totals equal the model's;
* conservation and exactly-once projection: the live daily billing records
  equal the model folded up to the projector's position;
* the audit is clean (replay equality, conservation, rollups);
* replay equality: a rebuild equals live (and a swapped-in rebuild equals the model).

Each run prints its seed (``REL_SIM_SEED=... pytest ...`` replays it), and a
failure prints the steps and a ``@reproduce_failure`` blob.
"""

from __future__ import annotations

import itertools
import os
import random
import shutil
import tempfile
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, Phase, note, seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from conftest import PG_URL, reset_postgres
from ledger import AlreadyReversed, ChargeConflict, InvalidCharge, Ledger, Settings, Totals
from ledger.compaction import compact
from ledger.errors import UnknownCharge
from projections import Projector, audit, rebuild
from rel_model import Crash, Model, Observer, statement_fault, unpriced_sums

UTC = timezone.utc
#: Closed days around a DST change (New York springs forward on 2026-03-08).
DAYS = [date(2026, 3, 7) + timedelta(days=i) for i in range(4)]
ZONES = ["UTC", "America/New_York", "Asia/Kolkata", "Pacific/Chatham"]
NO_GRACE = timedelta(0)
STEPS = ["rolled_up", "saved", "snapshotted", "pruned", "committed"]

SEED = int(os.environ.get("REL_SIM_SEED") or random.SystemRandom().randrange(2**32))
SQLITE_EXAMPLES = int(os.environ.get("REL_SIM_EXAMPLES", "500"))
POSTGRES_EXAMPLES = int(os.environ.get("REL_SIM_PG_EXAMPLES", "30"))
STEP_COUNT = int(os.environ.get("REL_SIM_STEPS", "10"))

facts = st.fixed_dictionaries(
    {
        "account_id": st.sampled_from(["acme", "globex", "initech"]),
        "user_id": st.sampled_from(["u0", "u1"]),
        "charge_type": st.sampled_from(["completion", "tool"]),
        "provider": st.sampled_from([None, "openai"]),
        "model": st.sampled_from([None, "m1"]),
        "prompt_tokens": st.integers(0, 50),
        "completion_tokens": st.integers(0, 50),
        # a day of DAYS, or len(DAYS): today (never due for compaction)
        "day": st.integers(0, len(DAYS)),
        "minute": st.integers(0, 24 * 60 - 1),
    }
)

#: A bad field, the field its error must name, and how to apply it.
INVALID: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
    ("prompt_tokens", lambda f: f.update(prompt_tokens=-1)),
    ("completion_tokens", lambda f: f.update(completion_tokens="12x")),
    ("total_tokens", lambda f: f.update(total_tokens=f["prompt_tokens"] + f["completion_tokens"] + 1)),
    ("charge_type", lambda f: f.update(charge_type="refund")),
    ("occurred_at", lambda f: f.update(occurred_at=f["occurred_at"][:19])),  # naive
    ("occurred_at", lambda f: f.update(occurred_at="yesterday")),
    ("account_id", lambda f: f.pop("account_id")),
    ("user_id", lambda f: f.update(user_id="bad\x00user")),
    ("colour", lambda f: f.update(colour="red")),
]
#: A field changed on a resubmitted id, and the field the conflict must name.
CONFLICTS: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
    ("prompt_tokens", lambda f: f.update(prompt_tokens=f["prompt_tokens"] + 1)),
    ("user_id", lambda f: f.update(user_id=f["user_id"] + "-other")),
    ("occurred_at", lambda f: f.update(
        occurred_at=(datetime.fromisoformat(f["occurred_at"]) + timedelta(hours=1)).isoformat())),
]
batch_items = st.lists(
    st.one_of(
        st.tuples(st.just("new"), facts),
        st.tuples(st.just("duplicate"), st.integers(0, 10**6)),
        st.tuples(st.just("conflict"), st.integers(0, 10**6), st.integers(0, len(CONFLICTS) - 1)),
        st.tuples(st.just("invalid"), facts, st.integers(0, len(INVALID) - 1)),
        st.tuples(st.just("repeat"), st.integers(0, 10**6)),  # an id earlier in the same batch
        st.tuples(st.just("repeat_conflict"), st.integers(0, 10**6), st.integers(0, len(CONFLICTS) - 1)),
    ),
    min_size=1,
    max_size=6,
)


class LedgerSimulation(RuleBasedStateMachine):
    """The ledger, its read side and compaction, step by step, against :class:`Model`."""

    #: Returns a database URL holding an empty ledger (set per store below).
    fresh_store: Callable[[], str]
    release_store: Callable[[str], None] = staticmethod(lambda url: None)

    def __init__(self) -> None:
        super().__init__()
        self.ledger: Ledger | None = None
        self.ids = itertools.count()
        self.dirty = True
        self._position_reader: Projector | None = None

    # -- set-up and teardown ---------------------------------------------------

    @initialize(zone=st.sampled_from(ZONES), snapshots=st.sampled_from([10, 1_000]),
                cache=st.sampled_from([0, 10_000]))
    def open_store(self, zone: str, snapshots: int, cache: int) -> None:
        """A fresh store; snapshots every 10 versions or rarely, with or without cached accounts."""
        self.url = type(self).fresh_store()
        self.zone = zone
        self.options = {"snapshot_interval": snapshots, "aggregate_cache_size": cache}
        self.model = Model(ZoneInfo(zone))
        self.ledger = self._open()
        self.other = self._open()  # a second process on the same store, with its own caches
        self.observer = Observer(self.ledger)

    def _open(self) -> Ledger:
        return Ledger(Settings(database_url=self.url, billing_tz=self.zone, **self.options))

    def teardown(self) -> None:
        if self.ledger is not None:
            self.ledger.close()
            self.other.close()
            type(self).release_store(self.url)

    # -- helpers -------------------------------------------------------------

    def fields_of(self, f: dict[str, Any]) -> dict[str, Any]:
        """Charge fields (with a new id) from generated facts."""
        if f["day"] < len(DAYS):
            moment = datetime.combine(DAYS[f["day"]], datetime.min.time(), UTC)
            moment += timedelta(minutes=f["minute"])
        else:
            moment = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=f["minute"] % 60)
        fields = {k: v for k, v in f.items() if k not in ("day", "minute")}
        fields.update(charge_id=f"c-{next(self.ids)}", occurred_at=moment.isoformat())
        return fields

    def pick(self, index: int, *, reversed_: bool | None = None) -> dict[str, Any] | None:
        ids = [c for c in self.model.charges
               if reversed_ is None or (c in self.model.reversals) == reversed_]
        return dict(self.model.charges[ids[index % len(ids)]].fields) if ids else None

    def take_new_events(self, expected: dict[str, str]) -> dict[str, tuple[str, int]]:
        """The events stored since the last look are exactly ``expected`` (charge id -> kind);
        returns charge id -> (kind, position)."""
        found = {}
        for position, topic, state in self.observer.new_events():
            kind = "reversal" if topic.endswith("ChargeReversed") else "charge"
            assert state["charge_id"] not in found, f"{state['charge_id']} stored twice"
            found[state["charge_id"]] = (kind, position)
        assert {k: v[0] for k, v in found.items()} == expected
        return found

    def expect_nothing_stored(self) -> None:
        assert self.observer.new_events() == [], "a refused write left events behind"

    def projector(self, batch_size: int | None = None) -> Projector:
        if batch_size is None:  # the live position only: one prepared projector per ledger
            if self._position_reader is None or self._position_reader.ledger is not self.ledger:
                self._position_reader = Projector(self.ledger)
            return self._position_reader
        return Projector(self.ledger, batch_size=batch_size)

    # -- recording -------------------------------------------------------------

    @rule(f=facts)
    def record_new(self, f: dict[str, Any]) -> None:
        fields = self.fields_of(f)
        receipt = self.ledger.record_charge(**fields)
        assert not receipt.duplicate and receipt.charge_id == fields["charge_id"]
        found = self.take_new_events({fields["charge_id"]: "charge"})
        self.model.accept(fields, found[fields["charge_id"]][1])
        self.dirty = True

    @rule(f=facts)
    def record_late(self, f: dict[str, Any]) -> None:
        """A charge for the oldest day, often one compaction already rolled up."""
        self.record_new({**f, "day": 0})

    @precondition(lambda self: self.model.charges)
    @rule(index=st.integers(0, 10**6))
    def record_duplicate(self, index: int) -> None:
        fields = self.pick(index)
        receipt = self.ledger.record_charge(**fields)
        assert receipt.duplicate and receipt.charge_id == fields["charge_id"]
        self.expect_nothing_stored()

    @precondition(lambda self: self.model.charges)
    @rule(index=st.integers(0, 10**6), which=st.integers(0, len(CONFLICTS) - 1))
    def record_conflicting(self, index: int, which: int) -> None:
        fields = self.pick(index)
        name, change = CONFLICTS[which]
        change(fields)
        with pytest.raises(ChargeConflict) as caught:
            self.ledger.record_charge(**fields)
        assert name in caught.value.differences, caught.value
        self.expect_nothing_stored()

    @rule(f=facts, which=st.integers(0, len(INVALID) - 1))
    def record_invalid(self, f: dict[str, Any], which: int) -> None:
        fields = self.fields_of(f)
        name, spoil = INVALID[which]
        spoil(fields)
        with pytest.raises(InvalidCharge) as caught:
            self.ledger.record_charge(**fields)
        assert name in caught.value.errors, caught.value
        self.expect_nothing_stored()

    @rule(items=batch_items)
    def record_batch(self, items: list[tuple]) -> None:
        """A batch mixing new, duplicate, conflicting, invalid and repeated items."""
        batch: list[dict[str, Any]] = []
        expect: list[tuple[str, str | None]] = []  # (outcome, field named)
        new_ids: dict[str, dict[str, Any]] = {}
        for item in items:
            kind = item[0]
            if kind == "new":
                fields = self.fields_of(item[1])
                new_ids[fields["charge_id"]] = fields
                batch.append(fields)
                expect.append(("new", None))
            elif kind in ("duplicate", "conflict") and self.model.charges:
                fields = self.pick(item[1])
                if kind == "conflict":
                    name, change = CONFLICTS[item[2]]
                    change(fields)
                    expect.append(("conflict", name))
                else:
                    expect.append(("duplicate", None))
                batch.append(fields)
            elif kind == "invalid":
                fields = self.fields_of(item[1])
                name, spoil = INVALID[item[2]]
                spoil(fields)
                batch.append(fields)
                expect.append(("invalid", name))
            elif kind == "repeat" and new_ids:
                batch.append(dict(list(new_ids.values())[item[1] % len(new_ids)]))
                expect.append(("duplicate", None))
            elif kind == "repeat_conflict" and new_ids:
                fields = dict(list(new_ids.values())[item[1] % len(new_ids)])
                name, change = CONFLICTS[item[2]]
                change(fields)
                batch.append(fields)
                expect.append(("conflict", name))
        outcomes = self.ledger.record_charges(batch)
        assert [o.index for o in outcomes] == list(range(len(batch)))
        for outcome, (want, name) in zip(outcomes, expect):
            if want == "new":
                assert outcome.ok and not outcome.receipt.duplicate, outcome
            elif want == "duplicate":
                assert outcome.ok and outcome.receipt.duplicate, outcome
            elif want == "conflict":
                assert isinstance(outcome.error, ChargeConflict) and name in outcome.error.differences, outcome
            else:
                assert isinstance(outcome.error, InvalidCharge) and name in outcome.error.errors, outcome
        found = self.take_new_events({charge_id: "charge" for charge_id in new_ids})
        for charge_id, fields in new_ids.items():
            self.model.accept(fields, found[charge_id][1])
        self.dirty = True

    # -- corrections -------------------------------------------------------------

    @precondition(lambda self: len(self.model.reversals) < len(self.model.charges))
    @rule(index=st.integers(0, 10**6))
    def reverse(self, index: int) -> None:
        charge_id = self.pick(index, reversed_=False)["charge_id"]
        receipt = self.ledger.reverse_charge(charge_id, "simulated correction")
        assert receipt.charge_id == charge_id
        found = self.take_new_events({charge_id: "reversal"})
        self.model.reverse(charge_id, found[charge_id][1])
        self.dirty = True

    @precondition(lambda self: self.model.reversals)
    @rule(index=st.integers(0, 10**6))
    def reverse_twice(self, index: int) -> None:
        charge_id = self.pick(index, reversed_=True)["charge_id"]
        with pytest.raises(AlreadyReversed):
            self.ledger.reverse_charge(charge_id)
        self.expect_nothing_stored()

    @rule(charge_id=st.sampled_from(["nope", "c-999999", "", "'; DROP TABLE ledger_events; --"]))
    def reverse_unknown(self, charge_id: str) -> None:
        with pytest.raises(UnknownCharge):
            self.ledger.reverse_charge(charge_id)
        self.expect_nothing_stored()

    # -- the read side, compaction, faults ---------------------------------------

    @rule(batch_size=st.integers(1, 6), max_events=st.none() | st.integers(1, 12))
    def project(self, batch_size: int, max_events: int | None) -> None:
        projector = self.projector(batch_size)
        before = projector.position()
        consumed = projector.run(max_events)
        after = projector.position()
        assert after >= before and (max_events is None or consumed <= max_events)
        if max_events is None:
            assert after == self.observer.head()
        self.dirty = self.dirty or consumed > 0

    @rule(
        before=st.integers(0, len(DAYS)),
        lag=st.integers(0, 3),
        blocked=st.booleans(),
        dry_run=st.booleans(),
    )
    def compact(self, before: int, lag: int, blocked: bool, dry_run: bool) -> None:
        self._compact(before, lag, blocked, dry_run)

    def _compact(self, before: int, lag: int, blocked: bool, dry_run: bool, **hooks: Any) -> Any:
        position = max(0, self.projector().position() - lag)
        grace = timedelta(days=3650) if blocked else NO_GRACE
        rows = self.observer.head()
        result = compact(self.ledger, before=DAYS[0] + timedelta(days=before),
                         projected_position=position, grace=grace, dry_run=dry_run, **hooks)
        self.expect_nothing_stored()  # rollups only
        if dry_run or blocked:
            assert self.observer.head() == rows and result.rollups_written == 0
        if blocked:
            assert result.days == 0
        self.dirty = True
        return result

    @rule(swap=st.booleans())
    def rebuild(self, swap: bool) -> None:
        result = rebuild(self.ledger, swap=swap)
        if swap:
            assert result.position == self.projector().position() == self.observer.head()
            assert self.observer.live() == self.model.records(result.position)
        else:  # compared at the live position (past any rollup it had not applied yet)
            assert result.clean, result.to_dict()
        self.dirty = True

    @rule()
    def run_audit(self) -> None:
        result = audit(self.ledger)
        assert result.clean, result.to_dict()

    @rule(batch_size=st.integers(1, 4), nth=st.integers(0, 3))
    def crash_projector(self, batch_size: int, nth: int) -> None:
        """The projector dies just before committing its ``nth`` batch."""
        calls = itertools.count()

        def die(position: int) -> None:
            if next(calls) == nth:
                raise Crash(f"before committing position {position}")

        projector = Projector(self.ledger, batch_size=batch_size, before_commit=die)
        try:
            projector.run()
        except Crash:
            pass
        self.dirty = True

    @rule(before=st.integers(0, len(DAYS)), step=st.sampled_from(STEPS), nth=st.integers(0, 2))
    def crash_compaction(self, before: int, step: str, nth: int) -> None:
        """Compaction dies after ``step`` of its ``nth`` account (inside the transaction but for 'committed')."""
        calls = itertools.count()

        def die(at: str, aggregate_id: Any) -> None:
            if at == step and next(calls) == nth:
                raise Crash(f"after {at} of {aggregate_id}")

        try:
            self._compact(before, 0, False, False, on_step=die)
        except Crash:
            self.expect_nothing_stored()
        self.dirty = True

    @rule(
        operation=st.sampled_from(["project", "compact", "rebuild", "swap", "record", "reverse", "audit"]),
        countdown=st.integers(1, 40),
        f=facts,
    )
    def crash_statement(self, operation: str, countdown: int, f: dict[str, Any]) -> None:
        """Any operation dies at its ``countdown``-th SQL statement; then the store must be whole."""
        engine = self.ledger.recorder.datastore.engine
        fields = self.fields_of(f)
        reversible = self.pick(countdown, reversed_=False)
        try:
            with statement_fault(engine, countdown) as hit:
                if operation == "project":
                    self.projector(2).run()
                elif operation == "compact":
                    compact(self.ledger, before=DAYS[-1], projected_position=self.projector().position(),
                            grace=NO_GRACE)
                elif operation in ("rebuild", "swap"):
                    rebuild(self.ledger, swap=operation == "swap")
                elif operation == "record":
                    self.ledger.record_charge(**fields)
                elif operation == "reverse" and reversible is not None:
                    self.ledger.reverse_charge(reversible["charge_id"])
                elif operation == "audit":
                    audit(self.ledger)
        except Crash:
            note(f"crashed {operation} at {hit}")
        # A write either committed whole or left nothing: index row iff event.
        stored = {state["charge_id"]: (topic, position) for position, topic, state in self.observer.new_events()}
        if operation == "record":
            indexed = self.ledger.store.find_charge(fields["account_id"], fields["charge_id"]) is not None
            assert indexed == (fields["charge_id"] in stored)
            if indexed:
                self.model.accept(fields, stored[fields["charge_id"]][1])
        elif operation == "reverse" and reversible is not None:
            row = self.ledger.store.find_charge(reversible["account_id"], reversible["charge_id"])
            assert (row.reversed_at is not None) == (reversible["charge_id"] in stored)
            if reversible["charge_id"] in stored:
                self.model.reverse(reversible["charge_id"], stored[reversible["charge_id"]][1])
        else:
            assert stored == {}
        self.dirty = True

    @rule()
    def restart(self) -> None:
        """A new process: no cached aggregates, new connections."""
        self.ledger.close()
        self.ledger = self._open()
        self.observer.ledger = self.ledger

    @rule()
    def switch_process(self) -> None:
        """Carry on in the other process: its cached accounts may predate what this one did."""
        self.ledger, self.other = self.other, self.ledger
        self.observer.ledger = self.ledger

    # -- invariants --------------------------------------------------------------

    @invariant()
    def account_totals_match_the_model(self) -> None:
        if self.ledger is None:
            return
        for account_id, figures in self.model.account_totals().items():
            assert self.ledger.account_totals(account_id) == Totals.of_unpriced(*figures), account_id

    @invariant()
    def live_records_are_the_model_up_to_the_projector(self) -> None:
        if self.ledger is None:
            return
        position = self.projector().position()
        assert self.observer.live() == self.model.records(position)

    @invariant()
    def audit_is_clean(self) -> None:
        if self.ledger is None or not self.dirty:
            return
        result = audit(self.ledger)
        assert result.clean, result.to_dict()
        position = self.projector().position()
        expected = self.model.records(position)
        sums = {name: sum(f[i] for f in expected.values()) for i, name in enumerate(
            ("charges", "prompt_tokens", "completion_tokens", "total_tokens"))}
        assert result.conservation.records == unpriced_sums(sums)
        self.dirty = False


# -- stores ----------------------------------------------------------------------


def _scratch_dir() -> Path:
    """Per-example SQLite files live in memory when the machine has /dev/shm (no fsync cost)."""
    shm = Path("/dev/shm")
    return Path(tempfile.mkdtemp(prefix="ledger-sim-", dir=shm if shm.is_dir() else None))


def sqlite_simulation(directory: Path) -> type[LedgerSimulation]:
    """The machine on SQLite: each example copies a template file with every table made."""
    template = directory / "template.db"
    ledger = Ledger(Settings(database_url=f"sqlite:///{template}"))
    Projector(ledger).prepare()
    ledger.close()
    counter = itertools.count()

    def fresh() -> str:
        path = directory / f"sim-{next(counter)}.db"
        shutil.copyfile(template, path)
        return f"sqlite:///{path}"

    def release(url: str) -> None:
        path = Path(url.split(":///", 1)[1])
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)

    return type("SqliteSimulation", (LedgerSimulation,), {
        "fresh_store": staticmethod(fresh), "release_store": staticmethod(release)})


def postgres_simulation() -> type[LedgerSimulation]:
    def fresh() -> str:
        reset_postgres(PG_URL)
        return PG_URL

    return type("PostgresSimulation", (LedgerSimulation,), {"fresh_store": staticmethod(fresh)})


def simulation_settings(examples: int) -> settings:
    phases = None if os.environ.get("REL_SIM_SHRINK", "1") == "1" else [
        Phase.explicit, Phase.reuse, Phase.generate]
    return settings(
        phases=phases or list(Phase),
        max_examples=examples,
        stateful_step_count=STEP_COUNT,
        deadline=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                               HealthCheck.data_too_large],
    )


@pytest.mark.slow
def test_simulation_on_sqlite() -> None:
    print(f"simulation seed: REL_SIM_SEED={SEED} ({SQLITE_EXAMPLES} examples, {STEP_COUNT} steps)")
    directory = _scratch_dir()
    try:
        machine = seed(SEED)(sqlite_simulation(directory))
        run_state_machine_as_test(machine, settings=simulation_settings(SQLITE_EXAMPLES))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.postgres
def test_simulation_on_postgres() -> None:
    print(f"simulation seed: REL_SIM_SEED={SEED} ({POSTGRES_EXAMPLES} examples, {STEP_COUNT} steps)")
    machine = seed(SEED)(postgres_simulation())
    run_state_machine_as_test(machine, settings=simulation_settings(POSTGRES_EXAMPLES))
