"""Commands on the read side: project, rebuild, audit, report, compact."""

from __future__ import annotations

import dataclasses
import sys
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Column, Table

from ledger.measures import MEASURES as VALUE_COLUMNS
from ledger_service.cli.app import (
    EXIT,
    HEADINGS,
    CliError,
    app,
    emit_json,
    needed,
    note,
    out,
    parse_day,
    print_table,
    progress_bar,
    show_figure,
    state_of,
)
from ledger_service.csvsafe import write_csv
from ledger_service.wording import conservation_lines, held_back, json_value, plural
from ledger_service.wording import shown as shown_value

if TYPE_CHECKING:
    from ledger import Ledger
    from projections import AuditResult, Difference

KEY_COLUMNS = ("account_id", "user_id", "billing_date", "charge_type", "provider", "model")


def run_projector(ledger: Ledger, description: str = "projecting") -> tuple[int, int]:
    """Run the projector to the end of the log, with a progress bar: (events, position)."""
    with needed("projections", "projection"):
        import projections
    projector = projections.Projector(ledger)
    start = projector.position()
    head = ledger.log_position()
    applied = 0
    with progress_bar(description, total=max(head - start, 0)) as update:
        while True:
            count = projector.run(max_events=projector.batch_size)
            applied += count
            update(applied)
            if count < projector.batch_size:
                break
    return applied, projector.position()


@app.command()
def project(ctx: typer.Context, json_output: bool = typer.Option(False, "--json")) -> None:
    """Bring the daily billing records up to date with the log (exactly once).

    Example: ledger project
    """
    events, position = run_projector(state_of(ctx).ledger())
    if json_output:
        emit_json({"events": events, "position": position})
    else:
        out.print(f"projected {plural(events, 'event')}; records are at position {position:,}")


@app.command()
def rebuild(
    ctx: typer.Context,
    check: bool = typer.Option(False, "--check", help="Only compare with the live records; change nothing."),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """Replay the whole log into a scratch table, then swap it in (or, with --check, diff).

    Example: ledger rebuild --check
    """
    with needed("projections", "rebuild"):
        import projections
    ledger = state_of(ctx).ledger()
    with progress_bar("rebuilding daily billing records from position 0"):
        result = projections.rebuild(ledger, swap=not check)
    if json_output:
        emit_json(result.to_dict())
    elif check:
        verdict = "identical to" if result.clean else f"{plural(result.difference_count, 'difference')} from"
        out.print(f"replayed {result.events:,} events to position {result.position:,}: "
                  f"{verdict} the live records", markup=False)
        _print_differences(result.differences, result.difference_count)
    else:
        out.print(f"rebuilt daily billing records from {result.events:,} events "
                  f"(position {result.position:,}, {result.rows:,} rows) and swapped them in")
    if check and not result.clean:
        raise typer.Exit(EXIT["failed"])


def _print_differences(differences: list[Difference], count: int, limit: int | None = None) -> None:
    shown = differences if limit is None else differences[:limit]
    for difference in shown:
        d = difference.to_dict()
        key = " ".join(f"{k}={v if v is not None else '-'}" for k, v in d["key"].items())
        out.print(f"  {key}: live {_figures(d['live'])}, rebuilt {_figures(d['rebuilt'])}", markup=False)
    if count > len(shown):
        out.print(f"  ... and {count - len(shown)} more", markup=False)


def _figures(figures: dict[str, int] | None) -> str:
    if figures is None:
        return "(none)"
    return "/".join(str(figures.get(name, 0)) for name in VALUE_COLUMNS)


@app.command()
def audit(
    ctx: typer.Context,
    no_project: bool = typer.Option(
        False, "--no-project",
        help="Audit at the records' current position (after a compaction the records must be "
        "projected past its rollups, or the pruned days show as differences)."),
    max_differences: int = typer.Option(1000, min=1, help="Differences listed at most."),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """Prove the records from the log: replay equality, conservation, rollup digests.

    Exits 0 only when clean, 1 otherwise (each difference listed).

    Example: ledger audit
    """
    with needed("projections", "audit"):
        import projections
    ledger = state_of(ctx).ledger()
    if not no_project:
        run_projector(ledger)
    with progress_bar("auditing: replaying the log into scratch tables"):
        result = projections.audit(ledger, max_differences=max_differences)
    from ledger_service.audits import record_audit

    record_audit(ledger, result)
    if json_output:
        emit_json(result.to_dict())
    else:
        print_audit(result)
    if not result.clean:
        raise typer.Exit(EXIT["failed"])


def print_audit(result: AuditResult, limit: int | None = None) -> None:
    """The verdict first, then the evidence."""
    c = result.conservation
    verdict = "CLEAN" if result.clean else "FAILED"
    out.print(f"audit {verdict} at position {result.position:,} "
              f"({result.events:,} events replayed)", markup=False)
    equality = "identical" if result.difference_count == 0 else plural(result.difference_count, "difference")
    out.print(f"  replay equality: {equality}", markup=False)
    for line in conservation_lines(c):
        out.print(line, markup=False)
    out.print(f"  rollups: {result.rollups_checked:,} checked, {plural(len(result.rollup_issues), 'issue')}; "
              f"{plural(result.rollups_verified, 'digest')} recomputed from raw events still in the log",
              markup=False)
    for issue in result.rollup_issues:
        out.print(f"    rollup at {issue.position} ({issue.account_id} {issue.billing_date}): "
                  f"{issue.problem}", markup=False)
    if result.budgets or result.balances:
        wrong = [p for p in [*result.budgets, *result.balances] if not p.ok]
        out.print(f"  budgets and credits: {plural(len(result.budgets), 'budget')} and "
                  f"{plural(len(result.balances), 'balance')} proved from the log, "
                  f"{plural(len(wrong), 'mismatch', 'mismatches')}", markup=False)
        for proof in result.budgets:
            if not proof.ok:
                out.print(f"    budget {proof.budget_id} ({proof.account_id}): spent {proof.spent:,} {proof.unit}, "
                          f"the log says {proof.spent_log:,}"
                          + ("" if proof.definition_matches else "; its row differs from its last event"),
                          markup=False)
        for proof in result.balances:
            if not proof.ok:
                out.print(f"    credit balance of {proof.account_id}: {proof.balance:,} micros, "
                          f"the log says {proof.balance_log:,}", markup=False)
    if result.log_changed:
        out.print("  the log changed during the audit (a compaction ran): run it again", markup=False)
    _print_differences(result.differences, result.difference_count, limit)


@app.command()
def report(
    ctx: typer.Context,
    account: str | None = typer.Option(None, "--account", "--account-id", help="Only this account."),
    user: str | None = typer.Option(None, "--user", "--user-id", help="Only this user."),
    start: str | None = typer.Option(None, "--from", metavar="YYYY-MM-DD", help="First billing date."),
    end: str | None = typer.Option(None, "--to", metavar="YYYY-MM-DD", help="Last billing date (inclusive)."),
    charge_type: str | None = typer.Option(None, "--charge-type"),
    provider: str | None = typer.Option(None, "--provider"),
    model: str | None = typer.Option(None, "--model"),
    group_by: str | None = typer.Option(
        None, "--group-by", metavar="COLUMNS",
        help="Columns to group by, comma-separated, among account_id, user_id, billing_date, charge_type, "
             "provider and model [default: all six]."),
    format: str = typer.Option("table", "--format", help="table, csv or json."),
    no_project: bool = typer.Option(False, "--no-project", help="Report the records as they stand."),
) -> None:
    """Daily billing records, filtered and grouped.

    Example: ledger report --account acme --from 2026-01-01 --to 2026-01-31 --group-by billing_date,model
    """
    if format not in ("table", "csv", "json"):
        raise CliError(f"--format: choose table, csv or json, not {format!r}")
    first, last = parse_day(start, "--from"), parse_day(end, "--to")
    if first and last and first > last:
        raise CliError(f"--from {first} is after --to {last}")
    groups = _group_by(group_by)
    with needed("projections.reports", "report"):
        from projections import reports
    ledger = state_of(ctx).ledger()
    if account is not None:
        ledger.get_account(account)  # UnknownAccount: one clear line
    if not no_project:
        run_projector(ledger)
    rows = reports.records(ledger, account_id=account, start=first, end=last, group_by=groups,
                           charge_type=charge_type, provider=provider, model=model, user_id=user)
    for row in rows:
        if row["billing_date"] is not None:
            row["billing_date"] = row["billing_date"].isoformat()
    shown = [name for name in KEY_COLUMNS if name in groups]
    if format == "json":
        emit_json([{k: json_value(v) if k in KEY_COLUMNS else v for k, v in row.items()} for row in rows])
    elif format == "csv":
        columns = (*shown, *VALUE_COLUMNS)
        write_csv(sys.stdout, columns, ([row[k] for k in columns] for row in rows))
    else:
        print_records(rows, shown)


def _group_by(value: str | None) -> tuple[str, ...]:
    if value is None:
        return KEY_COLUMNS
    wanted = [part.strip() for part in value.split(",") if part.strip()]
    unknown = [name for name in wanted if name not in KEY_COLUMNS]
    if unknown or not wanted:
        raise CliError(f"--group-by: unknown column(s) {', '.join(unknown) or '(none given)'}; "
                       f"choose from {','.join(KEY_COLUMNS)}")
    return tuple(name for name in KEY_COLUMNS if name in wanted)


def print_records(rows: list[dict[str, Any]], shown: list[str], title: str | None = None) -> None:
    if not rows:
        out.print("no records match")
        return
    table = Table(*shown, *(Column(HEADINGS.get(name, name), justify="right") for name in VALUE_COLUMNS),
                  title=title, show_footer=True)
    for row in rows:
        table.add_row(*(shown_value(row[k]) for k in shown),
                      *(show_figure(k, row[k]) for k in VALUE_COLUMNS))
    totals = {k: sum(row[k] for row in rows) for k in VALUE_COLUMNS}
    for column, name in zip(table.columns[len(shown):], VALUE_COLUMNS):
        column.footer = show_figure(name, totals[name])
    if shown:
        table.columns[0].footer = "total"
    print_table(table)


@app.command()
def compact(
    ctx: typer.Context,
    before: str = typer.Option(..., "--before", metavar="YYYY-MM-DD",
                               help="Compact closed billing days before this date."),
    grace_days: int | None = typer.Option(None, "--grace-days", min=0,
                                             help="Days a closed day must be old [default: LEDGER_COMPACTION_GRACE_DAYS]."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be pruned; change nothing."),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """Roll up closed days, snapshot accounts, prune the raw events (after projecting).

    A day is compacted once it is closed and every event of it was recorded
    more than the grace period ago: the grace counts from the recording time,
    so charges imported or recorded late for old days wait for it too. The
    summary names the reason each day left for later was held back.

    Example: ledger compact --before 2026-01-01
    """
    day = parse_day(before, "--before")
    with needed("ledger.compaction", "compaction"):
        from ledger import compaction
    ledger = state_of(ctx).ledger()
    _, position = run_projector(ledger)
    grace = timedelta(days=grace_days) if grace_days is not None else None
    with progress_bar("compacting accounts", total=None) as update:
        result = compaction.compact(
            ledger, before=day, projected_position=position, grace=grace, dry_run=dry_run,
            progress=lambda done, total: update(done, total=total),
        )
    if not dry_run and result.rollups_written:
        run_projector(ledger, "projecting the rollups")  # records now stand on the rollups
    if json_output:
        emit_json(dataclasses.asdict(result))
        return
    verb = "would prune" if dry_run else "pruned"
    out.print(f"{verb} {plural(result.events_pruned, 'raw event')} (~{result.bytes_pruned:,} bytes) in "
              f"{plural(result.days, 'account-day')} of {plural(result.accounts, 'account')}; "
              f"{plural(result.rollups_written, 'rollup')} {'to write' if dry_run else 'written'}", markup=False)
    if result.skipped:
        note(held_back(result))
