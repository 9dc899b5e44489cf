"""What the compaction tests share: charges to record, a plain model of what was accepted,
and ``fold_log``, the reference reading of a (compacted) log.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import date, datetime, timedelta, timezone
from typing import Any, Iterable
from zoneinfo import ZoneInfo

from ledger import Ledger, Totals
from ledger.compaction import compact
from ledger.domain import (
    CHARGE_RECORDED_TOPIC,
    CHARGE_REVERSED_TOPIC,
    DAY_ROLLED_UP_TOPIC,
)
from ledger.store.event_log import decode_state

UTC = timezone.utc
NO_GRACE = timedelta(0)
DAY1, DAY2, DAY3 = date(2026, 1, 1), date(2026, 1, 2), date(2026, 1, 3)
Key = tuple[str, str, str, str, "str | None", "str | None"]


# -- helpers shared by the compaction tests ------------------------------------


def charge(n: int, *, account: str = "acme", user: str = "u1", day: date = DAY1,
           hour: int = 10, charge_type: str = "completion", provider: str | None = "openai",
           model: str | None = "gpt-4o", prompt: int | None = None, completion: int | None = None,
           zone: ZoneInfo = ZoneInfo("UTC")) -> dict[str, Any]:
    """A charge with id ``c-n``; tokens vary with ``n`` unless given."""
    occurred = datetime(day.year, day.month, day.day, hour, n % 60, tzinfo=zone)
    return dict(charge_id=f"c-{n}", account_id=account, user_id=user, charge_type=charge_type,
                provider=provider, model=model,
                prompt_tokens=prompt if prompt is not None else 10 + n % 7,
                completion_tokens=completion if completion is not None else n % 5,
                occurred_at=occurred.astimezone(UTC).isoformat())


class Model:
    """What the ledger accepted, as plain Python: the expected totals."""

    def __init__(self, zone: str = "UTC") -> None:
        self.zone = ZoneInfo(zone)
        self.charges: dict[str, dict[str, Any]] = {}
        self.reversed: set[str] = set()

    def record(self, ledger: Ledger, fields: dict[str, Any]) -> None:
        receipt = ledger.record_charge(**fields)
        if not receipt.duplicate:
            self.charges[fields["charge_id"]] = fields

    def reverse(self, ledger: Ledger, charge_id: str) -> None:
        ledger.reverse_charge(charge_id, "test")
        self.reversed.add(charge_id)

    def records(self) -> dict[Key, tuple[int, int, int, int]]:
        rows: dict[Key, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        for charge_id, c in self.charges.items():
            day = datetime.fromisoformat(c["occurred_at"]).astimezone(self.zone).date().isoformat()
            key = (c["account_id"], day, c["user_id"], c["charge_type"], c.get("provider"), c.get("model"))
            if charge_id in self.reversed:
                continue  # counted once, cancelled once
            prompt, completion = c["prompt_tokens"], c["completion_tokens"]
            for i, value in enumerate((1, prompt, completion, prompt + completion)):
                rows[key][i] += value
        return nonzero(rows)

    def totals(self, account: str) -> Totals:
        total = Totals()
        for charge_id, c in self.charges.items():
            if c["account_id"] == account and charge_id not in self.reversed:
                p, q = c["prompt_tokens"], c["completion_tokens"]
                total = total + Totals.of_unpriced(1, p, q, p + q)
        return total

    def accounts(self) -> set[str]:
        return {c["account_id"] for c in self.charges.values()}


def nonzero(rows: dict[Key, Any]) -> dict[Key, tuple[int, int, int, int]]:
    return {k: tuple(v) for k, v in rows.items() if any(v)}


def notifications(ledger: Ledger, topics: Iterable[str] = ()) -> list[Any]:
    return ledger.recorder.select_notifications(0, 10**9, topics=tuple(topics),
                                                inclusive_of_start=False)


def fold_log(ledger: Ledger) -> dict[Key, tuple[int, int, int, int]]:
    """Daily records rebuilt from the log alone: rollups set their day, raw events add."""
    zone = ledger.settings.zone
    days: dict[tuple[str, str], dict[tuple, list[int]]] = defaultdict(dict)
    for n in notifications(ledger, (CHARGE_RECORDED_TOPIC, CHARGE_REVERSED_TOPIC, DAY_ROLLED_UP_TOPIC)):
        state = decode_state(n.state)
        if n.topic == DAY_ROLLED_UP_TOPIC:
            days[(state["account_id"], state["billing_date"])] = {
                (g["user_id"], g["charge_type"], g["provider"], g["model"]):
                    [g["charges"], g["prompt_tokens"], g["completion_tokens"], g["total_tokens"]]
                for g in state["groups"]
            }
            continue
        day = state["occurred_at"].astimezone(zone).date().isoformat()
        group = (state["user_id"], state["charge_type"], state["provider"], state["model"])
        totals = days[(state["account_id"], day)].setdefault(group, [0, 0, 0, 0])
        sign = 1 if n.topic == CHARGE_RECORDED_TOPIC else -1
        for i, name in enumerate(("prompt_tokens", "completion_tokens", "total_tokens"), start=1):
            totals[i] += sign * state[name]
        totals[0] += sign
    rows = {
        (account, day, *group): values
        for (account, day), groups in days.items()
        for group, values in groups.items()
    }
    return nonzero(rows)


def topic_counts(ledger: Ledger) -> Counter[str]:
    return Counter(n.topic.rsplit(".", 1)[-1] for n in notifications(ledger))


def rollups(ledger: Ledger) -> list[dict[str, Any]]:
    return [decode_state(n.state) | {"id": n.id}
            for n in notifications(ledger, (DAY_ROLLED_UP_TOPIC,))]


def run(ledger: Ledger, before: date = date(2026, 2, 1), position: int | None = None,
        grace: timedelta | None = NO_GRACE, **kwargs: Any):
    """Compact as if the projector had applied everything stored so far."""
    if position is None:
        position = ledger.recorder.max_notification_id() or 0
    return compact(ledger, before=before, projected_position=position, grace=grace, **kwargs)


def check(ledger: Ledger, model: Model, *others: Ledger) -> None:
    """Every reading agrees with the model: the log, this ledger, fresh ledgers."""
    assert fold_log(ledger) == model.records()
    for reader in (ledger, *others):
        for account in model.accounts():
            assert reader.account_totals(account) == model.totals(account)


def history_charge(n: int) -> dict[str, Any]:
    return charge(n, account=("acme", "zeta")[n % 2], user=f"u{n % 3 % 2}",
                  day=(DAY1, DAY2, DAY3)[n % 3], model=("a", "b")[n % 4 // 2])


def history(ledger: Ledger, model: Model, count: int = 30) -> None:
    """Two accounts, three days, two users, two models, a few reversals."""
    for n in range(count):
        model.record(ledger, history_charge(n))
    for n in (0, 4, 8):
        if n < count:
            model.reverse(ledger, f"c-{n}")


# -- tests -------------------------------------------------------------------
