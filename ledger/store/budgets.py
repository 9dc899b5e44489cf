"""Budgets, reservations' holds and credit grants: their rows, and the lock reservations take.

The definitions' history is in the log (the Budget and CreditLine
aggregates' events); each row here is written in the same transaction as the
event that set it, so a row always matches its aggregate. Reservations on a
budget take its row's lock (``FOR UPDATE``) to check and hold in one step;
nothing on the recording path touches these rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ledger.store.locks import LockKey
from ledger.store.schema import budgets, credit_grants, holds, stored_utc

_TIMES = ("updated_at", "created_at", "expires_at", "settled_at", "granted_at")


def _row(row: Any) -> dict[str, Any]:
    values = dict(row._mapping)
    for name in _TIMES:
        if values.get(name) is not None:
            values[name] = stored_utc(values[name])
    return values


def _insert(dialect: str, table: sa.Table) -> Any:
    return postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)


# -- budgets ----------------------------------------------------------------------------------


def put_budget(session: Session, dialect: str, values: Mapping[str, Any]) -> None:
    """Create or replace a budget's row."""
    insert = _insert(dialect, budgets).values(**values)
    session.execute(insert.on_conflict_do_update(
        index_elements=["budget_id"], set_={k: v for k, v in values.items() if k != "budget_id"}
    ))


def delete_budget(session: Session, budget_id: str) -> None:
    session.execute(budgets.delete().where(budgets.c.budget_id == budget_id))


def budget_row(session: Session, budget_id: str) -> dict[str, Any] | None:
    row = session.execute(sa.select(budgets).where(budgets.c.budget_id == budget_id)).first()
    return None if row is None else _row(row)


def budget_rows(session: Session, account_id: str | None = None) -> list[dict[str, Any]]:
    query = sa.select(budgets).order_by(budgets.c.account_id, budgets.c.budget_id)
    if account_id is not None:
        query = query.where(budgets.c.account_id == account_id)
    return [_row(row) for row in session.execute(query)]


def budgets_in_scope(
    session: Session, account_id: str, user_id: str | None, *, lock: bool
) -> list[dict[str, Any]]:
    """The budgets a reservation of (account, user) must respect; each one's reservation lock taken when ``lock``.

    A budget narrowed to a user applies only to that user's reservations;
    an account-wide one to every reservation of the account.
    """
    scope = budgets.c.user_id.is_(None)
    if user_id is not None:
        scope = sa.or_(scope, budgets.c.user_id == user_id)
    query = sa.select(budgets).where(budgets.c.account_id == account_id, scope).order_by(budgets.c.budget_id)
    if lock and session.get_bind().dialect.name == "postgresql":
        # The locks reservations.sql takes, in the same order (of their keys, so two
        # reservations never wait in a cycle): advisory, so no row is written.
        keys = session.execute(
            sa.select(sa.func.hashtext(budgets.c.budget_id)).where(budgets.c.account_id == account_id, scope)
            .distinct().order_by(sa.func.hashtext(budgets.c.budget_id))
        ).scalars().all()
        for key in keys:
            session.execute(sa.text("SELECT pg_advisory_xact_lock(:k, :h)"), {"k": int(LockKey.BUDGET), "h": key})
    return [_row(row) for row in session.execute(query)]


def accounts_with_limits(session: Session) -> list[str]:
    """Accounts that have a budget or a credit grant: those whose spend is read."""
    query = sa.union(sa.select(budgets.c.account_id), sa.select(credit_grants.c.account_id))
    return sorted(account for (account,) in session.execute(query))


# -- holds ------------------------------------------------------------------------------------


def find_hold(session: Session, reservation_id: str, *, lock: bool = False) -> dict[str, Any] | None:
    query = sa.select(holds).where(holds.c.reservation_id == reservation_id)
    if lock and session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    row = session.execute(query).first()
    return None if row is None else _row(row)


def insert_hold(session: Session, values: Mapping[str, Any]) -> None:
    session.execute(holds.insert().values(**values))


def settle_hold(session: Session, reservation_id: str, state: str, charge_id: str | None, at: datetime) -> None:
    session.execute(
        holds.update()
        .where(holds.c.reservation_id == reservation_id)
        .values(state=state, charge_id=charge_id, settled_at=at)
    )


# -- credit grants ----------------------------------------------------------------------------


def insert_grant(session: Session, dialect: str, values: Mapping[str, Any]) -> bool:
    """Store a grant; False when its id was stored before (nothing changes)."""
    result = session.execute(
        _insert(dialect, credit_grants).values(**values).on_conflict_do_nothing(index_elements=["grant_id"])
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def grant_row(session: Session, grant_id: str) -> dict[str, Any] | None:
    row = session.execute(sa.select(credit_grants).where(credit_grants.c.grant_id == grant_id)).first()
    return None if row is None else _row(row)


def grant_rows(session: Session, account_id: str) -> list[dict[str, Any]]:
    query = (
        sa.select(credit_grants)
        .where(credit_grants.c.account_id == account_id)
        .order_by(credit_grants.c.granted_at, credit_grants.c.grant_id)
    )
    return [_row(row) for row in session.execute(query)]
