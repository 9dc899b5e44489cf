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

A rollup superseding an earlier one of its day starts from that rollup's
groups and carries its coverage forward: ``events`` counts every raw event
the day's rollups have stood for, ``first_position``/``last_position`` span
them all, ``charges`` is the day's count net of reversals. Groups whose
figures net to zero are kept, so "set the day to these groups" equals what a
live projection holds.

Concurrency: the first attempt at an account reads without locks; a writer
appending meanwhile makes the save's version check fail, and the second
attempt takes the append lock first. Processes that cached an account before
another process pruned part of its stream reload it from its snapshot
(:class:`ledger.repository.CompactedRepository`, the ledger's repository).

Digest format
-------------
A rollup's ``digest`` is the SHA-256 hex digest of UTF-8 text built as:

* if it supersedes an earlier rollup of the day: the line
  ``previous:<that rollup's digest>``;
* then one line per covered raw event, sorted as strings, each the compact
  JSON array ``[charge_id, sign, prompt_tokens, completion_tokens,
  total_tokens]`` (``sign`` is 1 for a charge, -1 for a reversal; tokens are
  the event's positive figures; ``json.dumps(..., separators=(",", ":"),
  ensure_ascii=False)``), extended by ``cost_micros, price_version`` for a
  priced event (so digests of unpriced events are what they always were);

every line ending in ``\\n``. :func:`digest_of` computes it and
:func:`digest_item` turns a stored event's state into its item, so an audit
can recompute a digest wherever the raw events are still present.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping
from uuid import UUID
from zoneinfo import ZoneInfo

import orjson
import sqlalchemy as sa
from eventsourcing.domain import OriginatorVersionError
from eventsourcing.persistence import IntegrityError
from sqlalchemy.orm import Session

from ledger.domain import (
    CHARGE_RECORDED_TOPIC,
    CHARGE_REVERSED_TOPIC,
    DAY_ROLLED_UP_TOPIC,
    Account,
)
from ledger.errors import LedgerError
from ledger.measures import MEASURES, ZERO, add, event_figures, group_figures
from ledger.repository import CompactedRepository, evict, mutate_all

if TYPE_CHECKING:
    from ledger.application import Ledger

__all__ = ["CompactedRepository", "mutate_all"]  # their earlier home; see ledger.repository

log = logging.getLogger(__name__)

RAW_TOPICS = (CHARGE_RECORDED_TOPIC, CHARGE_REVERSED_TOPIC)
COMPACTION_TOPICS = RAW_TOPICS + (DAY_ROLLED_UP_TOPIC,)

#: Bytes a row costs beyond its topic and state: id, originator id, version,
#: tuple header and two index entries. An estimate, the same on both stores.
ROW_OVERHEAD_BYTES = 96

#: Raw events one account transaction may cover; more days wait for the next one.
MAX_EVENTS_PER_TRANSACTION = 100_000

SCAN_BATCH_SIZE = 5_000

#: (charge_id, sign, prompt_tokens, completion_tokens, total_tokens[, cost_micros, price_version])
DigestItem = tuple[Any, ...]
GroupKey = tuple[str, str, "str | None", "str | None"]
Progress = Callable[[int, int], None]
StepHook = Callable[[str, UUID], None]


class CompactionError(LedgerError):
    """The log holds something compaction must not paper over."""


#: Why a closed account-day was held back, in the order a day is counted under
#: (each skipped day counts once, under the first reason that applies to it).
#: Raw events stored before the day's rollup: left for a person to look at.
HELD_RAW_BEFORE_ROLLUP = "raw_before_rollup"
#: An event to prune was recorded less than the grace period ago (counted from
#: the recording time, so a backdated import waits for the grace period too).
HELD_GRACE_PERIOD = "grace_period"
#: An event to prune is past the projector's position.
HELD_NOT_PROJECTED = "not_projected"
HOLD_REASONS = (HELD_RAW_BEFORE_ROLLUP, HELD_GRACE_PERIOD, HELD_NOT_PROJECTED)


def first_reason(reasons: Iterable[str]) -> str:
    """The reason a day held back for several is counted under."""
    present = set(reasons)
    return next((reason for reason in HOLD_REASONS if reason in present), HELD_NOT_PROJECTED)


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


# -- digest ------------------------------------------------------------------


def digest_item(topic: str, state: Mapping[str, Any]) -> DigestItem:
    """The digest item of a stored charge or reversal (its decoded state)."""
    if topic not in RAW_TOPICS:
        raise ValueError(f"not a charge or reversal topic: {topic!r}")
    sign = 1 if topic == CHARGE_RECORDED_TOPIC else -1
    item: DigestItem = (
        str(state["charge_id"]),
        sign,
        int(state["prompt_tokens"]),
        int(state["completion_tokens"]),
        int(state["total_tokens"]),
    )
    if state.get("price_version") is not None:
        item += (int(state["cost_micros"]), int(state["price_version"]))
    return item


def digest_of(items: Iterable[DigestItem], previous: str | None = None) -> str:
    """SHA-256 of the covered events (and a superseded rollup's digest); see module doc."""
    lines = sorted(
        json.dumps(list(item), separators=(",", ":"), ensure_ascii=False) for item in items
    )
    hasher = hashlib.sha256()
    if previous is not None:
        hasher.update(f"previous:{previous}\n".encode())
    for line in lines:
        hasher.update(line.encode("utf-8") + b"\n")
    return hasher.hexdigest()


# -- decoding stored events ----------------------------------------------------


def decode_state(state: bytes) -> dict[str, Any]:
    """An event's JSON state with datetimes decoded (JSONTranscoder's format)."""
    return json.loads(state, object_hook=_decode_datetime)


def _decode_datetime(obj: dict[str, Any]) -> Any:
    if obj.get("_type_") == "datetime_iso":
        return datetime.fromisoformat(obj["_data_"])
    return obj


def state_decoder(mapper: Any) -> Callable[[bytes], dict[str, Any]]:
    """Stored state -> dict (datetimes left transcoded, see :func:`moment`), undoing
    the mapper's cipher and compressor when configured."""
    cipher = getattr(mapper, "cipher", None)
    compressor = getattr(mapper, "compressor", None)
    if cipher is None and compressor is None:
        return orjson.loads

    def decode(state: bytes) -> dict[str, Any]:
        if cipher is not None:
            state = cipher.decrypt(state)
        if compressor is not None:
            state = compressor.decompress(state)
        return orjson.loads(state)

    return decode


def moment(value: Any) -> datetime:
    """An aware datetime from a decoded or still transcoded state value."""
    if isinstance(value, dict):
        value = datetime.fromisoformat(value["_data_"])
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def billing_date(occurred_at: Any, zone: ZoneInfo) -> date:
    """The billing date of a moment: its calendar date in the billing time zone."""
    return moment(occurred_at).astimezone(zone).date()


@lru_cache(maxsize=4096)
def day_end(day: date, zone: ZoneInfo) -> datetime:
    """The first instant after ``day`` in ``zone`` (DST-correct), in UTC."""
    return datetime.combine(day + timedelta(days=1), datetime.min.time(), zone).astimezone(
        timezone.utc
    )


# -- the rules ---------------------------------------------------------------


@dataclass(frozen=True)
class _Rules:
    """Which days and events a run may touch, fixed at its start."""

    before: date
    projected_position: int
    cutoff: datetime  # now - grace
    zone: ZoneInfo
    time_zone: str

    def day_is_due(self, day: date) -> bool:
        return day < self.before and day_end(day, self.zone) <= self.cutoff

    def may_prune(self, position: int, recorded_at: Any) -> bool:
        return position <= self.projected_position and moment(recorded_at) <= self.cutoff

    def hold_reasons(self, position: int, recorded_at: Any) -> set[str]:
        """Why an event may not be pruned yet: empty exactly when :meth:`may_prune`."""
        reasons = set()
        if moment(recorded_at) > self.cutoff:
            reasons.add(HELD_GRACE_PERIOD)
        if position > self.projected_position:
            reasons.add(HELD_NOT_PROJECTED)
        return reasons


# -- per-day accumulation ----------------------------------------------------


@dataclass
class _Day:
    """One account's day as read from its stream: what a rollup would cover."""

    day: date
    previous: dict[str, Any] | None = None
    previous_id: int | None = None
    previous_bytes: int = 0
    raw_ids: list[int] = field(default_factory=list)
    items: list[DigestItem] = field(default_factory=list)
    groups: dict[GroupKey, list[int]] = field(default_factory=dict)
    raw_bytes: int = 0
    blocked: bool = False
    held_because: set[str] = field(default_factory=set)

    def add_rollup(self, notification_id: int, state: dict[str, Any], size: int, rules: _Rules) -> None:
        if self.raw_ids:
            # Raw events of the day stored before its latest rollup: never
            # written by compaction; leave the day for a human to look at.
            log.warning("account %s day %s: raw events precede a rollup", state["account_id"], self.day)
            self.blocked = True
            self.held_because.add(HELD_RAW_BEFORE_ROLLUP)
        if state["time_zone"] != rules.time_zone:
            raise CompactionError(
                f"rollup of {state['account_id']} {self.day} was made in time zone "
                f"{state['time_zone']!r}, the ledger now bills in {rules.time_zone!r}"
            )
        self.previous, self.previous_id, self.previous_bytes = state, notification_id, size
        self.groups = {
            (g["user_id"], g["charge_type"], g["provider"], g["model"]): list(group_figures(g))
            for g in state["groups"]
        }
        if not rules.may_prune(notification_id, state["recorded_at"]):
            self.blocked = True
            self.held_because |= rules.hold_reasons(notification_id, state["recorded_at"])

    def add_raw(self, notification_id: int, topic: str, state: dict[str, Any], size: int, rules: _Rules) -> None:
        item = digest_item(topic, state)
        self.raw_ids.append(notification_id)
        self.items.append(item)
        self.raw_bytes += size
        key = (state["user_id"], state["charge_type"], state["provider"], state["model"])
        add(self.groups.setdefault(key, list(ZERO)), event_figures(state, item[1]))
        if not rules.may_prune(notification_id, state["recorded_at"]):
            self.blocked = True
            self.held_because |= rules.hold_reasons(notification_id, state["recorded_at"])

    @property
    def ready(self) -> bool:
        return bool(self.raw_ids) and not self.blocked

    @property
    def pruned_ids(self) -> list[int]:
        return self.raw_ids + ([self.previous_id] if self.previous_id is not None else [])

    @property
    def pruned_bytes(self) -> int:
        return self.raw_bytes + self.previous_bytes

    def rollup_fields(self, account_id: str, rules: _Rules, now: datetime) -> dict[str, Any]:
        """Arguments of ``Account.roll_up_day`` for this day."""
        previous = self.previous or {}
        groups = [
            {
                "user_id": key[0],
                "charge_type": key[1],
                "provider": key[2],
                "model": key[3],
                **dict(zip(MEASURES, totals)),
            }
            for key, totals in sorted(self.groups.items(), key=lambda kv: _sort_key(kv[0]))
        ]
        positions = list(self.raw_ids)
        for name in ("first_position", "last_position"):
            if previous.get(name) is not None:
                positions.append(previous[name])
        return {
            "account_id": account_id,
            "billing_date": self.day.isoformat(),
            "time_zone": rules.time_zone,
            "groups": groups,
            "charges": sum(g["charges"] for g in groups),
            "events": int(previous.get("events", 0)) + len(self.raw_ids),
            "digest": digest_of(self.items, previous.get("digest")),
            "first_position": min(positions),
            "last_position": max(positions),
            "recorded_at": now,
        }


def _sort_key(key: GroupKey) -> tuple[tuple[bool, str], ...]:
    return tuple((part is None, part or "") for part in key)


# -- planning: which accounts have work --------------------------------------


@dataclass
class _Plan:
    """Candidate (account, day) pairs from one pass over the log."""

    days: dict[UUID, dict[date, int]] = field(default_factory=dict)
    skipped: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    def chunks(self, limit: int) -> Iterator[tuple[UUID, frozenset[date]]]:
        """Per account, groups of days whose raw events fit in one transaction."""
        for aggregate_id, counts in self.days.items():
            chunk: list[date] = []
            size = 0
            for day in sorted(counts):
                if chunk and size + counts[day] > limit:
                    yield aggregate_id, frozenset(chunk)
                    chunk, size = [], 0
                chunk.append(day)
                size += counts[day]
            if chunk:
                yield aggregate_id, frozenset(chunk)


def _plan(ledger: "Ledger", rules: _Rules, batch_size: int) -> _Plan:
    """Stream the log's charges and reversals; memory grows with accounts x days only."""
    table = ledger.recorder.events_record_cls.__table__
    decode = state_decoder(ledger.mapper)
    counts: dict[tuple[UUID, date], int] = {}
    blocked: dict[tuple[UUID, date], set[str]] = {}
    position = 0
    while True:
        with ledger.recorder.transaction(commit=False) as session:
            batch = session.execute(
                sa.select(table.c.id, table.c.originator_id, table.c.state)
                .where(table.c.id > position, table.c.topic.in_(RAW_TOPICS))
                .order_by(table.c.id)
                .limit(batch_size)
            ).all()
        for notification_id, originator_id, state_bytes in batch:
            state = decode(bytes(state_bytes))
            day = billing_date(state["occurred_at"], rules.zone)
            if not rules.day_is_due(day):
                continue
            key = (originator_id, day)
            counts[key] = counts.get(key, 0) + 1
            if not rules.may_prune(notification_id, state["recorded_at"]):
                blocked.setdefault(key, set()).update(rules.hold_reasons(notification_id, state["recorded_at"]))
        if len(batch) < batch_size:
            break
        position = batch[-1].id
    plan = _Plan(skipped=len(blocked), reasons=Counter(first_reason(r) for r in blocked.values()))
    for (aggregate_id, day), count in counts.items():
        if (aggregate_id, day) not in blocked:
            plan.days.setdefault(aggregate_id, {})[day] = count
    return plan


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


def _load_account(ledger: "Ledger", aggregate_id: UUID) -> Account:
    """The account as writers see it (reloaded from its snapshot past a pruned gap)."""
    try:
        return ledger.repository.get(aggregate_id)
    except OriginatorVersionError:
        evict(ledger.repository, aggregate_id)
        return ledger.repository.get(aggregate_id)


def _read_days(
    session: Session, ledger: "Ledger", aggregate_id: UUID, version: int, wanted: frozenset[date], rules: _Rules
) -> list[_Day]:
    """The wanted days of one account, folded from its stored events in log order."""
    table = ledger.recorder.events_record_cls.__table__
    query = (
        sa.select(table.c.id, table.c.topic, table.c.state)
        .where(
            table.c.originator_id == aggregate_id,
            table.c.originator_version <= version,
            table.c.topic.in_(COMPACTION_TOPICS),
        )
        .order_by(table.c.id)
        .execution_options(yield_per=2_000)
    )
    decode = state_decoder(ledger.mapper)
    days: dict[date, _Day] = {}
    for row in session.execute(query):
        state_bytes = bytes(row.state)
        state = decode(state_bytes)
        size = len(state_bytes) + len(row.topic) + ROW_OVERHEAD_BYTES
        if row.topic == DAY_ROLLED_UP_TOPIC:
            day = date.fromisoformat(state["billing_date"])
            if day in wanted:
                days.setdefault(day, _Day(day)).add_rollup(row.id, state, size, rules)
        else:
            day = billing_date(state["occurred_at"], rules.zone)
            if day in wanted:
                days.setdefault(day, _Day(day)).add_raw(row.id, row.topic, state, size, rules)
    return [days[day] for day in sorted(days)]


def _delete_events(session: Session, ledger: "Ledger", ids: list[int]) -> None:
    table = ledger.recorder.events_record_cls.__table__
    for start in range(0, len(ids), 1_000):
        chunk = ids[start : start + 1_000]
        result = session.execute(table.delete().where(table.c.id.in_(chunk)))
        if result.rowcount != len(chunk):  # type: ignore[attr-defined]
            raise CompactionError(f"expected to delete {len(chunk)} events, deleted {result.rowcount}")  # type: ignore[attr-defined]
    newest = session.execute(sa.select(sa.func.max(table.c.id))).scalar_one()
    assert newest is not None and newest > max(ids), "compaction must never delete the newest event"


def _snapshot(session: Session, ledger: "Ledger", account: Account) -> None:
    """Snapshot the saved account at its new version (unless the save's interval snapshot did).

    The snapshot is taken from the account in hand, the state the rollups were
    appended to, rather than by ``ledger.take_snapshot``, which would replay
    the stream a second time inside the transaction (same result, twice the
    work when the account had no snapshot yet).
    """
    assert ledger.snapshots is not None, "compaction needs snapshotting enabled"
    table = ledger.snapshots.recorder.events_record_cls.__table__  # type: ignore[attr-defined]
    session.flush()  # the save's own snapshot is pending in the session; a Core select won't autoflush
    exists = session.execute(
        sa.select(table.c.originator_version).where(
            table.c.originator_id == account.id, table.c.originator_version == account.version
        )
    ).first()
    if exists is None:
        snapshot_class = getattr(type(account), "Snapshot", type(ledger).snapshot_class)
        ledger.snapshots.put([snapshot_class.take(account)])


def _compact_account(
    ledger: "Ledger",
    aggregate_id: UUID,
    wanted: frozenset[date],
    rules: _Rules,
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
            with ledger.recorder.transaction(commit=not dry_run) as session:
                if lock_first:
                    ledger.recorder._lock_table(session)
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
                now = datetime.now(timezone.utc)
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
    ledger: "Ledger",
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
    rules = _Rules(
        before=before,
        projected_position=projected_position,
        cutoff=datetime.now(timezone.utc) - grace,
        zone=ledger.settings.zone,
        time_zone=ledger.settings.billing_tz,
    )
    ledger.sequence()  # acknowledged charges are in the log, so their days count as unprojected
    plan = _plan(ledger, rules, SCAN_BATCH_SIZE)
    chunks = list(plan.chunks(MAX_EVENTS_PER_TRANSACTION))
    hook = on_step or (lambda step, aggregate_id: None)
    total = _Outcome(skipped=plan.skipped, reasons=Counter(plan.reasons))
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
