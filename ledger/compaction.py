"""Compaction: roll up closed days, snapshot the account, prune the raw events.

For each account with raw charge events on closed billing days, one
transaction appends a ``DayRolledUp`` event per day (its totals per user,
charge type, provider and model), snapshots the account at its new version,
and deletes the charge and reversal events the rollups stand for (and any
earlier rollup of the same day they supersede). Totals never change: the
rollup events change no running total, the aggregate loads from the snapshot
so the version gap is never replayed, and projections apply a rollup as "set
this day to these totals" (equal to what they already hold in a live run; the
only source of the day's totals in a rebuild).

A day D of account A is rolled up only when all of these hold:

* D < ``before`` and D is closed: its end in the billing time zone is older
  than ``now - grace``;
* every event to prune (raw events of D and a superseded rollup of D) has a
  notification id <= ``projected_position``: the projector has applied it,
  so deleting it cannot hide it from the live read model;
* every event to prune was recorded before ``now - grace``: a writer holding
  an aggregate older than that is long gone, so no stale writer can re-insert
  a pruned version (the unique version index no longer guards a gap).

The rollup is appended after everything it prunes, so the newest row of the
events table is never deleted (SQLite reuses the highest free rowid).

Concurrency: the first attempt at an account reads without locks; a writer
appending meanwhile makes the save's version check fail, and the second
attempt takes the append lock first. Processes that cached an account before
another process pruned part of its stream reload it from its snapshot
(:class:`ledger.repository.CompactedRepository`, the ledger's repository).

The rules live in :mod:`ledger.compaction_rules`, the pass that finds due
days in :mod:`ledger.compaction_plan`, a day's rollup in
:mod:`ledger.rollup_day` (how it carries an earlier rollup of the day forward)
and its digest in :mod:`ledger.rollup_digest`; the
log's SQL in :mod:`ledger.store.event_log`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING
from uuid import UUID

from eventsourcing.domain import OriginatorVersionError
from eventsourcing.persistence import IntegrityError

from ledger.billing_keys import billing_date_function
from ledger.compaction_plan import plan
from ledger.compaction_rules import HOLD_REASONS, CompactionError, Rules, first_reason
from ledger.domain import DAY_ROLLED_UP_TOPIC, Account
from ledger.repository import evict
from ledger.rollup_day import RollupDay
from ledger.rollup_digest import RAW_TOPICS
from ledger.store import event_log
from ledger.store._moved import moved
from ledger.store.watchdog import deadline_of

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from ledger.application import Ledger

__all__ = [
    "COMPACTION_TOPICS",
    "HOLD_REASONS",
    "RAW_TOPICS",
    "CompactionError",
    "CompactionResult",
    "compact",
    "first_reason",
]

#: Names that lived here before, importable from here for one more release.
__getattr__ = moved(__name__, {
    "CompactedRepository": "ledger.repository:CompactedRepository",
    "mutate_all": "ledger.repository:mutate_all",
    "digest_item": "ledger.rollup_digest:digest_item",
    "digest_of": "ledger.rollup_digest:digest_of",
    "DigestItem": "ledger.rollup_digest:DigestItem",
    "decode_state": "ledger.store.event_log:decode_state",
    "state_decoder": "ledger.store.event_log:state_decoder",
    "billing_date": "ledger.billing_keys:billing_date",
    "day_end": "ledger.billing_keys:day_end",
    "moment": "ledger.billing_keys:moment",
    "GroupKey": "ledger.billing_keys:GroupKey",
    "HELD_RAW_BEFORE_ROLLUP": "ledger.compaction_rules:HELD_RAW_BEFORE_ROLLUP",
    "HELD_GRACE_PERIOD": "ledger.compaction_rules:HELD_GRACE_PERIOD",
    "HELD_NOT_PROJECTED": "ledger.compaction_rules:HELD_NOT_PROJECTED",
})

COMPACTION_TOPICS = RAW_TOPICS + (DAY_ROLLED_UP_TOPIC,)

#: Bytes a row costs beyond its topic and state: id, originator id, version,
#: tuple header and two index entries. An estimate, the same on both stores.
ROW_OVERHEAD_BYTES = 96

#: Raw events one account transaction may cover; more days wait for the next one.
MAX_EVENTS_PER_TRANSACTION = 100_000

SCAN_BATCH_SIZE = 5_000

Progress = Callable[[int, int], None]
StepHook = Callable[[str, UUID], None]


@dataclass(frozen=True)
class CompactionResult:
    """What a run did (or, with ``dry_run``, would do).

    ``days``: account-days rolled up; ``events_pruned``: rows deleted (raw
    events and superseded rollups); ``bytes_pruned``: their state and topic
    plus an estimated per-row overhead; ``skipped``: closed account-days held
    back because something to prune is not yet projected or within the grace
    period; ``retries``: account transactions redone after losing a race;
    ``skipped_by_reason``: ``skipped`` split by :data:`HOLD_REASONS` (it sums
    to ``skipped``); ``grace_seconds``: the grace period the run applied.
    """

    accounts: int = 0
    days: int = 0
    events_pruned: int = 0
    bytes_pruned: int = 0
    rollups_written: int = 0
    rollups_superseded: int = 0
    skipped: int = 0
    retries: int = 0
    dry_run: bool = False
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    grace_seconds: float = 0.0


# -- one account, one transaction --------------------------------------------


@dataclass
class _Outcome:
    days: int = 0
    events_pruned: int = 0
    bytes_pruned: int = 0
    rollups_superseded: int = 0
    skipped: int = 0
    retries: int = 0
    reasons: Counter[str] = field(default_factory=Counter)


def _load_account(ledger: Ledger, aggregate_id: UUID) -> Account:
    """The account as writers see it (reloaded from its snapshot past a pruned gap)."""
    try:
        return ledger.repository.get(aggregate_id)
    except OriginatorVersionError:
        evict(ledger.repository, aggregate_id)
        return ledger.repository.get(aggregate_id)


def _read_days(
    session: Session, ledger: Ledger, aggregate_id: UUID, version: int, wanted: frozenset[date], rules: Rules
) -> list[RollupDay]:
    """The wanted days of one account, folded from its stored events in log order."""
    decode = event_log.state_decoder(ledger.mapper)
    date_of = billing_date_function(rules.zone)
    days: dict[date, RollupDay] = {}
    for position, topic, state_bytes in event_log.stream_up_to(
        session, ledger.store, aggregate_id, version, COMPACTION_TOPICS
    ):
        state = decode(state_bytes)
        size = len(state_bytes) + len(topic) + ROW_OVERHEAD_BYTES
        if topic == DAY_ROLLED_UP_TOPIC:
            day = date.fromisoformat(state["billing_date"])
            if day in wanted:
                days.setdefault(day, RollupDay(day)).add_rollup(position, state, size, rules)
        else:
            day = date_of(state["occurred_at"]["_data_"])
            if day in wanted:
                days.setdefault(day, RollupDay(day)).add_raw(position, topic, state, size, rules)
    return [days[day] for day in sorted(days)]


def _delete_events(session: Session, ledger: Ledger, ids: list[int]) -> None:
    deleted, newest = event_log.delete_events(session, ledger.store, ids)
    if deleted != len(ids):
        raise CompactionError(f"expected to delete {len(ids)} events, deleted {deleted}")
    assert newest > max(ids), "compaction must never delete the newest event"


def _snapshot(session: Session, ledger: Ledger, account: Account) -> None:
    """Snapshot the saved account at its new version (unless the save's interval snapshot did).

    The snapshot is taken from the account in hand, the state the rollups were
    appended to, rather than by ``ledger.take_snapshot``, which would replay
    the stream a second time inside the transaction (same result, twice the
    work when the account had no snapshot yet).
    """
    assert ledger.snapshots is not None, "compaction needs snapshotting enabled"
    snapshot_class = getattr(type(account), "Snapshot", type(ledger).snapshot_class)
    event_log.save_snapshot(
        session, ledger.store, ledger.snapshots, account.id, account.version,
        lambda: snapshot_class.take(account),
    )


#: The client-side bound on one account's transaction (see :mod:`ledger.store.watchdog`): a frozen
#: primary cannot hold compaction; the account's transaction rolls back whole and the next run does it.
ACCOUNT_SECONDS = 300.0


def _compact_account(
    ledger: Ledger,
    aggregate_id: UUID,
    wanted: frozenset[date],
    rules: Rules,
    *,
    dry_run: bool,
    on_step: StepHook,
) -> _Outcome:
    """Roll up, snapshot and prune one account's due days in one transaction.

    The first attempt reads without locking, so writers are not held up while
    the account is folded. If a writer appended meanwhile, the save's version
    check fails (IntegrityError) and the second attempt takes the append lock
    up front, so it cannot lose again; on SQLite ``BEGIN IMMEDIATE`` already
    holds the write lock, so there an IntegrityError is a real error.
    """
    lock_first = False
    while True:
        try:
            with deadline_of(ACCOUNT_SECONDS), ledger.store.transaction(commit=not dry_run) as session:
                if lock_first:
                    ledger.store.lock_for_append(session)
                account = _load_account(ledger, aggregate_id)
                days = _read_days(session, ledger, aggregate_id, account.version, wanted, rules)
                ready = [d for d in days if d.ready]
                outcome = _Outcome(
                    days=len(ready),
                    events_pruned=sum(len(d.pruned_ids) for d in ready),
                    bytes_pruned=sum(d.pruned_bytes for d in ready),
                    rollups_superseded=sum(d.previous_id is not None for d in ready),
                    skipped=sum(1 for d in days if d.raw_ids and d.blocked),
                    retries=int(lock_first),
                    reasons=Counter(first_reason(d.held_because) for d in days if d.raw_ids and d.blocked),
                )
                if dry_run or not ready:
                    return outcome
                now = datetime.now(UTC)
                for day in ready:
                    account.roll_up_day(**day.rollup_fields(account.account_id, rules, now))
                on_step("rolled_up", aggregate_id)
                ledger.save(account)
                on_step("saved", aggregate_id)
                _snapshot(session, ledger, account)
                on_step("snapshotted", aggregate_id)
                _delete_events(session, ledger, sorted(i for d in ready for i in d.pruned_ids))
                on_step("pruned", aggregate_id)
            on_step("committed", aggregate_id)
            return outcome
        except IntegrityError:
            if lock_first or ledger.settings.is_sqlite:
                raise
            lock_first = True  # another writer appended to the account since we loaded it


# -- the entry point ---------------------------------------------------------


def compact(
    ledger: Ledger,
    *,
    before: date,
    projected_position: int,
    grace: timedelta | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
    on_step: StepHook | None = None,
) -> CompactionResult:
    """Roll up every due day before ``before``, snapshot, and prune what the rollups cover.

    ``projected_position`` is the projector's position (the caller reads it;
    the ledger never imports projections). ``grace`` defaults to the
    ``compaction_grace_days`` setting. ``progress(done, total)`` is called per
    account transaction. ``on_step(step, account uuid)`` runs after each step
    ("rolled_up", "saved", "snapshotted", "pruned", "committed"), for
    instrumentation and crash tests. Safe to rerun, interrupt or run alongside
    writers and the projector.
    """
    if grace is None:
        grace = timedelta(days=ledger.settings.compaction_grace_days)
    if grace < timedelta(0):
        raise ValueError("grace must not be negative")
    rules = Rules(
        before=before,
        projected_position=projected_position,
        cutoff=datetime.now(UTC) - grace,
        zone=ledger.settings.zone,
        time_zone=ledger.settings.billing_tz,
    )
    with deadline_of(ACCOUNT_SECONDS):
        ledger.sequence()  # acknowledged charges are in the log, so their days count as unprojected
    due = plan(ledger, rules, SCAN_BATCH_SIZE)
    chunks = list(due.chunks(MAX_EVENTS_PER_TRANSACTION))
    hook = on_step or (lambda step, aggregate_id: None)
    total = _Outcome(skipped=due.skipped, reasons=Counter(due.reasons))
    accounts: set[UUID] = set()
    if progress:
        progress(0, len(chunks))
    for done, (aggregate_id, wanted) in enumerate(chunks, start=1):
        outcome = _compact_account(ledger, aggregate_id, wanted, rules, dry_run=dry_run, on_step=hook)
        if outcome.days:
            accounts.add(aggregate_id)
        total.days += outcome.days
        total.events_pruned += outcome.events_pruned
        total.bytes_pruned += outcome.bytes_pruned
        total.rollups_superseded += outcome.rollups_superseded
        total.skipped += outcome.skipped
        total.retries += outcome.retries
        total.reasons.update(outcome.reasons)
        if progress:
            progress(done, len(chunks))
    return CompactionResult(
        accounts=len(accounts),
        days=total.days,
        events_pruned=total.events_pruned,
        bytes_pruned=total.bytes_pruned,
        rollups_written=0 if dry_run else total.days,
        rollups_superseded=total.rollups_superseded,
        skipped=total.skipped,
        retries=total.retries,
        dry_run=dry_run,
        skipped_by_reason={reason: total.reasons[reason] for reason in HOLD_REASONS if total.reasons[reason]},
        grace_seconds=grace.total_seconds(),
    )
