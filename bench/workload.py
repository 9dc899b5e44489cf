"""Deterministic charges shaped like production traffic, and the totals they must add up to.

The same generator feeds the ledger, the CRUD baseline and the raw inserts,
so every scenario moves the same bytes and every count can be checked.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator, Mapping, Sequence

CHARGE_TYPES = ("completion", "tool", "plugin", "usage")
MODELS = (("openai", "gpt-4o"), ("anthropic", "claude-3-5-sonnet"), (None, None))
USERS_PER_ACCOUNT = 5
#: The topic a charge event is stored under (the raw baseline copies it).
CHARGE_TOPIC = "ledger.domain:Account.ChargeRecorded"


def account_ids(count: int, prefix: str = "acct") -> list[str]:
    return [f"{prefix}-{i:04d}" for i in range(count)]


#: One charge in this many arrives late: backdated by one to three days.
LATE_EVERY = 50


def charge(prefix: str, i: int, accounts: Sequence[str], *, occurred_at: datetime) -> dict[str, Any]:
    """Charge number ``i`` of a workload: spread over accounts, users, types and models."""
    provider, model = MODELS[i % len(MODELS)]
    return {
        "charge_id": f"{prefix}-{i:09d}",
        "account_id": accounts[i % len(accounts)],
        "user_id": f"user-{(i // len(accounts)) % USERS_PER_ACCOUNT}",
        "charge_type": CHARGE_TYPES[i % len(CHARGE_TYPES)],
        "provider": provider,
        "model": model,
        "prompt_tokens": 200 + (i * 7) % 1800,
        "completion_tokens": 50 + (i * 13) % 700,
        "session_key": f"sess-{i % 977:04d}",
        "reference": f"req_{i:012d}",
        "occurred_at": occurred_at,
    }


def charges(
    prefix: str,
    count: int,
    accounts: Sequence[str],
    *,
    first: int = 0,
    start: datetime | None = None,
    days: int = 1,
) -> Iterator[dict[str, Any]]:
    """``count`` charges arriving in time order over ``days`` from ``start`` (default: today, UTC).

    As in production, most charges are recorded soon after the call; one in
    :data:`LATE_EVERY` is backdated by one to three days.
    """
    start = start or datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    step = days * 86400 / max(count, 1)
    for k in range(count):
        i = first + k
        occurred_at = start + timedelta(seconds=k * step)
        if i % LATE_EVERY == LATE_EVERY - 1:
            occurred_at -= timedelta(days=1 + i % 3)
        yield charge(prefix, i, accounts, occurred_at=occurred_at)


@dataclass
class Tally:
    """Net charges and tokens a store must show after a scenario."""

    charges: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def add(self, item: Mapping[str, Any], sign: int = 1) -> None:
        prompt, completion = int(item["prompt_tokens"]), int(item["completion_tokens"])
        self.charges += sign
        self.prompt_tokens += sign * prompt
        self.completion_tokens += sign * completion
        self.total_tokens += sign * (prompt + completion)

    def merge(self, other: "Tally") -> None:
        self.charges += other.charges
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.total_tokens += other.total_tokens

    def as_dict(self) -> dict[str, int]:
        return {
            "charges": self.charges,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


def tally_of(items: Sequence[Mapping[str, Any]]) -> Tally:
    tally = Tally()
    for item in items:
        tally.add(item)
    return tally


def event_state(item: Mapping[str, Any], recorded_at: datetime) -> bytes:
    """JSON bytes the size and shape of a stored ChargeRecorded event's state."""

    def moment(value: datetime) -> dict[str, str]:
        return {"_type_": "datetime_iso", "_data_": value.isoformat()}

    prompt, completion = item["prompt_tokens"], item["completion_tokens"]
    state = {
        "timestamp": moment(recorded_at),
        "charge_id": item["charge_id"],
        "account_id": item["account_id"],
        "user_id": item["user_id"],
        "charge_type": item["charge_type"],
        "provider": item["provider"],
        "model": item["model"],
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "occurred_at": moment(item["occurred_at"]),
        "recorded_at": moment(recorded_at),
        "user_profile_id": None,
        "session_key": item["session_key"],
        "reference": item["reference"],
    }
    return json.dumps(state, separators=(",", ":")).encode()


def raw_event_rows(items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows for the raw baseline: one per charge, its account's stream and next version."""
    versions: dict[str, int] = {}
    now = datetime.now(timezone.utc)
    rows = []
    for item in items:
        account = item["account_id"]
        versions[account] = versions.get(account, 0) + 1
        rows.append(
            {
                "originator_id": uuid.uuid5(uuid.NAMESPACE_URL, f"bench:{account}"),
                "originator_version": versions[account],
                "topic": CHARGE_TOPIC,
                "state": event_state(item, now),
            }
        )
    return rows
