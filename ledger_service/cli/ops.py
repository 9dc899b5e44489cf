"""Operations: rejected charges, the worker, the benchmark and the demo."""

from __future__ import annotations

import json
import shlex
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional

import typer
from rich.table import Column, Table

from ledger_service.cli.app import (
    EXIT,
    HEADINGS,
    show_figure,
    CliError,
    app,
    emit_json,
    needed,
    note,
    out,
    print_table,
    progress_bar,
    state_of,
)
from ledger_service.cli.read import VALUE_COLUMNS, print_audit, print_records

if TYPE_CHECKING:
    from jobs.rejected import RejectedCharge
    from ledger.application import Ledger
    from ledger_service.demo import DemoResult

rejected_app = typer.Typer(
    help="Charges the background jobs could not record, kept with their errors.",
    no_args_is_help=True,
)
app.add_typer(rejected_app, name="rejected")


@rejected_app.command("list")
def rejected_list(
    ctx: typer.Context,
    all_: bool = typer.Option(False, "--all", help="Include resolved ones."),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """List rejected charges (unresolved ones unless --all).

    Example: ledger rejected list
    """
    with needed("jobs.rejected", "the rejected-charges store"):
        from jobs.rejected import list_rejected
    kept = list_rejected(state_of(ctx).ledger(), include_resolved=all_)
    if json_output:
        emit_json([_rejected_dict(r) for r in kept])
        return
    if not kept:
        out.print("no rejected charges" + ("" if all_ else " waiting"))
        return
    table = Table("id", "received", "errors", "charge", "resolution")
    for r in kept:
        table.add_row(str(r.id), r.received_at.isoformat(timespec="seconds"),
                      "; ".join(f"{k}: {v}" for k, v in r.errors.items()),
                      json.dumps(r.payload, sort_keys=True), r.resolution or "-")
    print_table(table)


def _rejected_dict(r: RejectedCharge) -> dict[str, Any]:
    return {
        "id": r.id,
        "received_at": r.received_at,
        "task_id": r.task_id,
        "payload": r.payload,
        "errors": r.errors,
        "resubmitted_at": r.resubmitted_at,
        "resolution": r.resolution,
    }


def _overrides(values: list[str]) -> dict[str, Any]:
    """``field=value`` pairs; an empty value removes the field."""
    from ledger.charges import INPUT_FIELDS

    overrides: dict[str, Any] = {}
    for item in values:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise CliError(f"--set: expected field=value, got {item!r}")
        if name not in INPUT_FIELDS:
            raise CliError(f"--set: unknown field {name!r}; fields are {', '.join(INPUT_FIELDS)}")
        overrides[name] = value if value != "" else None
    return overrides


@rejected_app.command("resubmit")
def rejected_resubmit(
    ctx: typer.Context,
    rejected_id: int = typer.Argument(..., help="The id shown by `ledger rejected list`."),
    set_: Optional[List[str]] = typer.Option(None, "--set", metavar="FIELD=VALUE",
                                            help="Correct a field before re-submitting (repeatable)."),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """Re-submit a rejected charge through the service, corrected with --set.

    Example: ledger rejected resubmit 3 --set charge_type=usage --set prompt_tokens=120
    """
    with needed("jobs.rejected", "the rejected-charges store"):
        from jobs.rejected import resubmit
    overrides = _overrides(list(set_ or []))
    ledger = state_of(ctx).ledger()
    receipt = resubmit(ledger, rejected_id, overrides)
    if json_output:
        emit_json({"id": rejected_id, "charge_id": receipt.charge_id, "account_id": receipt.account_id,
                   "duplicate": receipt.duplicate, "recorded_at": receipt.recorded_at})
    else:
        how = "was already recorded as" if receipt.duplicate else "recorded as"
        out.print(f"rejected charge {rejected_id} {how} charge {receipt.charge_id} "
                  f"for account {receipt.account_id}", markup=False)


@rejected_app.command("dismiss")
def rejected_dismiss(
    ctx: typer.Context,
    rejected_id: int = typer.Argument(..., help="The id shown by `ledger rejected list`."),
    reason: str = typer.Option(..., "--reason", help="Why it is not recorded (kept with it)."),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """Resolve a rejected charge without recording it (test traffic, a call never billed), saying why.

    Example: ledger rejected dismiss 3 --reason "load test from staging"
    """
    with needed("jobs.rejected", "the rejected-charges store"):
        from jobs.rejected import dismiss
    if not reason.strip():
        raise CliError("--reason: say why the charge is not recorded")
    kept = dismiss(state_of(ctx).ledger(), rejected_id, reason.strip())
    if json_output:
        emit_json({"id": kept.id, "resolution": kept.resolution, "resolved_at": kept.resubmitted_at})
    else:
        out.print(f"rejected charge {kept.id} {kept.resolution}", markup=False)


@app.command()
def worker(
    ctx: typer.Context,
    workers: int = typer.Option(2, "--workers", "-w", min=1, help="Worker threads."),
    periodic: bool = typer.Option(True, "--periodic/--no-periodic",
                                  help="Run the daily schedule here (exactly one consumer should)."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Start a Huey consumer for the ledger's tasks (blocks; SIGTERM stops it gracefully).

    Example: ledger worker --workers 4 --no-periodic
    """
    # Read once, here: a bad database URL or setting fails in one line, before the worker starts.
    settings = state_of(ctx).process_settings()
    with needed("jobs.worker", "the worker"):
        from jobs import runtime
        from jobs.worker import banner, run_worker
    runtime.install(settings)  # the queue, the schedule and the tasks' ledger follow these settings
    note(banner(periodic=periodic))
    from ledger.store.replication import warn_at_start

    warn_at_start(settings.ledger.database_url, settings.ledger.connect_timeout_seconds)  # its ledger opens later
    run_worker(workers=workers, periodic=periodic, verbose=verbose, settings=settings)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                                "help_option_names": []}, add_help_option=False)
def bench(ctx: typer.Context) -> None:
    """Run the benchmark: ratios against raw inserts and the replaced design (ledger bench --help).

    It takes its own --database-url (repeatable) and never the ledger's: on
    PostgreSQL it empties that database's public schema for each scenario.

    Example: ledger bench --database-url sqlite:////var/tmp/bench/bench.db --quick
    """
    from ledger_service.cli.tree import polish

    with needed("bench.__main__", "the benchmark"):
        from bench.__main__ import app as bench_app
    command = typer.main.get_command(bench_app)
    polish(command)  # its help follows the rules of every other ledger command
    code = command.main(args=list(ctx.args), prog_name="ledger bench", standalone_mode=False)
    if isinstance(code, int) and code:
        raise typer.Exit(code)


# -- demo ----------------------------------------------------------------------

#: The demo ledger's SQLite file in its directory.
DEMO_FILE = "ledger.db"


class RichReporter:
    """The demo's story on the terminal: a bar per step, a line per result."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet

    def step(self, title: str, total: int | None = None) -> Any:
        return progress_bar(title, total)

    def done(self, message: str) -> None:
        if not self.quiet:
            out.print(f"  {message}", markup=False)


@app.command()
def demo(
    ctx: typer.Context,
    directory: Optional[Path] = typer.Option(
        None, "--dir", help="Where the demo ledger goes [default: a new temporary directory, kept to explore; "
        "the last line says where and how to remove it]."),
    accounts: int = typer.Option(8, "--accounts", min=1, max=1000, help="Accounts in the synthetic month."),
    days: int = typer.Option(30, "--days", min=2, max=366, help="Days the synthetic month spans, up to today."),
    charges: int = typer.Option(20_000, "--charges", min=100, help="Charges in the synthetic month."),
    seed: int = typer.Option(42, "--seed", help="Random seed: the same seed gives the same month."),
    json_output: bool = typer.Option(False, "--json", help="Print the figures as JSON instead."),
    serve: bool = typer.Option(False, "--serve", help="Then keep the demo ledger, print an admin key and a "
                               "read key, and serve the API and the dashboard on it."),
    host: str = typer.Option("127.0.0.1", "--host", help="With --serve: the interface to listen on."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="With --serve: the port."),
) -> None:
    """Run the whole product on a fresh ledger: a synthetic month recorded, projected,
    compacted, audited and reported (SQLite, no server needed).

    Uses --database-url only when given on the command line (the store must be empty).
    Otherwise the ledger is a SQLite file in --dir or a new temporary directory, kept so
    that it can be explored; the last line says where it is, its size and how to remove it.

    Example: ledger demo --accounts 12 --charges 50000
    Example: ledger demo --serve --port 8000
    """
    from ledger_service.demo import DemoConfig, run_demo
    from ledger.application import Ledger

    state = state_of(ctx)
    folder, made = (None, False) if state.database_url else _demo_folder(directory)
    url = state.database_url or _fresh_sqlite(folder)
    ledger = Ledger(state.settings(database_url=url))
    try:
        if ledger.log_position():
            raise CliError(f"the demo needs an empty store; {url} already holds events")
        config = DemoConfig(accounts=accounts, days=days, charges=charges, seed=seed)
        started = time.perf_counter()
        if not json_output:
            out.print(f"Demo ledger: {url} (billing time zone {ledger.settings.billing_tz})", markup=False)
        result = run_demo(ledger, config, RichReporter(quiet=json_output))
        wall = time.perf_counter() - started
        if json_output:
            emit_json({**result.to_dict(), "database_url": url, "directory": str(folder) if folder else None,
                       "wall_seconds": round(wall, 2)})
        else:
            _print_demo(result, url, wall)
            if folder is not None:
                out.print(_where_it_is(folder, made), markup=False)
        if serve:
            _serve_demo(ledger, result, host, port)
    finally:
        ledger.close()
    if not result.audit_clean:
        raise typer.Exit(EXIT["failed"])


def _serve_demo(ledger: Ledger, result: DemoResult, host: str, port: int) -> None:
    """Keys for the demo ledger (printed once), then the API and the dashboard on it until interrupted."""
    import uvicorn

    from ledger.settings import HttpSettings
    from ledger_service.cli.serve import check_address, prepare_secret_key
    from ledger_service.http import create_app
    from ledger_service.keys import create_key

    check_address(host, port)
    account = result.top_accounts[0]["account_id"]
    admin = create_key(ledger, "admin", name="demo admin")[1]
    reader = create_key(ledger, "read", account, name=f"demo read {account}")[1]
    out.print(f"\nDashboard: http://{host}:{port}/dashboard   API docs: http://{host}:{port}/docs", markup=False)
    out.print(f"admin key (every account): {admin}", markup=False)
    out.print(f"read key (account {account}): {reader}", markup=False)
    note("sign in with either key; Ctrl-C stops the server")
    http = prepare_secret_key(HttpSettings())
    uvicorn.run(create_app(ledger, http), host=host, port=port, log_level="warning", access_log=False,
                server_header=False)


def _demo_folder(directory: Path | None) -> tuple[Path, bool]:
    """The demo's directory, and whether the demo made it (then all of it is the demo's)."""
    if directory is None:
        return Path(tempfile.mkdtemp(prefix="ledger-demo-")).resolve(), True
    made = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    return directory.resolve(), made


def _fresh_sqlite(directory: Path) -> str:
    path = directory / DEMO_FILE
    if path.exists():
        raise CliError(f"{path} exists; the demo needs a fresh directory")
    return f"sqlite:///{path}"


def _where_it_is(folder: Path, made: bool) -> str:
    """Where the demo ledger stays, its size, and the command that removes it."""
    files = [f for f in (folder.iterdir() if made else folder.glob(DEMO_FILE + "*")) if f.is_file()]
    size = sum(f.stat().st_size for f in files)
    remove = f"rm -r {shlex.quote(str(folder))}" if made else \
        "rm " + " ".join(shlex.quote(str(f)) for f in sorted(files))
    return f"The demo ledger takes {size / 1e6:.1f} MB in {folder}; remove it with: {remove}"


def _print_demo(result: DemoResult, url: str, wall: float) -> None:
    out.print()
    top = Table("account", Column("users", justify="right"),
                *(Column(HEADINGS.get(k, k), justify="right") for k in VALUE_COLUMNS),
                title="Top accounts by tokens")
    for row in result.top_accounts:
        top.add_row(row["account_id"], str(row["users"]), *(show_figure(k, row[k]) for k in VALUE_COLUMNS))
    print_table(top)
    rows = [{**row} for row in result.by_model]
    print_records(rows, ["provider", "model"], title="Totals by provider and model (- = unspecified)")
    same = result.totals == result.account_totals
    out.print(f"Records total {result.totals['total_tokens']:,} tokens in {result.totals['charges']:,} charges "
              f"costing {show_figure('cost_micros', result.totals['cost_micros'])} USD "
              f"({result.totals['unpriced_charges']:,} unpriced); account aggregates say "
              f"{result.account_totals['total_tokens']:,} in {result.account_totals['charges']:,} costing "
              f"{show_figure('cost_micros', result.account_totals['cost_micros'])}: "
              f"{'equal' if same else 'DIFFERENT'}", markup=False)
    print_audit(result.audit, limit=10)
    out.print(f"Done in {wall:.1f} s. Explore it: ledger --database-url {url} report --group-by account_id,billing_date",
              markup=False)
