"""Consistency checks: what a scenario recorded must be what the store counts.

These never look at speed. Any mismatch raises :class:`bench.rows.Inconsistent`.
"""

from __future__ import annotations

from typing import Iterable

import sqlalchemy as sa

from bench.rows import Inconsistent
from bench.workload import Tally
from ledger import Ledger, UnknownAccount
from ledger.store.schema import charge_index


def expect(what: str, actual: Tally, expected: Tally) -> None:
    if actual != expected:
        raise Inconsistent(f"{what}: counted {actual.as_dict()}, expected {expected.as_dict()}")


def account_totals(ledger: Ledger, accounts: Iterable[str]) -> Tally:
    """Sum of the accounts' running totals, read through the ledger."""
    tally = Tally()
    for account in accounts:
        try:
            totals = ledger.account_totals(account)
        except UnknownAccount:
            continue
        tally.merge(Tally(totals.charges, totals.prompt_tokens, totals.completion_tokens, totals.total_tokens))
    return tally


def index_count(ledger: Ledger) -> int:
    """Rows in the charge-id index (one per accepted charge id)."""
    engine = ledger.store.engine
    assert isinstance(engine, sa.engine.Engine)
    with engine.connect() as connection:
        count = connection.execute(sa.select(sa.func.count()).select_from(charge_index)).scalar_one()
        connection.rollback()
    return int(count)


def index_ids(ledger: Ledger, prefix: str) -> set[str]:
    """The charge ids in the charge-id index that start with ``prefix``."""
    engine = ledger.store.engine
    assert isinstance(engine, sa.engine.Engine)
    query = sa.select(charge_index.c.charge_id).where(charge_index.c.charge_id.startswith(prefix, autoescape=True))
    with engine.connect() as connection:
        ids = set(connection.execute(query).scalars())
        connection.rollback()
    return ids


def check_recorded(url: str, accounts: Iterable[str], expected: Tally, *, accepted: int | None = None) -> None:
    """A fresh ledger on ``url`` shows exactly the expected totals and index rows."""
    ledger = Ledger.from_url(url)
    try:
        expect("account totals", account_totals(ledger, accounts), expected)
        rows = index_count(ledger)
        wanted = expected.charges if accepted is None else accepted
        if rows != wanted:
            raise Inconsistent(f"charge-id index holds {rows} ids, {wanted} charges were recorded")
    finally:
        ledger.close()


def projected_totals(ledger: Ledger) -> Tally:
    """Sums over ``daily_billing_records``."""
    from ledger.store.read_model import table_totals

    with ledger.store.transaction(commit=False) as session:
        totals = table_totals(session)
    return Tally(*(totals[name] for name in ("charges", "prompt_tokens", "completion_tokens", "total_tokens")))
