"""What the reliability tests compare the real ledger with: plain Python, no store.

:class:`Model` remembers every accepted charge and reversal with the log
position it landed at, so the live daily billing records expected at any
projector position are a fold of the model's prefix up to that position.
:class:`Observer` reads the store the way the tests check it: new events (to
learn those positions), the live table, and a fault switch that makes the Nth
SQL statement on an engine fail (a crash at a random point of a transaction).
"""

from __future__ import annotations

import json
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Iterator
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from ledger.domain import CHARGE_RECORDED_TOPIC, CHARGE_REVERSED_TOPIC
from ledger.store.schema import daily_billing_records

#: (account_id, billing date ISO, user_id, charge_type, provider or '', model or '')
Key = tuple[str, str, str, str, str, str]
Figures = tuple[int, int, int, int]
VALUES = ("charges", "prompt_tokens", "completion_tokens", "total_tokens")


def unpriced_sums(sums: dict[str, int]) -> dict[str, int]:
    """Token sums as the records' conservation figures: no prices here, so every charge is unpriced."""
    return {**sums, "cost_micros": 0, "unpriced_charges": sums["charges"]}


class Crash(Exception):
    """A fault injected on purpose: the process 'dies' at this point."""


@dataclass(frozen=True)
class Accepted:
    """A charge the ledger took: its normalised facts and where it landed."""

    fields: dict[str, Any]
    key: Key
    figures: Figures
    position: int


@dataclass
class Model:
    """Every accepted charge and reversal, in log order."""

    zone: ZoneInfo
    charges: dict[str, Accepted] = field(default_factory=dict)
    reversals: dict[str, int] = field(default_factory=dict)  # charge id -> position

    def key_of(self, fields: dict[str, Any]) -> Key:
        moment = datetime.fromisoformat(fields["occurred_at"])
        day = moment.astimezone(self.zone).date().isoformat()
        return (fields["account_id"], day, fields["user_id"], fields["charge_type"],
                fields.get("provider") or "", fields.get("model") or "")

    def accept(self, fields: dict[str, Any], position: int) -> None:
        prompt, completion = fields["prompt_tokens"], fields["completion_tokens"]
        figures = (1, prompt, completion, prompt + completion)
        self.charges[fields["charge_id"]] = Accepted(dict(fields), self.key_of(fields), figures, position)

    def reverse(self, charge_id: str, position: int) -> None:
        self.reversals[charge_id] = position

    def records(self, upto: int | None = None) -> dict[Key, Figures]:
        """The daily billing records a projection at ``upto`` (None: the end) must hold."""
        rows: dict[Key, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        for charge_id, c in self.charges.items():
            if upto is None or c.position <= upto:
                _add(rows[c.key], c.figures, 1)
            reversed_at = self.reversals.get(charge_id)
            if reversed_at is not None and (upto is None or reversed_at <= upto):
                _add(rows[c.key], c.figures, -1)
        return {k: tuple(v) for k, v in rows.items() if any(v)}  # type: ignore[misc]

    def account_totals(self) -> dict[str, Figures]:
        totals: dict[str, list[int]] = {}
        for charge_id, c in self.charges.items():
            row = totals.setdefault(c.fields["account_id"], [0, 0, 0, 0])
            if charge_id not in self.reversals:  # a reversal cancels it: counted once, then once less
                _add(row, c.figures, 1)
        return {k: tuple(v) for k, v in totals.items()}  # type: ignore[misc]

    def sums(self) -> dict[str, int]:
        total = [0, 0, 0, 0]
        for figures in self.account_totals().values():
            _add(total, figures, 1)
        return unpriced_sums(dict(zip(VALUES, total)))


def _add(row: list[int], figures: Figures, sign: int) -> None:
    for i, value in enumerate(figures):
        row[i] += sign * value


class Observer:
    """Reads what the ledger stored, for checks (never through the code under test)."""

    def __init__(self, ledger: Any) -> None:
        self.ledger = ledger
        self.events = ledger.recorder.events_record_cls.__table__
        self.seen = self.head()

    def head(self) -> int:
        self.ledger.sequence()  # acknowledged charges still in the intake (PostgreSQL) join the log
        with self.ledger.recorder.transaction(commit=False) as session:
            return int(session.execute(sa.select(sa.func.max(self.events.c.id))).scalar() or 0)

    def new_events(self) -> list[tuple[int, str, dict[str, Any]]]:
        """(position, topic, state) of charge and reversal events stored since the last call."""
        query = (
            sa.select(self.events.c.id, self.events.c.topic, self.events.c.state)
            .where(self.events.c.id > self.seen)
            .order_by(self.events.c.id)
        )
        self.ledger.sequence()
        with self.ledger.recorder.transaction(commit=False) as session:
            rows = session.execute(query).all()
        if rows:
            self.seen = int(rows[-1][0])
        return [
            (int(i), topic, json.loads(bytes(state)))
            for i, topic, state in rows
            if topic in (CHARGE_RECORDED_TOPIC, CHARGE_REVERSED_TOPIC)
        ]

    def live(self) -> dict[Key, Figures]:
        """The live daily billing records, all-zero rows left out."""
        t = daily_billing_records
        columns = [t.c.account_id, t.c.billing_date, t.c.user_id, t.c.charge_type, t.c.provider,
                   t.c.model, *(t.c[name] for name in VALUES)]
        with self.ledger.recorder.transaction(commit=False) as session:
            rows = session.execute(sa.select(*columns)).all()
        found = {}
        for row in rows:
            day = row[1].isoformat() if isinstance(row[1], date) else str(row[1])
            figures = tuple(int(v) for v in row[6:])
            if any(figures):
                found[(row[0], day, row[2], row[3], row[4], row[5])] = figures
        return found


@contextmanager
def statement_fault(engine: sa.engine.Engine, countdown: int) -> Iterator[list[str]]:
    """The ``countdown``-th SQL statement sent through SQLAlchemy raises :class:`Crash`.

    The statement never reaches the database; whatever transaction it belonged
    to rolls back, as if the process had died there. Yields the statement seen
    (empty if the code ran fewer statements).
    """
    hit: list[str] = []
    remaining = [countdown]

    def before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        remaining[0] -= 1
        if remaining[0] == 0:
            hit.append(statement.split()[0] if statement.strip() else statement)
            raise Crash(f"statement {countdown}: {statement[:60]}")

    sa.event.listen(engine, "before_cursor_execute", before)
    try:
        yield hit
    finally:
        sa.event.remove(engine, "before_cursor_execute", before)
