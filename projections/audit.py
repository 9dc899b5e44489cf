"""Audit: prove the live daily billing records from the log.

Three independent checks, at one well-defined log position (the live one):

1. **Replay equality** - rebuild from position 0 into the scratch table and
   diff it with the live table, row by row (see :mod:`projections.rebuild`).
2. **Conservation** - the sums over the live records equal the sums over the
   log, streamed separately: charges add, reversals subtract, and a rollup
   replaces its account's day with its own totals. For accounts with rollups
   the aggregates' own running totals (which rollups never change, so they
   still count every pruned charge) must equal the log's figures too: a
   rollup that misstates its day cannot hide behind replay equality.
3. **Rollups** - each rollup's groups add up to its ``charges``, tokens add
   up, and where events it covers are still in the log (normally compaction
   prunes them with the rollup's own commit) its digest and totals are
   recomputed from them with ``ledger.compaction``'s digest format.

The log is read in short transactions while writers keep recording. Only
compaction removes events; if it ran during the audit the rows it pruned may
have been seen by one pass and not by another, so the audit reports
``log_changed`` (not clean: run it again) instead of false differences.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any, Iterator
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from ledger.compaction import digest_item, digest_of
from ledger.domain import CHARGE_RECORDED_TOPIC, CHARGE_REVERSED_TOPIC, DAY_ROLLED_UP_TOPIC
from ledger.measures import ZERO, add, event_figures, group_figures
from projections.projector import Decoder, Projector, billing_date_function, group_key, state_decoder
from projections.rebuild import Difference, rebuild
from projections.tables import VALUE_COLUMNS

RAW_TOPICS = (CHARGE_RECORDED_TOPIC, CHARGE_REVERSED_TOPIC)
PROJECTED_TOPICS = frozenset(RAW_TOPICS + (DAY_ROLLED_UP_TOPIC,))

Figures = list[int]


def _figures_dict(figures: Figures) -> dict[str, int]:
    return dict(zip(VALUE_COLUMNS, figures))


@dataclass
class Conservation:
    """Token sums over the live records against the same sums computed from the log."""

    records: dict[str, int]
    log: dict[str, int]
    #: Running totals of the accounts that have rollups, from the aggregates
    #: at the same position: rollups leave those totals alone, so they still
    #: count every charge compaction pruned ...
    accounts: dict[str, int]
    #: ... and what the log says for the same accounts (rollups included).
    accounts_log: dict[str, int]
    accounts_checked: int
    charge_events: int = 0
    reversal_events: int = 0
    rollup_events: int = 0

    @property
    def balanced(self) -> bool:
        return self.records == self.log and self.accounts == self.accounts_log

    def to_dict(self) -> dict[str, Any]:
        return {
            "balanced": self.balanced,
            "records": self.records,
            "log": self.log,
            "accounts": self.accounts,
            "accounts_log": self.accounts_log,
            "accounts_checked": self.accounts_checked,
            "charge_events": self.charge_events,
            "reversal_events": self.reversal_events,
            "rollup_events": self.rollup_events,
        }


@dataclass(frozen=True)
class RollupIssue:
    """A rollup that does not prove what it claims."""

    position: int
    account_id: str
    billing_date: str
    problem: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "account_id": self.account_id,
            "billing_date": self.billing_date,
            "problem": self.problem,
        }


@dataclass
class AuditResult:
    """Everything an audit found; ``clean`` only when every check passed."""

    position: int
    log_position: int
    events: int
    differences: list[Difference]
    difference_count: int
    conservation: Conservation
    rollups_checked: int = 0
    rollups_verified: int = 0
    rollup_issues: list[RollupIssue] = field(default_factory=list)
    log_changed: bool = False

    @property
    def clean(self) -> bool:
        return (
            self.difference_count == 0
            and self.conservation.balanced
            and not self.rollup_issues
            and not self.log_changed
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "position": self.position,
            "log_position": self.log_position,
            "events": self.events,
            "difference_count": self.difference_count,
            "differences": [d.to_dict() for d in self.differences],
            "conservation": self.conservation.to_dict(),
            "rollups_checked": self.rollups_checked,
            "rollups_verified": self.rollups_verified,
            "rollup_issues": [issue.to_dict() for issue in self.rollup_issues],
            "log_changed": self.log_changed,
        }


def audit(
    ledger: Any,
    *,
    catch_up: bool = False,
    batch_size: int | None = None,
    billing_tz: str | None = None,
    max_differences: int = 1000,
) -> AuditResult:
    """Rebuild into scratch, diff with live, check conservation and rollups.

    The comparison is made at the live projector's position (``catch_up=True``
    runs the projector to the end of the log first); ``log_position`` says how
    far the log itself had reached.
    """
    projector = Projector(ledger, batch_size=batch_size, billing_tz=billing_tz)
    if catch_up:
        projector.run()
    log = LogReader(ledger, projector.batch_size)
    head = log.max_position()
    rows_before = log.count(head)
    rebuilt = rebuild(
        ledger, batch_size=batch_size, billing_tz=billing_tz, max_differences=max_differences
    )
    tally = _Tally(projector.zone)
    for row in log.rows(rebuilt.position):
        tally.add(row, log.decode)
    issues = [issue for rollup in tally.to_verify for issue in _verify(log, rollup, tally)]
    issues += tally.issues
    rolled = {origin: tally.versions[origin] for origin in tally.rolled}
    accounts, unloadable = _account_totals(ledger, rolled)
    issues += unloadable
    conservation = Conservation(
        records=rebuilt.live_totals,
        log=tally.totals(),
        accounts=accounts,
        accounts_log=tally.totals(set(tally.rolled.values())),
        accounts_checked=len(rolled),
        charge_events=tally.charge_events,
        reversal_events=tally.reversal_events,
        rollup_events=tally.rollup_events,
    )
    return AuditResult(
        position=rebuilt.position,
        log_position=log.max_position(),
        events=rebuilt.events,
        differences=rebuilt.differences,
        difference_count=rebuilt.difference_count,
        conservation=conservation,
        rollups_checked=tally.rollup_events,
        rollups_verified=sum(1 for r in tally.to_verify if r.verified),
        rollup_issues=issues,
        log_changed=log.count(head) != rows_before,
    )


class LogReader:
    """The events table, read in short transactions."""

    def __init__(self, ledger: Any, batch_size: int) -> None:
        self.ledger = ledger
        self.batch_size = batch_size
        self.table = ledger.recorder.events_record_cls.__table__
        self.decode = state_decoder(ledger.mapper)

    def max_position(self) -> int:
        self.ledger.sequence()
        with self.ledger.recorder.transaction(commit=False) as session:
            return int(session.execute(sa.select(sa.func.max(self.table.c.id))).scalar() or 0)

    def count(self, stop: int) -> int:
        with self.ledger.recorder.transaction(commit=False) as session:
            query = sa.select(sa.func.count()).select_from(self.table).where(self.table.c.id <= stop)
            return int(session.execute(query).scalar() or 0)

    def rows(self, stop: int) -> Iterator[Any]:
        """(id, originator_id, originator_version, topic, state) of every event up to ``stop``.

        ``stop`` is applied here rather than in SQL, for the same reason as in
        the projector: a two-sided range can get a sorting plan on PostgreSQL.
        """
        table, position = self.table, 0
        columns = (table.c.id, table.c.originator_id, table.c.originator_version, table.c.topic, table.c.state)
        while position < stop:
            query = sa.select(*columns).where(table.c.id > position).order_by(table.c.id).limit(self.batch_size)
            with self.ledger.recorder.transaction(commit=False) as session:
                batch = session.execute(query).all()
            yield from (row for row in batch if row.id <= stop)
            if len(batch) < self.batch_size:
                return
            position = batch[-1].id

    def account_rows(self, originator_id: Any, first: int, before: int) -> Iterator[tuple[int, str, dict[str, Any]]]:
        """One account's projected events with ``first <= position < before``."""
        table = self.table
        query = (
            sa.select(table.c.id, table.c.topic, table.c.state)
            .where(
                table.c.originator_id == originator_id,
                table.c.id >= first,
                table.c.id < before,
                table.c.topic.in_(RAW_TOPICS + (DAY_ROLLED_UP_TOPIC,)),
            )
            .order_by(table.c.id)
        )
        with self.ledger.recorder.transaction(commit=False) as session:
            for row in session.execute(query.execution_options(yield_per=2_000)):
                yield row.id, row.topic, self.decode(bytes(row.state))


@dataclass
class _Rollup:
    """A rollup whose account-day had events before it in the log: worth verifying."""

    position: int
    originator_id: Any
    state: dict[str, Any]
    verified: bool = False


@dataclass
class _Day:
    figures: Figures = field(default_factory=lambda: list(ZERO))
    raw_since_rollup: int = 0
    rolled_up: bool = False


class _Tally:
    """The log's totals per (account, billing day): memory grows with account-days only."""

    def __init__(self, zone: ZoneInfo) -> None:
        self.date_of = billing_date_function(zone)
        self.days: dict[tuple[str, date], _Day] = {}
        self.to_verify: list[_Rollup] = []
        self.issues: list[RollupIssue] = []
        self.versions: dict[Any, int] = {}
        self.rolled: dict[Any, str] = {}  # originator id -> account id, for accounts with rollups
        self.charge_events = self.reversal_events = self.rollup_events = 0

    def add(self, row: Any, decode: Decoder) -> None:
        """Fold one stored event (id, originator_id, originator_version, topic, state)."""
        position, originator_id, version, topic, state_bytes = row
        if version > self.versions.get(originator_id, 0):
            self.versions[originator_id] = version
        if topic not in PROJECTED_TOPICS:
            return
        state = decode(bytes(state_bytes))
        if topic == DAY_ROLLED_UP_TOPIC:
            self._rollup(position, originator_id, state)
            return
        sign = 1 if topic == CHARGE_RECORDED_TOPIC else -1
        if sign > 0:
            self.charge_events += 1
        else:
            self.reversal_events += 1
        key = (state["account_id"], self.date_of(state["occurred_at"]["_data_"]))
        day = self.days.setdefault(key, _Day())
        add(day.figures, event_figures(state, sign))
        day.raw_since_rollup += 1

    def _rollup(self, position: int, originator_id: Any, state: dict[str, Any]) -> None:
        self.rollup_events += 1
        self.rolled[originator_id] = state["account_id"]
        key = (state["account_id"], date.fromisoformat(state["billing_date"]))
        day = self.days.setdefault(key, _Day())
        if day.raw_since_rollup or day.rolled_up:
            self.to_verify.append(_Rollup(position, originator_id, state))
        totals = _group_totals(state["groups"])
        self.issues += _internal_issues(position, state, totals)
        day.figures = totals
        day.raw_since_rollup = 0
        day.rolled_up = True

    def totals(self, accounts: set[str] | None = None) -> dict[str, int]:
        """Sums over every account's days, or over the given accounts'."""
        sums = list(ZERO)
        for (account_id, _), day in self.days.items():
            if accounts is not None and account_id not in accounts:
                continue
            for i, value in enumerate(day.figures):
                sums[i] += value
        return _figures_dict(sums)


def _account_totals(ledger: Any, versions: dict[Any, int]) -> tuple[dict[str, int], list[RollupIssue]]:
    """Sum of the given accounts' running totals, each at its version as of the audited position.

    Only accounts with rollups are loaded: elsewhere the log still holds every
    charge, and compaction's snapshots make rolled-up accounts cheap to load.
    """
    sums = list(ZERO)
    issues = []
    for originator_id, version in versions.items():
        try:
            account = ledger.repository.get(originator_id, version=version)
        except Exception as exc:  # a gap no snapshot covers: report it, keep auditing
            issues.append(RollupIssue(0, str(originator_id), "", f"account not loadable at version {version}: {exc!r}"))
            continue
        totals = account.totals
        for i, name in enumerate(VALUE_COLUMNS):
            sums[i] += getattr(totals, name)
    return _figures_dict(sums), issues


def _group_totals(groups: list[dict[str, Any]]) -> Figures:
    totals = list(ZERO)
    for g in groups:
        add(totals, group_figures(g))
    return totals


def _internal_issues(position: int, state: dict[str, Any], totals: Figures) -> list[RollupIssue]:
    """A rollup must add up on its own, whether or not its events are still stored."""
    found = []
    if totals[0] != state["charges"]:
        found.append(_issue(position, state, f"groups count {totals[0]} charges, the rollup claims {state['charges']}"))
    for g in state["groups"]:
        if g["prompt_tokens"] + g["completion_tokens"] != g["total_tokens"]:
            found.append(_issue(position, state, f"group {g['user_id']}/{g['charge_type']}: total != prompt + completion"))
        if abs(group_figures(g)[5]) > abs(g["charges"]):
            found.append(_issue(position, state, f"group {g['user_id']}/{g['charge_type']}: more unpriced than charges"))
    return found


def _issue(position: int, state: dict[str, Any], problem: str) -> RollupIssue:
    return RollupIssue(position, state["account_id"], state["billing_date"], problem)


def _nonzero(groups: dict[Any, Figures]) -> dict[Any, Figures]:
    return {key: figures for key, figures in groups.items() if any(figures)}


def _verify(log: LogReader, rollup: _Rollup, tally: _Tally) -> list[RollupIssue]:
    """Recompute a rollup's digest and groups from the events it covers that are still stored.

    Covered: the day's raw events after the latest earlier rollup of the day
    (whose digest and groups the new one carries forward), all before the
    rollup itself. Nothing stored means compaction pruned it: nothing to
    recompute. A partial set means events were lost.
    """
    state = rollup.state
    day = date.fromisoformat(state["billing_date"])
    previous: dict[str, Any] | None = None
    items = []
    groups: dict[tuple[str, str, str, str], Figures] = {}
    first = state.get("first_position") or 0
    for _, topic, event in log.account_rows(rollup.originator_id, first, rollup.position):
        if topic == DAY_ROLLED_UP_TOPIC:
            if event["billing_date"] == state["billing_date"]:
                previous, items = event, []
                groups = {group_key(g): list(group_figures(g)) for g in event["groups"]}
            continue
        if tally.date_of(event["occurred_at"]["_data_"]) != day:
            continue
        item = digest_item(topic, event)
        items.append(item)
        add(groups.setdefault(group_key(event), list(ZERO)), event_figures(event, item[1]))
    present = len(items) + (int(previous["events"]) if previous else 0)
    if not items and previous is None:
        return []
    if present != state["events"]:
        problem = f"covers {state['events']} events but {present} are accounted for in the log"
        return [_issue(rollup.position, state, problem)]
    found = []
    if digest_of(items, previous["digest"] if previous else None) != state["digest"]:
        found.append(_issue(rollup.position, state, "digest does not match the events it covers"))
    claimed = {group_key(g): list(group_figures(g)) for g in state["groups"]}
    if _nonzero(claimed) != _nonzero(groups):
        found.append(_issue(rollup.position, state, "groups do not match the events it covers"))
    rollup.verified = not found
    return found
