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

import sqlalchemy as sa

from ledger.store.start_checks import OncePerDatabase

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

_ONCE = OncePerDatabase("autovacuum settings", log)


def unvacuumed(engine: sa.engine.Engine) -> list[str]:
    """The write path's tables autovacuum will not reclaim on ``engine``'s database (PostgreSQL)."""
    with engine.connect() as connection:
        names = [row[0] for row in connection.execute(_UNVACUUMED, {"tables": list(CHURNED)})]
        connection.rollback()
    return names


def warn_if_unvacuumed(engine: sa.engine.Engine) -> list[str] | None:
    """Log one WARNING naming the tables autovacuum leaves alone; once per process and database, never raises."""
    read = _ONCE.read(engine, unvacuumed)
    if read is None:
        return None
    key, names = read
    if names:
        log.warning("autovacuum will not reclaim the dead rows the ledger leaves in %s (%s): they grow and the "
                    "sequencer slows until VACUUM runs; turn autovacuum on or VACUUM them regularly; see %s",
                    ", ".join(names), key, DOCS)
    return names
