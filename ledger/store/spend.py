"""What budgets count: spend per scope and period, read exactly without a counter writers share.

Every acknowledged charge has its index row, and the row carries its user,
``occurred_at``, cost and total tokens (written with the row, in the charge's
own transaction). Spent is therefore a
sum over rows, never a counter that writers update: recording on an account
with budgets takes no lock a reservation or another writer waits for.

To keep that sum short, rows are *folded*: a fold marks index rows folded and
adds their figures to ``ledger_spend`` (per account, billing date and user)
in one transaction. Spent is the folded sums plus the rows not yet folded,
read in **one statement** (one snapshot), so a fold committing meanwhile is
seen whole or not at all: nothing is missed, nothing counted twice. A
reversal of a folded charge takes its figures back out of ``ledger_spend``
in the reversal's transaction.

Buckets are billing dates in the ledger's time zone; the zone folds were made
in is kept in the tracking row ``ledger_spend``, and a fold in another zone is
refused rather than mixing dates of two zones.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ledger.billing_keys import billing_date
from ledger.errors import LedgerError
from ledger.store.locks import LockKey
from ledger.store.schema import (
    charge_index,
    projection_tracking,
    spend,
    stored_utc,
)

if TYPE_CHECKING:
    from ledger.store.base import Store

#: The tracking row that remembers the zone of ``ledger_spend``'s dates.
SPEND_TRACKING = "ledger_spend"
#: Rows one fold moves at most (a fold runs again when more are left).
FOLD_BATCH = 5_000


class SpendZoneMismatch(LedgerError):
    """Spend was folded into billing dates of another time zone than the ledger's."""


@dataclass(frozen=True, slots=True)
class Scope:
    """Whose spend, and when: an account, optionally one user, and a window.

    ``start``/``end`` are billing dates (``end`` exclusive) for the folded
    sums; ``start_at``/``end_at`` the same window as UTC instants for rows not
    yet folded. All four None: every charge ever (a ``total`` budget).
    """

    account_id: str
    user_id: str | None = None
    start: date | None = None
    end: date | None = None
    start_at: datetime | None = None
    end_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    """A scope's figures at one snapshot: spent (net of reversals) and held by active reservations."""

    spent_micros: int
    spent_tokens: int
    held_micros: int
    held_tokens: int
    unfolded: int


_USAGE_SQL = "\n".join(
    line for line in (Path(__file__).parent / "usage.sql").read_text().splitlines() if not line.startswith("--")
)
_DATES = ("d0", "d1")
_TIMES = ("t0", "t1", "now")


@lru_cache(maxsize=64)
def _usage_statement(count: int) -> sa.TextClause:
    """``usage.sql`` once per scope, as one statement (built once per number of scopes)."""
    parts = [_USAGE_SQL.replace("_N", f"_{n}") for n in range(count)]
    statement = sa.text("\nUNION ALL\n".join(parts))
    binds = [sa.bindparam("now", type_=sa.DateTime(timezone=True))]
    for n in range(count):
        binds += [sa.bindparam(f"{name}_{n}", type_=sa.Date) for name in _DATES]
        binds += [sa.bindparam(f"{name}_{n}", type_=sa.DateTime(timezone=True)) for name in ("t0", "t1")]
        binds += [sa.bindparam(f"u_{n}", type_=sa.String), sa.bindparam(f"a_{n}", type_=sa.String),
                  sa.bindparam(f"n_{n}", type_=sa.Integer)]
    return statement.bindparams(*binds)


def read_usage(session: Session, scopes: Sequence[Scope], now: datetime) -> list[Usage]:
    """Each scope's usage, read in one statement (one snapshot) inside ``session``'s transaction."""
    if not scopes:
        return []
    params: dict[str, Any] = {"now": now.astimezone(UTC)}
    for n, scope in enumerate(scopes):
        params.update({
            f"n_{n}": n, f"a_{n}": scope.account_id, f"u_{n}": scope.user_id,
            f"d0_{n}": scope.start, f"d1_{n}": scope.end, f"t0_{n}": scope.start_at, f"t1_{n}": scope.end_at,
        })
    found = {row[0]: row[1:] for row in session.execute(_usage_statement(len(scopes)), params)}
    return [Usage(*(int(value) for value in found[n])) for n in range(len(scopes))]


def _unfolded_conditions(scope: Scope) -> list[sa.ColumnElement[bool]]:
    conditions = [
        charge_index.c.account_id == scope.account_id,
        sa.not_(charge_index.c.folded),
        charge_index.c.reversed_at.is_(None),
    ]
    if scope.user_id is not None:
        conditions.append(charge_index.c.user_id == scope.user_id)
    if scope.start_at is not None:
        conditions.append(charge_index.c.occurred_at >= scope.start_at)
    if scope.end_at is not None:
        conditions.append(charge_index.c.occurred_at < scope.end_at)
    return conditions


def daily_spend(session: Session, account_id: str, since: date, since_at: datetime, zone: ZoneInfo) -> dict[date, int]:
    """The account's cost per billing date from ``since`` on (folded and not), read in one statement."""
    folded = sa.select(
        spend.c.billing_date.label("day"),
        sa.null().label("at"),
        sa.func.sum(spend.c.cost_micros).label("cost"),
    ).where(spend.c.account_id == account_id, spend.c.billing_date >= since).group_by(spend.c.billing_date)
    scope = Scope(account_id, start_at=since_at)
    loose = sa.select(
        sa.null().label("day"), charge_index.c.occurred_at.label("at"), charge_index.c.cost_micros.label("cost")
    ).where(*_unfolded_conditions(scope), charge_index.c.cost_micros.is_not(None))
    days: dict[date, int] = {}
    for day, at, cost in session.execute(sa.union_all(folded, loose)):
        if cost is None:
            continue
        key = _as_date(day) if day is not None else billing_date(stored_utc(_as_datetime(at)), zone)
        days[key] = days.get(key, 0) + int(cost)
    return days


# -- folding ----------------------------------------------------------------------------------


def fold(session: Session, dialect: str, zone: ZoneInfo, account_id: str, limit: int = FOLD_BATCH) -> int:
    """Fold up to ``limit`` of an account's rows into ``ledger_spend``; how many were folded.

    On PostgreSQL one folder per account at a time (a try-lock: a second one
    returns 0 at once); the rows it marks are row-locked, so a reversal of
    one of them waits and then takes its figures back out of the bucket.
    """
    if dialect == "postgresql":
        got = session.execute(
            sa.text("SELECT pg_try_advisory_xact_lock(:k, hashtext(:a))"),
            {"k": int(LockKey.SPEND_FOLD), "a": account_id},
        ).scalar()
        if not got:
            return 0
    _check_zone(session, dialect, zone)
    pick = (
        sa.select(charge_index.c.account_id, charge_index.c.charge_id)
        .where(sa.not_(charge_index.c.folded), charge_index.c.account_id == account_id)
        .limit(limit)
    )
    statement = (
        charge_index.update()
        .where(
            sa.tuple_(charge_index.c.account_id, charge_index.c.charge_id).in_(pick),
            sa.not_(charge_index.c.folded),
        )
        .values(folded=True)
        .returning(
            charge_index.c.account_id,
            charge_index.c.user_id,
            charge_index.c.occurred_at,
            charge_index.c.cost_micros,
            charge_index.c.total_tokens,
            charge_index.c.reversed_at,
            charge_index.c.payload,
        )
    )
    buckets: dict[tuple[str, date, str], list[int]] = {}
    moved = 0
    for account, user, occurred_at, cost, tokens, reversed_at, payload in session.execute(statement):
        moved += 1
        if reversed_at is not None:
            continue
        if occurred_at is None:  # a row written before the columns existed
            user, occurred_at, cost, tokens = _facts_of(payload)
        day = billing_date(stored_utc(_as_datetime(occurred_at)), zone)
        figures = buckets.setdefault((account, day, user), [0, 0, 0])
        figures[0] += 1
        figures[1] += int(cost or 0)
        figures[2] += int(tokens or 0)
    add_to_buckets(session, dialect, ((key, figures) for key, figures in sorted(buckets.items())))
    return moved


def add_to_buckets(
    session: Session, dialect: str, items: Iterable[tuple[tuple[str, date, str], Sequence[int]]]
) -> None:
    """Add (charges, cost, tokens) to each (account, billing date, user) bucket."""
    rows = [
        {"account_id": a, "billing_date": d, "user_id": u, "charges": f[0], "cost_micros": f[1], "total_tokens": f[2]}
        for (a, d, u), f in items
    ]
    if not rows:
        return
    insert = postgresql.insert(spend) if dialect == "postgresql" else sqlite.insert(spend)
    session.execute(
        insert.on_conflict_do_update(
            index_elements=["account_id", "billing_date", "user_id"],
            set_={
                "charges": spend.c.charges + insert.excluded.charges,
                "cost_micros": spend.c.cost_micros + insert.excluded.cost_micros,
                "total_tokens": spend.c.total_tokens + insert.excluded.total_tokens,
            },
        ),
        rows,
    )


def mark_reversed(
    session: Session, dialect: str, zone: ZoneInfo | None, account_id: str, charge_id: str, reversed_at: datetime
) -> bool:
    """Mark a charge reversed in the index; a folded one's figures leave its bucket. False: not there, or already reversed."""
    row = session.execute(
        charge_index.update()
        .where(
            charge_index.c.account_id == account_id,
            charge_index.c.charge_id == charge_id,
            charge_index.c.reversed_at.is_(None),
        )
        .values(reversed_at=reversed_at)
        .returning(
            charge_index.c.folded,
            charge_index.c.user_id,
            charge_index.c.occurred_at,
            charge_index.c.cost_micros,
            charge_index.c.total_tokens,
            charge_index.c.payload,
        )
    ).first()
    if row is None:
        return False
    folded, user, occurred_at, cost, tokens, payload = row
    if folded:
        if occurred_at is None:
            user, occurred_at, cost, tokens = _facts_of(payload)
        day = billing_date(stored_utc(_as_datetime(occurred_at)), zone or _zone_of(session))
        add_to_buckets(session, dialect, [((account_id, day, user), (-1, -int(cost or 0), -int(tokens or 0)))])
    return True


def _check_zone(session: Session, dialect: str, zone: ZoneInfo) -> None:
    """Record the zone of the first fold; refuse a fold in another zone."""
    name = zone.key
    stored = session.execute(
        sa.select(projection_tracking.c.time_zone).where(projection_tracking.c.name == SPEND_TRACKING)
    ).first()
    if stored is None:
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        session.execute(
            insert(projection_tracking)
            .values(name=SPEND_TRACKING, position=0, time_zone=name)
            .on_conflict_do_nothing(index_elements=["name"])
        )
        return
    if stored[0] and stored[0] != name:
        raise SpendZoneMismatch(
            f"budget spend is kept in billing dates of {stored[0]}, but this ledger bills in {name} "
            "(LEDGER_TIME_ZONE): run with the zone the ledger was started in"
        )


def _zone_of(session: Session) -> ZoneInfo:
    stored = session.execute(
        sa.select(projection_tracking.c.time_zone).where(projection_tracking.c.name == SPEND_TRACKING)
    ).scalar()
    return ZoneInfo(stored or "UTC")


# -- the typed columns ------------------------------------------------------------------------


def _facts_of(payload: str) -> tuple[str | None, datetime, int | None, int | None]:
    """(user, occurred_at, cost, total tokens) from an index row's payload text."""
    data = json.loads(payload)
    occurred = datetime.fromisoformat(data["occurred_at"])
    if occurred.tzinfo is None:
        occurred = occurred.replace(tzinfo=UTC)
    return data.get("user_id"), occurred.astimezone(UTC), data.get("cost_micros"), data.get("total_tokens")


def sqlite_facts(payload: str) -> tuple[str | None, str, int | None, int | None]:
    """The typed columns of a new SQLite index row, the time in SQLAlchemy's SQLite text form (naive UTC)."""
    user, occurred, cost, tokens = _facts_of(payload)
    return user, occurred.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f"), cost, tokens


def backfill(connection: sa.engine.Connection) -> None:
    """Fill the typed columns of rows written before they existed (at upgrade, in its transaction)."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(
            "UPDATE ledger_charge_index SET user_id = payload::jsonb->>'user_id', "
            "occurred_at = (payload::jsonb->>'occurred_at')::timestamptz, "
            "cost_micros = (payload::jsonb->>'cost_micros')::bigint, "
            "total_tokens = (payload::jsonb->>'total_tokens')::bigint WHERE occurred_at IS NULL"
        )
        return
    rows = connection.exec_driver_sql(
        "SELECT account_id, charge_id, payload FROM ledger_charge_index WHERE occurred_at IS NULL"
    ).fetchall()
    for account_id, charge_id, payload in rows:
        connection.exec_driver_sql(
            "UPDATE ledger_charge_index SET user_id = ?, occurred_at = ?, cost_micros = ?, total_tokens = ? "
            "WHERE account_id = ? AND charge_id = ?",
            (*sqlite_facts(payload), account_id, charge_id),
        )


def _as_datetime(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(value)


# -- audits ------------------------------------------------------------------------------------


@contextmanager
def snapshot(store: Store) -> Iterator[sa.engine.Connection]:
    """A read-only transaction that sees one snapshot of every table (REPEATABLE READ on PostgreSQL).

    An audit reads the index, the spend sums, the log and the intake in it,
    so writers recording meanwhile never make the two sides disagree.
    """
    with store.engine.connect() as connection:
        if store.is_postgres:
            connection = connection.execution_options(isolation_level="REPEATABLE READ")
        with connection.begin():
            yield connection


def pending_states(connection: sa.engine.Connection, store: Store, originator_id: Any) -> list[bytes]:
    """ChargeRecorded states acknowledged into PostgreSQL's intake and not yet in the log (none on SQLite)."""
    if not store.is_postgres:
        return []
    rows = connection.execute(
        sa.text("SELECT state FROM ledger_intake WHERE originator_id = :o ORDER BY seq"), {"o": originator_id}
    )
    return [bytes(state) for (state,) in rows]
