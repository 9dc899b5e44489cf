"""The queries billing reads: records over a date range, grouped as asked, and account totals.

Every query reads ``daily_billing_records`` only (never the log), takes a
Ledger or a SQLAlchemy engine, and returns plain dicts: unspecified provider
or model as None, ``billing_date`` as a ``date``, figures as ints. Groups
whose figures are all zero (charges fully reversed) are left out.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Any

from ledger.store import report_queries
from ledger.store.report_queries import Filters
from ledger.store.schema import KEY_COLUMNS, VALUE_COLUMNS

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from ledger.store.report_queries import Source

#: What a record's key is made of, in the order reports return them (the
#: schema's ``KEY_COLUMNS`` is the same set in primary-key order).
GROUP_COLUMNS = ("account_id", "user_id", "billing_date", "charge_type", "provider", "model")
#: Short names accepted in ``group_by``.
ALIASES = {"account": "account_id", "user": "user_id", "date": "billing_date", "day": "billing_date"}
#: The seed's DailyBillingRecord: per account, user, date and charge type.
SEED_VIEW_GROUPS = ("account_id", "user_id", "billing_date", "charge_type")


def records(
    source: Source,
    account_id: str | None = None,
    start: date | str | None = None,
    end: date | str | None = None,
    group_by: Iterable[str] | None = None,
    charge_type: str | None = None,
    provider: str | None = None,
    model: str | None = None,
    user_id: str | None = None,
) -> list[dict[str, Any]]:
    """Daily billing records summed per ``group_by`` (default: every key column).

    ``start`` and ``end`` are inclusive billing dates. Key columns not grouped
    by come back as None.
    """
    groups = _group_columns(group_by)
    filters = Filters(
        account_id=account_id,
        user_id=user_id,
        charge_type=charge_type,
        provider=provider,
        model=model,
        start=None if start is None else _as_date(start),
        end=None if end is None else _as_date(end),
    )
    rows = report_queries.grouped_records(source, groups, _sort_order(groups), filters)
    return _records(rows, groups)


def daily_billing_view(
    source: Source,
    account_id: str | None = None,
    start: date | str | None = None,
    end: date | str | None = None,
    user_id: str | None = None,
    charge_type: str | None = None,
) -> list[dict[str, Any]]:
    """The seed's DailyBillingRecord rows: one per account, user, billing date and charge type."""
    return records(
        source,
        account_id=account_id,
        start=start,
        end=end,
        group_by=SEED_VIEW_GROUPS,
        user_id=user_id,
        charge_type=charge_type,
    )


def account_summaries(
    source: Source, start: date | str | None = None, end: date | str | None = None
) -> list[dict[str, Any]]:
    """Totals per account: figures, number of users, first and last billing date."""
    rows = report_queries.account_rows(
        source, None if start is None else _as_date(start), None if end is None else _as_date(end)
    )
    return [
        {
            "account_id": row.account_id,
            **{name: int(row._mapping[name]) for name in VALUE_COLUMNS},
            "users": int(row.users),
            "first_date": _as_date(row.first_date),
            "last_date": _as_date(row.last_date),
        }
        for row in rows
    ]


def _group_columns(group_by: Iterable[str] | None) -> tuple[str, ...]:
    if group_by is None:
        return GROUP_COLUMNS
    if isinstance(group_by, str):
        group_by = [part.strip() for part in group_by.split(",") if part.strip()]
    wanted = {ALIASES.get(name, name) for name in group_by}
    unknown = sorted(wanted - set(GROUP_COLUMNS))
    if unknown:
        raise ValueError(f"cannot group by {', '.join(unknown)}; choose from {', '.join(GROUP_COLUMNS)}")
    return tuple(name for name in GROUP_COLUMNS if name in wanted)


def _sort_order(groups: Sequence[str]) -> list[str]:
    """Dates first within an account, as the primary key orders rows: how a bill reads."""
    return [name for name in KEY_COLUMNS if name in groups]


def _records(rows: Iterable[Sequence[Any]], groups: Sequence[str]) -> list[dict[str, Any]]:
    """Result rows (``groups`` then ``VALUE_COLUMNS``) as report dicts, every key column present."""
    names = (*groups, *VALUE_COLUMNS)
    template: dict[str, Any] = dict.fromkeys(GROUP_COLUMNS + VALUE_COLUMNS)
    dated = "billing_date" in groups
    records = []
    for row in rows:
        record = template.copy()
        record.update(zip(names, row))
        if dated and record["billing_date"].__class__ is not date:
            record["billing_date"] = _as_date(record["billing_date"])
        for name in VALUE_COLUMNS:
            if record[name].__class__ is not int:  # sums come back as Decimal on PostgreSQL
                record[name] = int(record[name])
        records.append(record)
    return records


def _as_date(value: date | str) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))
