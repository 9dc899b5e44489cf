"""One account's closed day as read from its stream: what its rollup would cover and hold.

A rollup superseding an earlier one of its day starts from that rollup's
groups and carries its coverage forward: ``events`` counts every raw event
the day's rollups have stood for, ``first_position``/``last_position`` span
them all, ``charges`` is the day's count net of reversals. Groups whose
figures net to zero are kept, so "set the day to these groups" equals what a
live projection holds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from ledger.billing_keys import GroupKey, group_key
from ledger.compaction_rules import HELD_RAW_BEFORE_ROLLUP, CompactionError, Rules
from ledger.measures import MEASURES, ZERO, add, event_figures, group_figures
from ledger.rollup_digest import DigestItem, digest_item, digest_of

log = logging.getLogger(__name__)


@dataclass
class RollupDay:
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

    def add_rollup(self, notification_id: int, state: dict[str, Any], size: int, rules: Rules) -> None:
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
        self.groups = {group_key(g): list(group_figures(g)) for g in state["groups"]}
        if not rules.may_prune(notification_id, state["recorded_at"]):
            self.blocked = True
            self.held_because |= rules.hold_reasons(notification_id, state["recorded_at"])

    def add_raw(self, notification_id: int, topic: str, state: dict[str, Any], size: int, rules: Rules) -> None:
        item = digest_item(topic, state)
        self.raw_ids.append(notification_id)
        self.items.append(item)
        self.raw_bytes += size
        add(self.groups.setdefault(group_key(state), list(ZERO)), event_figures(state, item[1]))
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

    def rollup_fields(self, account_id: str, rules: Rules, now: datetime) -> dict[str, Any]:
        """Arguments of ``Account.roll_up_day`` for this day."""
        previous = self.previous or {}
        groups = [
            {
                "user_id": key[0],
                "charge_type": key[1],
                "provider": key[2],
                "model": key[3],
                **dict(zip(MEASURES, totals, strict=True)),
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
