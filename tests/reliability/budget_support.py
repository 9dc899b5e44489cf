"""What the budget reliability tests share: charges of a known token count, and the store's row counts.

The checks read the store directly (row counts, live billing records), never
through the budget code under test, so "nothing was stored" and "spent
equals the records" are facts about the tables, not the ledger's own word.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from ledger import Ledger
from ledger.store.schema import (
    budget_alerts,
    budgets,
    charge_index,
    credit_grants,
    daily_billing_records,
    holds,
)


def tokens_charge(charge_id: str, tokens: int, *, user_id: str = "u1", occurred_at: datetime | None = None,
                  account_id: str | None = None) -> dict[str, Any]:
    """Fields of a charge of exactly ``tokens`` total tokens (split between prompt and completion)."""
    prompt = tokens // 3
    fields: dict[str, Any] = {
        "charge_id": charge_id,
        "user_id": user_id,
        "charge_type": "completion",
        "provider": "openai",
        "model": "m1",
        "prompt_tokens": prompt,
        "completion_tokens": tokens - prompt,
        "occurred_at": occurred_at or datetime.now(UTC),
    }
    if account_id is not None:
        fields["account_id"] = account_id
    return fields


def stored_counts(ledger: Ledger) -> dict[str, int]:
    """Rows in every table a budget call could write: events, index, holds, budgets, grants, alerts."""
    ledger.sequence()  # acknowledged charges still in the PostgreSQL intake join the log
    events = ledger.recorder.events_record_cls.__table__  # type: ignore[attr-defined]
    tables = {"events": events, "charge_index": charge_index, "holds": holds, "budgets": budgets,
              "credit_grants": credit_grants, "budget_alerts": budget_alerts}
    with ledger.store.transaction(commit=False) as session:
        return {name: int(session.execute(sa.select(sa.func.count()).select_from(table)).scalar() or 0)
                for name, table in tables.items()}


def billing_tokens(ledger: Ledger, account_id: str) -> dict[date, int]:
    """Net total tokens per billing date of the account in the live daily billing records."""
    t = daily_billing_records
    query = (
        sa.select(t.c.billing_date, sa.func.sum(t.c.total_tokens))
        .where(t.c.account_id == account_id)
        .group_by(t.c.billing_date)
    )
    with ledger.store.transaction(commit=False) as session:
        rows = session.execute(query).all()
    result: dict[date, int] = {}
    for day, tokens in rows:
        key = day if isinstance(day, date) else date.fromisoformat(str(day))
        if int(tokens or 0):
            result[key] = int(tokens)
    return result


def noon_zone(now: datetime | None = None) -> str:
    """An ``Etc/GMT±N`` zone where it is about noon now: the billing day's boundary is ≥ 10 hours away.

    A test that compares a ``day`` budget's spent with the charges dated
    "today" must not see the day change under it; midnight is placed far
    from the run instead of hoping the run avoids it.
    """
    hour = (now or datetime.now(UTC)).hour
    offset = 12 - hour  # local = UTC + offset ≈ 12:00; offset in -11..12
    if offset == 0:
        return "Etc/GMT"
    # Etc/GMT-N is N hours *ahead* of UTC (POSIX sign convention).
    return f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"


def day_of(moment: datetime, zone: Any) -> date:
    return moment.astimezone(zone).date()


def shift_days(moment: datetime, days: int) -> datetime:
    return moment + timedelta(days=days)
