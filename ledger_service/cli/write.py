"""Commands on the write side: record, import, reverse, accounts."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Column, Table

from ledger.charge_fields import CHARGE_FIELDS, SPECS
from ledger.measures import MEASURES
from ledger.money import format_micros
from ledger_service.cli.app import (
    EXIT,
    HEADINGS,
    app,
    emit_json,
    note,
    out,
    print_table,
    progress_bar,
    show_figure,
    state_of,
)
from ledger_service.wording import plural, shown

if TYPE_CHECKING:
    from ledger import Ledger, Receipt


def _cost_text(receipt: Receipt) -> str:
    if receipt.price_version is None:
        return "unpriced"
    return f"cost {format_micros(receipt.cost_micros)} (price version {receipt.price_version})"


def _stored_facts(ledger: Ledger, receipt: Receipt) -> dict[str, Any]:
    """The facts the charge was recorded with (the original's, for a duplicate)."""
    row = ledger.store.find_charge(receipt.account_id, receipt.charge_id)
    return json.loads(row.payload) if row is not None else {}


def _moment_text(value: Any) -> str:
    """An ISO 8601 time to the second, as stored (UTC)."""
    if not value:
        return "?"
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.isoformat(timespec="seconds")


def receipt_text(receipt: Receipt, facts: dict[str, Any]) -> str:
    """One line: which charge, whose, when it occurred and what it cost.

    The recording time is shown only for a duplicate, where it says when the
    original was recorded; the charge's own time is ``occurred_at``.
    """
    who = f"charge {receipt.charge_id} for account {receipt.account_id} (user {shown(facts.get('user_id'))})"
    occurred = f"occurred at {_moment_text(facts.get('occurred_at'))}"
    if receipt.duplicate:
        return (f"already recorded: {who}, {occurred}, first recorded at {_moment_text(receipt.recorded_at)}, "
                f"{_cost_text(receipt)} (not counted again)")
    return f"recorded {who}, {occurred}, {_cost_text(receipt)}"


#: What the command line adds to a field's description.
_CLI_NOTES = {"occurred_at": " It decides the billing date."}
#: Field names in a description (those of more than one word: one word is prose, "Model provider").
_FIELD_NAME = re.compile(r"\b(" + "|".join(name for name in CHARGE_FIELDS if "_" in name) + r")\b")


def _help(name: str) -> str:
    """A charge field's description (:mod:`ledger.charge_fields`), naming the other fields as options."""
    text = SPECS[name].description + _CLI_NOTES.get(name, "")
    return _FIELD_NAME.sub(lambda found: "--" + found.group(1).replace("_", "-"), text)


@app.command()
def record(
    ctx: typer.Context,
    account_id: str | None = typer.Option(None, "--account-id", "--account", help=_help("account_id")),
    user_id: str | None = typer.Option(None, "--user-id", "--user", help=_help("user_id")),
    charge_type: str | None = typer.Option(None, help=_help("charge_type")),
    provider: str | None = typer.Option(None, help=_help("provider")),
    model: str | None = typer.Option(None, help=_help("model")),
    prompt_tokens: int | None = typer.Option(None, help=_help("prompt_tokens")),
    completion_tokens: int | None = typer.Option(None, help=_help("completion_tokens")),
    total_tokens: int | None = typer.Option(None, help=_help("total_tokens")),
    charge_id: str | None = typer.Option(None, help=_help("charge_id")),
    occurred_at: str | None = typer.Option(None, help=_help("occurred_at")),
    reference: str | None = typer.Option(None, help=_help("reference")),
    session_key: str | None = typer.Option(None, help=_help("session_key")),
    user_profile_id: int | None = typer.Option(None, help=_help("user_profile_id")),
    json_output: bool = typer.Option(False, "--json", help="Print the receipt as JSON."),
) -> None:
    """Record one charge and print its receipt (durable when printed).

    The receipt names the charge's user ("-" when absent) and the time it
    occurred; --json prints the receipt the HTTP API answers with. A charge
    may carry no tokens (a subscription or a tool call) and no user.

    Example: ledger record --account-id acme --user-id ada --charge-type completion
    --provider openai --model gpt-4o --prompt-tokens 120 --completion-tokens 30
    """
    given = locals()  # the options are named as the charge's fields
    fields = {name: given[name] for name in CHARGE_FIELDS if given[name] is not None}
    ledger = state_of(ctx).ledger()
    receipt = ledger.record_charge(**fields)
    if json_output:
        emit_json(receipt.to_dict())
        return
    out.print(receipt_text(receipt, _stored_facts(ledger, receipt)), markup=False)


@app.command("import")
def import_(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="A .jsonl, .json or .csv file of charges.", show_default=False)],
    format: str | None = typer.Option(None, "--format", help="jsonl, json or csv [default: from the extension]."),
    batch_size: int = typer.Option(1_000, min=1, help="Lines per transaction."),
    rejects: Annotated[Path | None, typer.Option(help="Reject file [default: FILE.rejects.jsonl].")] = None,
    seed_export: bool = typer.Option(False, "--seed-export", show_default=False,
                                     help="FILE is an export of the seed's Charge table (id -> charge id "
                                     "seed-<id>, created_at -> occurred_at, naive = UTC)."),
    json_output: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Import charges from JSON Lines, a JSON array or CSV, in batches.

    JSON Lines and CSV are streamed; a .json file holding an array is read
    whole and its items numbered by position. Bad lines go to the reject file with their line number and errors; every
    valid line is recorded. Exit 0 when every line was recorded (or was
    already), 3 when some lines were rejected, 2 when the file is unusable.
    Lines without a charge_id get one derived from the file's digest and line
    number, so importing the same file again never charges twice.

    Example: ledger import charges.jsonl
    """
    from ledger.importer import import_file

    ledger = state_of(ctx).ledger()
    with progress_bar(f"importing {file.name}", total=None) as update:
        def progress(done: int, total: int) -> None:
            update(done, total=total)

        result = import_file(ledger, file, format=format, batch_size=batch_size,
                             seed_export=seed_export, rejects_path=rejects, progress=progress)
    if json_output:
        emit_json(result.to_dict())
    else:
        out.print(f"{plural(result.lines, result.noun)}: {result.recorded:,} recorded, {result.duplicates:,} "
                  f"already recorded, {result.rejected:,} rejected", markup=False)
    if result.rejected:
        for entry in result.sample:
            problems = "; ".join(f"{k}: {v}" for k, v in entry["errors"].items())
            where = f"item {entry['item']} (line {entry['line']})" if "item" in entry else f"line {entry['line']}"
            note(f"{where}: {problems}")
        more = result.rejected - len(result.sample)
        if more > 0:
            note(f"... and {more:,} more")
        note(f"{result.rejected:,} of {plural(result.lines, result.noun)} rejected; see {result.rejects_path}")
        raise typer.Exit(EXIT["partial"])


@app.command()
def reverse(
    ctx: typer.Context,
    charge_id: str = typer.Argument(..., help="The charge to cancel."),
    account: str | None = typer.Option(
        None, "--account", "--account-id", help="The charge's account (charge ids are unique per account); "
        "without it, the one account that used this id."),
    reason: str = typer.Option("", help="Why (kept with the reversal event)."),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """Cancel a recorded charge with a reversal event (the original stays in the log).

    Example: ledger reverse 7f9c... --account acme --reason "duplicate call billed by the client"
    """
    ledger = state_of(ctx).ledger()
    if account is None:
        account = ledger.account_of_charge(charge_id)  # unknown, or used by several accounts: says so
    reversal = ledger.reverse_charge(charge_id, reason, account_id=account)
    if json_output:
        emit_json(reversal.to_dict())
    else:
        out.print(f"reversed charge {reversal.charge_id} of account {reversal.account_id}", markup=False)


@app.command()
def accounts(
    ctx: typer.Context,
    account: Annotated[list[str] | None, typer.Argument(help="Accounts to show [default: all].")] = None,
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """Running totals per account, net of reversals, straight from the write side.

    Example: ledger accounts acme
    """
    ledger = state_of(ctx).ledger()
    wanted = list(account) if account else ledger.store.account_ids()
    rows = []
    for account_id in wanted:
        totals = ledger.account_totals(account_id)  # UnknownAccount names a missing one
        rows.append({"account_id": account_id, **dict(zip(MEASURES, totals.figures))})
    if json_output:
        emit_json(rows)
        return
    if not rows:
        out.print("no accounts yet")
        return
    table = Table("account", *(Column(HEADINGS.get(k, k), justify="right") for k in MEASURES))
    for row in rows:
        table.add_row(row["account_id"], *(show_figure(k, row[k]) for k in MEASURES))
    print_table(table)

