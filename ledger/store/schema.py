"""Every table the ledger keeps beside the library's event log, and the one way they are created.

The event store's own tables (``ledger_events``, ``ledger_snapshots``) are
the library's; everything else lives here, on one ``MetaData``, in the same
database, so a write and what it depends on commit in one transaction:

* the charge-id index (account, charge id) -> the facts a charge was
  recorded with (see :mod:`ledger.store.charge_index` for its upgrade);
* the read model: daily billing records, their rebuild twin, and each
  projection's position;
* the service's tables: API keys, dashboard sessions, audit runs, and the
  charges a background task could not record.

:func:`ensure_schema` creates whatever is missing, once per engine, under
the schema lock; the ledger runs it when it starts, so no other code
creates a table.

Unspecified provider or model is stored as ``''`` in the billing records'
key columns (:data:`UNSPECIFIED`): a primary key cannot hold NULL, and the
ledger never stores an empty string (validation turns one into
"unspecified"). Reports turn ``''`` back into None.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import sqlalchemy as sa

from ledger.measures import MEASURES
from ledger.store.locks import LockKey

metadata = sa.MetaData()

# -- the charge-id index ---------------------------------------------------------

#: The index. Primary key (account, charge id): each lookup names both.
charge_index = sa.Table(
    "ledger_charge_index",
    metadata,
    sa.Column("account_id", sa.String(256), primary_key=True),
    sa.Column("charge_id", sa.String(256), primary_key=True),
    sa.Column("payload_hash", sa.String(64), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("reversed_at", sa.DateTime(timezone=True), nullable=True),
    # What budgets count, typed (written with the row, from the charge's
    # facts): whose spend, when, how much. ``folded`` marks a row
    # whose figures were added to ledger_spend (see ledger.store.spend).
    sa.Column("user_id", sa.String(256), nullable=True),
    sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("cost_micros", sa.BigInteger, nullable=True),
    sa.Column("total_tokens", sa.BigInteger, nullable=True),
    sa.Column("folded", sa.Boolean, nullable=False, default=False, server_default=sa.false()),
)
#: The rows not yet folded into ledger_spend, by account and time: what a
#: budget's spent adds to the folded sums. Folding takes rows out of it.
UNFOLDED_INDEX = sa.Index(
    "ledger_charge_index_unfolded",
    charge_index.c.account_id,
    charge_index.c.occurred_at,
    postgresql_where=sa.not_(charge_index.c.folded),
    sqlite_where=sa.not_(charge_index.c.folded),
)

# -- budgets, reservations, credits and alerts ---------------------------------------

#: Folded spend: per account, billing date and user, the cost and tokens of
#: the charges folded so far (net of reversals).
spend = sa.Table(
    "ledger_spend",
    metadata,
    sa.Column("account_id", sa.String(256), primary_key=True),
    sa.Column("billing_date", sa.Date, primary_key=True),
    sa.Column("user_id", sa.String(256), primary_key=True),
    sa.Column("charges", sa.BigInteger, nullable=False, default=0),
    sa.Column("cost_micros", sa.BigInteger, nullable=False, default=0),
    sa.Column("total_tokens", sa.BigInteger, nullable=False, default=0),
)

#: Each budget's current definition (the Budget aggregate's events are the
#: history; this row is written in the same transaction as each of them).
budgets = sa.Table(
    "ledger_budgets",
    metadata,
    sa.Column("budget_id", sa.String(256), primary_key=True),
    sa.Column("account_id", sa.String(256), nullable=False, index=True),
    sa.Column("user_id", sa.String(256), nullable=True),
    #: "micros", "tokens" or "credits" (the limit is the prepaid balance).
    sa.Column("unit", sa.String(16), nullable=False),
    sa.Column("limit_value", sa.BigInteger, nullable=True),
    sa.Column("period", sa.String(16), nullable=False),
    sa.Column("mode", sa.String(16), nullable=False),
    sa.Column("thresholds", sa.String(256), nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

#: Reservations: a hold on budgets until captured, released or expired.
holds = sa.Table(
    "ledger_holds",
    metadata,
    sa.Column("reservation_id", sa.String(256), primary_key=True),
    sa.Column("account_id", sa.String(256), nullable=False),
    sa.Column("user_id", sa.String(256), nullable=True),
    sa.Column("estimate_micros", sa.BigInteger, nullable=True),
    sa.Column("estimate_tokens", sa.BigInteger, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    #: "held", "captured" or "released".
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("charge_id", sa.String(256), nullable=True),
    sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
    # Only holds still held: a capture or release takes its row out of it, and
    # the sums of active holds read nothing else.
    sa.Index(
        "ledger_holds_held", "account_id", "expires_at",
        postgresql_where=sa.text("state = 'held'"), sqlite_where=sa.text("state = 'held'"),
    ),
)

#: Prepaid credit grants (the CreditLine aggregate's events are the history).
credit_grants = sa.Table(
    "ledger_credit_grants",
    metadata,
    sa.Column("grant_id", sa.String(256), primary_key=True),
    sa.Column("account_id", sa.String(256), nullable=False, index=True),
    sa.Column("amount_micros", sa.BigInteger, nullable=False),
    sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
)

#: Threshold alerts: one row per budget, period and threshold, ever.
budget_alerts = sa.Table(
    "ledger_budget_alerts",
    metadata,
    sa.Column("alert_id", sa.String(64), primary_key=True),
    sa.Column("budget_id", sa.String(256), nullable=False),
    #: The period's first billing date as ISO text, "" for a ``total`` budget.
    sa.Column("period_key", sa.String(16), nullable=False),
    sa.Column("threshold", sa.Integer, nullable=False),
    sa.Column("account_id", sa.String(256), nullable=False, index=True),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("budget_id", "period_key", "threshold", name="ledger_budget_alerts_once"),
)

#: Where alerts are posted; ``account_id`` None: every account's alerts.
webhook_endpoints = sa.Table(
    "ledger_webhook_endpoints",
    metadata,
    sa.Column("endpoint_id", sa.String(32), primary_key=True),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("secret", sa.String(256), nullable=False),
    sa.Column("account_id", sa.String(256), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
)

#: The outbox and delivery log: one row per alert and endpoint.
webhook_deliveries = sa.Table(
    "ledger_webhook_deliveries",
    metadata,
    sa.Column("alert_id", sa.String(64), primary_key=True),
    sa.Column("endpoint_id", sa.String(32), primary_key=True),
    #: "pending", "delivered" or "failed" (gave up after the last attempt).
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_status", sa.Integer, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("ledger_webhook_deliveries_due", "state", "next_attempt_at"),
)

# -- the read model --------------------------------------------------------------

#: The key of a daily billing record, in primary-key order (account and date
#: first: reports and rollups select by account and day).
KEY_COLUMNS = ("account_id", "billing_date", "user_id", "charge_type", "provider", "model")
#: The figures summed per key (see :mod:`ledger.measures`).
VALUE_COLUMNS = MEASURES
#: Stored in place of None for an unspecified provider or model.
UNSPECIFIED = ""

LIVE_NAME = "daily_billing_records"
SCRATCH_NAME = "daily_billing_records_rebuild"


def _billing_table(name: str) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("account_id", sa.String, primary_key=True),
        sa.Column("billing_date", sa.Date, primary_key=True),
        sa.Column("user_id", sa.String, primary_key=True),
        sa.Column("charge_type", sa.String, primary_key=True),
        sa.Column("provider", sa.String, primary_key=True, default=UNSPECIFIED),
        sa.Column("model", sa.String, primary_key=True, default=UNSPECIFIED),
        sa.Column("charges", sa.BigInteger, nullable=False, default=0),
        sa.Column("prompt_tokens", sa.BigInteger, nullable=False, default=0),
        sa.Column("completion_tokens", sa.BigInteger, nullable=False, default=0),
        sa.Column("total_tokens", sa.BigInteger, nullable=False, default=0),
        # Sum of the charges' costs in micro-units of the catalogue's currency,
        # and how many charges no price covered (they add no cost).
        sa.Column("cost_micros", sa.BigInteger, nullable=False, default=0, server_default="0"),
        sa.Column("unpriced_charges", sa.BigInteger, nullable=False, default=0, server_default="0"),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Index(f"{name}_date_idx", "billing_date", "account_id"),
    )


#: What billing reads.
daily_billing_records = _billing_table(LIVE_NAME)
#: Where rebuilds and audits project the log from position 0.
daily_billing_records_rebuild = _billing_table(SCRATCH_NAME)

#: One row per projection: the last notification id it applied. ``owner``
#: marks which rebuild currently fills a scratch table.
projection_tracking = sa.Table(
    "projection_tracking",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("position", sa.BigInteger, nullable=False, default=0),
    sa.Column("owner", sa.String(64), nullable=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
    # The IANA zone whose dates the table holds: set by its first batch (or
    # by the rebuild that filled it), so a run in another zone is refused
    # instead of mixing dates of two zones in one table.
    sa.Column("time_zone", sa.String(64), nullable=True),
)

# -- the service's tables ----------------------------------------------------------

#: API keys: only each secret's SHA-256 digest is kept.
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(16), primary_key=True),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("account_id", sa.String(256), nullable=True),
    sa.Column("name", sa.String(256), nullable=False, default=""),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
)

#: Dashboard sessions: the digest of the cookie's random id, never the id.
dashboard_sessions = sa.Table(
    "dashboard_sessions",
    metadata,
    sa.Column("digest", sa.String(64), primary_key=True),
    sa.Column("key_id", sa.String(16), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
)

#: Each audit's verdict, for the dashboard and for operators.
audit_runs = sa.Table(
    "audit_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("clean", sa.Boolean, nullable=False),
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Column("events", sa.BigInteger, nullable=False),
    sa.Column("differences", sa.Integer, nullable=False),
    sqlite_autoincrement=True,
)

#: Charges a ``create_charge`` task could not record, kept with why.
rejected_charges = sa.Table(
    "rejected_charges",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    #: The Huey task that met the error: one row per task, however often it ran.
    sa.Column("task_id", sa.String(64), nullable=True, unique=True),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("errors", sa.JSON, nullable=False),
    sa.Column("resubmitted_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("resolution", sa.Text, nullable=True),
    sqlite_autoincrement=True,
)


#: The schema stamp (one row): the code digest and catalogue fingerprint of the last complete install
#: (see :mod:`ledger.store.schema_stamp`).
schema_stamp = sa.Table(
    "ledger_schema_stamp",
    metadata,
    sa.Column("id", sa.SmallInteger, primary_key=True),
    sa.Column("code", sa.String(64), nullable=False),
    sa.Column("catalogue", sa.String(64), nullable=False),
)


def stored_utc(value: datetime) -> datetime:
    """A stored time as UTC-aware: SQLite gives naive datetimes back, and every stored time is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# -- creating them -------------------------------------------------------------------

_ready: weakref.WeakSet[sa.engine.Engine] = weakref.WeakSet()


@contextmanager
def schema_lock(engine: sa.engine.Engine) -> Iterator[sa.engine.Connection]:
    """A connection in a transaction that holds the schema lock.

    Several processes starting on an empty PostgreSQL database would race to
    create the same tables (and fail on the catalogue's unique index); an
    advisory lock makes them take turns. SQLite's BEGIN IMMEDIATE does the same.
    """
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": int(LockKey.SCHEMA)})
        yield connection


def ensure_schema(
    engine: sa.engine.Engine,
    *,
    library_tables: Iterable[sa.Table] = (),
    then: Callable[[sa.engine.Connection], None] | None = None,
) -> None:
    """Create every missing table (the library's ``library_tables`` too), then run ``then``.

    Runs once per engine and process, in one transaction under the schema
    lock, so processes starting together never collide and a crash leaves
    the store as it was. The charge-id index is installed first: it may take
    over an earlier release's table (see :mod:`ledger.store.charge_index`).
    Tables made by earlier releases get the columns they lack
    (:func:`ledger.store.upgrades.upgrade`). On PostgreSQL a store whose
    stamp says this code installed it, untouched since, is left as it is
    (:mod:`ledger.store.schema_stamp`).
    """
    library_tables = list(library_tables)
    if engine in _ready and not library_tables and then is None:
        return
    from ledger.store import schema_stamp as stamp
    from ledger.store.charge_index import install as install_charge_index
    from ledger.store.upgrades import upgrade

    names = tuple(sorted(table.name for table in library_tables))
    # Only the store's own call (the library's tables and the write path) installs all, so only it is stamped
    # and only it can find its stamp current; a call for the ledger's tables alone installs as before.
    if library_tables and stamp.is_current(engine, names):  # a complete install by this code, untouched since
        _ready.add(engine)
        return
    with schema_lock(engine) as connection:
        for table in library_tables:
            table.create(connection, checkfirst=True)
        install_charge_index(connection)
        metadata.create_all(connection, checkfirst=True)
        upgrade(connection)
        if then is not None:
            then(connection)
            if library_tables:  # the whole install (the store's own call): stamp it
                stamp.write(connection, names)
    _ready.add(engine)


def create_tables(
    engine: sa.engine.Engine,
    tables: Iterable[sa.Table],
    then: Callable[[sa.engine.Connection], None] | None = None,
) -> None:
    """:func:`ensure_schema` under its earlier name and signature (``tables``: the library's)."""
    ensure_schema(engine, library_tables=tables, then=then)
