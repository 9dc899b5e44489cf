"""``python -m bench``: the benchmark from the command line (``ledger bench`` does the same)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import sqlalchemy as sa
import typer

from bench.rows import BenchmarkFailed
from bench.runner import SCENARIOS, default_command, run
from bench.sizes import Sizes

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    database_url: List[str] = typer.Option(..., "--database-url", help="sqlite:///file or postgresql+psycopg2://…; repeatable"),
    quick: bool = typer.Option(False, "--quick", help="small sizes: completion and consistency only (< 2 min)"),
    charges: Optional[int] = typer.Option(None, help="charges in the log for projection and rebuild (default 1,000,000)"),
    single: Optional[int] = typer.Option(None, help="record_charge calls per single-writer scenario"),
    batch: Optional[int] = typer.Option(None, help="charges for batch recording"),
    month_charges: Optional[int] = typer.Option(None, help="charges in the compacted month"),
    per_writer: Optional[int] = typer.Option(None, help="charges per concurrent/hot writer"),
    report_accounts: Optional[int] = typer.Option(None, help="accounts with a year of daily records"),
    only: Optional[List[str]] = typer.Option(None, "--only", help=f"run only these scenarios: {', '.join(SCENARIOS)}"),
    write_docs: Optional[Path] = typer.Option(None, "--write-docs", help="write the results to this markdown file"),
) -> None:
    """Run the benchmark and print one table; exit 1 if any scenario is inconsistent or fails."""
    sizes = (Sizes.quick() if quick else Sizes.full()).with_overrides(
        charges=charges,
        single=single,
        batch=batch,
        month_charges=month_charges,
        hot_per_writer=per_writer,
        concurrent_per_writer=per_writer,
        report_accounts=report_accounts,
    )
    given = {"--single": single, "--batch": batch, "--month-charges": month_charges,
             "--per-writer": per_writer, "--report-accounts": report_accounts}
    options = [part for flag, value in given.items() if value is not None for part in (flag, str(value))]
    command = default_command(database_url, quick, charges, only, write_docs, options)
    try:
        run(database_url, quick=quick, sizes=sizes, only=only, write_docs=write_docs, command=command)
    except BenchmarkFailed as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    except ValueError as exc:  # e.g. a URL of an unsupported store
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except sa.exc.OperationalError as exc:  # the server is down or the database missing
        reason = str(exc.orig).strip().splitlines()[-1] if exc.orig is not None else str(exc)
        typer.echo(
            f"error: cannot open the benchmark database: {reason}\n"
            "Start the server and create the database first (.ci/run does both for 'bench').",
            err=True,
        )
        raise typer.Exit(2) from None


if __name__ == "__main__":
    app()
