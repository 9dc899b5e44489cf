"""Checking a rollup: its groups add up on their own, and match the events it covers still stored.

Where events a rollup covers are still in the log (normally compaction
prunes them with the rollup's own commit), its digest and groups are
recomputed from them in :mod:`ledger.rollup_digest`'s format.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any
from uuid import UUID

from ledger.billing_keys import GroupKey, group_key
from ledger.domain import DAY_ROLLED_UP_TOPIC
from ledger.measures import ZERO, add, event_figures, group_figures
from ledger.rollup_digest import RAW_TOPICS, digest_item, digest_of
from ledger.store import event_log
from projections.day_fold import RunningFigures

if TYPE_CHECKING:
    from collections.abc import Callable

    from ledger.store.base import Store

PROJECTED_TOPICS = RAW_TOPICS + (DAY_ROLLED_UP_TOPIC,)


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
class Rollup:
    """A rollup whose account-day had events before it in the log: worth verifying."""

    position: int
    originator_id: UUID
    state: dict[str, Any]
    verified: bool = False


def group_totals(groups: list[dict[str, Any]]) -> RunningFigures:
    """The figures of a rollup's groups, summed."""
    totals = list(ZERO)
    for g in groups:
        add(totals, group_figures(g))
    return totals


def internal_issues(position: int, state: dict[str, Any], totals: RunningFigures) -> list[RollupIssue]:
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


def _nonzero(groups: dict[GroupKey, RunningFigures]) -> dict[GroupKey, RunningFigures]:
    return {key: figures for key, figures in groups.items() if any(figures)}


def verify(
    store: Store, decode: event_log.Decoder, date_of: Callable[[str], date], rollup: Rollup
) -> list[RollupIssue]:
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
    groups: dict[GroupKey, RunningFigures] = {}
    first = state.get("first_position") or 0
    for _, topic, state_bytes in event_log.account_events(
        store, rollup.originator_id, first, rollup.position, PROJECTED_TOPICS
    ):
        event = decode(state_bytes)
        if topic == DAY_ROLLED_UP_TOPIC:
            if event["billing_date"] == state["billing_date"]:
                previous, items = event, []
                groups = {group_key(g): list(group_figures(g)) for g in event["groups"]}
            continue
        if date_of(event["occurred_at"]["_data_"]) != day:
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
