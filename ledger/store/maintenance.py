"""One WARNING at start when PostgreSQL will not reclaim what the write path leaves behind.

The durable intake takes every charge in as a row that the sequencer
deletes soon after, and a budget's fold writes a new version of each row it
folds: the write path leaves dead rows by design, and relies on autovacuum
to reclaim them. With autovacuum off (globally, or for one of those tables)
the intake's table and its index only grow, and the sequencer, which reads
them on every turn, slows with them. Nothing is lost or counted twice; the
store just gets slower and larger until someone runs VACUUM.

Checked once per process and database, beside the replication check
(:mod:`ledger.store.replication`), when the first ledger opens; never on the
write path; a state that cannot be read is logged and the process carries on.
"""

from __future__ import annotations

import logging
import threading

import sqlalchemy as sa

from ledger.store.replication import shown_url

log = logging.getLogger(__name__)

#: Where an operator reads what to do.
DOCS = "docs/OPERATIONS.md, 'Vacuum'"

#: The tables whose dead rows the write path makes (the intake's deletes, the folds' updates).
CHURNED = ("ledger_intake", "ledger_charge_index", "ledger_holds")

#: Which of them autovacuum leaves alone: all when it is off, else those that turn it off for themselves.
_UNVACUUMED = sa.text(
    "SELECT t.name FROM unnest(CAST(:tables AS text[])) AS t(name) "
    "LEFT JOIN pg_class c ON c.relname = t.name AND c.relnamespace = current_schema()::regnamespace "
    "WHERE current_setting('autovacuum') = 'off' OR 'autovacuum_enabled=false' = ANY (c.reloptions) ORDER BY 1"
)

_checked: set[str] = set()
_checking = threading.Lock()


def unvacuumed(engine: sa.engine.Engine) -> list[str]:
    """The write path's tables autovacuum will not reclaim on ``engine``'s database (PostgreSQL)."""
    with engine.connect() as connection:
        names = [row[0] for row in connection.execute(_UNVACUUMED, {"tables": list(CHURNED)})]
        connection.rollback()
    return names


def warn_if_unvacuumed(engine: sa.engine.Engine) -> list[str] | None:
    """Log one WARNING naming the tables autovacuum leaves alone; once per process and database, never raises."""
    if engine.dialect.name != "postgresql":
        return None
    key = shown_url(engine.url)
    with _checking:
        if key in _checked:
            return None
        _checked.add(key)
    try:
        names = unvacuumed(engine)
    except Exception as exc:  # noqa: BLE001 - a health check must never stop a writer
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        log.warning("could not read the autovacuum settings of %s (%s); carrying on", key, first)
        return None
    if names:
        log.warning("autovacuum will not reclaim the dead rows the ledger leaves in %s (%s): they grow and the "
                    "sequencer slows until VACUUM runs; turn autovacuum on or VACUUM them regularly; see %s",
                    ", ".join(names), key, DOCS)
    return names
