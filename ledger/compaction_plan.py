"""Compaction's plan: which accounts have due days, from one streaming pass over the log."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING
from uuid import UUID

from ledger.billing_keys import billing_date_function
from ledger.compaction_rules import Rules, first_reason
from ledger.rollup_digest import RAW_TOPICS
from ledger.store import event_log

if TYPE_CHECKING:
    from ledger.application import Ledger


@dataclass
class Plan:
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


def plan(ledger: Ledger, rules: Rules, batch_size: int) -> Plan:
    """Stream the log's charges and reversals; memory grows with accounts x days only."""
    decode = event_log.state_decoder(ledger.mapper)
    date_of = billing_date_function(rules.zone)
    counts: dict[tuple[UUID, date], int] = {}
    blocked: dict[tuple[UUID, date], set[str]] = {}
    for batch in event_log.events_of_topics(ledger.store, RAW_TOPICS, batch_size):
        for notification_id, originator_id, state_bytes in batch:
            state = decode(bytes(state_bytes))
            day = date_of(state["occurred_at"]["_data_"])
            if not rules.day_is_due(day):
                continue
            key = (originator_id, day)
            counts[key] = counts.get(key, 0) + 1
            if not rules.may_prune(notification_id, state["recorded_at"]):
                blocked.setdefault(key, set()).update(rules.hold_reasons(notification_id, state["recorded_at"]))
    result = Plan(skipped=len(blocked), reasons=Counter(first_reason(r) for r in blocked.values()))
    for (aggregate_id, day), count in counts.items():
        if (aggregate_id, day) not in blocked:
            result.days.setdefault(aggregate_id, {})[day] = count
    return result
