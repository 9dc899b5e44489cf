"""``ledger health``: the database, whether an acknowledged charge survives the primary's loss, the standbys
with their lag, and where reports are read from.

It opens no ledger (so it creates nothing and stays quiet): one short
connection to the primary and, with ``LEDGER_READ_DATABASE_URL``, one to the
read database. See docs/OPERATIONS.md, "Health and replication".
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Column, Table

from ledger_service.cli.app import (
    EXIT,
    CliError,
    app,
    emit_json,
    out,
    print_table,
    state_of,
)

if TYPE_CHECKING:
    import sqlalchemy as sa

    from ledger.settings import Settings
    from ledger.store.replication import Replication
    from ledger.store.replication_reads import Reads


@app.command()
def health(
    ctx: typer.Context,
    json_output: bool = typer.Option(False, "--json"),
    require_safe: bool = typer.Option(False, "--require-safe",
                                      help="Exit 1 unless an acknowledged charge survives the primary's loss."),
) -> None:
    """Whether charges are safe: the primary, its standbys and their replay lag, synchronous commits, reads.

    Example: ledger health --require-safe
    """
    from ledger_service.cli.config import redacted

    settings = state_of(ctx).settings()
    state = _replication(settings)
    reads = _reads(settings)
    if json_output:
        emit_json({"database": redacted(settings.database_url), **_fields(state), "reads": _reads_fields(reads)})
    else:
        _print(redacted(settings.database_url), state, reads)
    if require_safe and not state.safe:
        raise typer.Exit(EXIT["failed"])


def _replication(settings: Settings) -> Replication:
    """The primary's replication state through a connection of this command's own."""
    from ledger.store.replication import EMBEDDED_REPLICATION, read_replication

    if settings.is_sqlite:
        return EMBEDDED_REPLICATION
    engine = _engine(settings.database_url, settings.connect_timeout_seconds)
    try:
        return read_replication(engine)
    except Exception as exc:  # noqa: BLE001 - one line, as every command says an unreachable database
        text = str(getattr(exc, "orig", None) or exc).strip()
        raise CliError(f"database unavailable: {text.splitlines()[0] if text else type(exc).__name__}",
                       EXIT["failed"]) from None
    finally:
        engine.dispose()


def _reads(settings: Settings) -> Reads:
    from ledger.store.replication_reads import Reads, make_read_engine, reads_at

    if settings.read_database_url is None:
        return Reads("primary")
    try:
        engine = make_read_engine(settings)
    except ValueError as exc:
        return Reads("read database", error=str(exc))
    try:
        return reads_at(engine)
    finally:
        engine.dispose()


def _engine(url: str, connect_timeout: int) -> sa.engine.Engine:
    import sqlalchemy as sa

    return sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args={"connect_timeout": connect_timeout})


def _fields(state: Replication) -> dict[str, Any]:
    return {"store": state.store, "role": state.role, "safe": state.safe, "verdict": state.verdict,
            "synchronous": state.synchronous, "synchronous_commit": state.synchronous_commit,
            "synchronous_standby_names": state.synchronous_standby_names, "standbys_visible": state.sees_standbys,
            "standbys": [asdict(s) for s in state.standbys]}


def _reads_fields(reads: Reads) -> dict[str, Any]:
    return {"source": reads.source, "lag_seconds": reads.lag_seconds, "lag_bytes": reads.lag_bytes,
            "error": reads.error, "summary": reads.summary}


def _print(database: str, state: Replication, reads: Reads) -> None:
    summary = Table(Column("", style="bold"), Column(""), title="Ledger health", show_header=False)
    summary.add_row("database", database)
    if state.store == "sqlite":
        summary.add_row("server", "SQLite: embedded, single file (no standby)")
    else:
        names = state.synchronous_standby_names or "(empty)"
        summary.add_row("server", f"PostgreSQL {state.role}")
        summary.add_row("commits", f"synchronous_commit {state.synchronous_commit}; synchronous_standby_names "
                                   f"{names}; {'synchronous' if state.synchronous else 'not synchronous'}")
    summary.add_row("charges safe", "yes" if state.safe else f"NO: {state.verdict}")
    summary.add_row("reads", reads.summary)
    print_table(summary)
    if state.store != "postgresql":
        return
    if not state.standbys:
        out.print("standbys: none connected", markup=False)
        return
    standbys = Table("standby", "address", "state", "sync", Column("replay lag s", justify="right"),
                     Column("behind bytes", justify="right"), title="Standbys")
    for s in state.standbys:
        standbys.add_row(s.name, s.address or "-", s.state or "hidden", s.sync_state or "hidden",
                         "-" if s.replay_lag_seconds is None else f"{s.replay_lag_seconds:.3f}",
                         "-" if s.replay_lag_bytes is None else f"{s.replay_lag_bytes:,}")
    print_table(standbys)
    if not state.sees_standbys:
        out.print(f"the standbys' state is hidden from role {state.role_name}: grant it pg_monitor", markup=False)
