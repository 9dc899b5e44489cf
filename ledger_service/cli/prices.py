"""Commands on prices: set, list and import the catalogue, and reprice the log."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import typer
from rich.table import Column, Table

from ledger.money import format_micros
from ledger_service.cli.app import (
    CliError,
    app,
    emit_json,
    needed,
    note,
    out,
    parse_day,
    print_table,
    progress_bar,
    state_of,
)
from ledger_service.wording import plural

if TYPE_CHECKING:
    from ledger import Price

prices_app = typer.Typer(
    help="The price catalogue: integer micro-units per million tokens, each with an effective-from time.",
    no_args_is_help=True,
)
app.add_typer(prices_app, name="prices")


@prices_app.command("set")
def prices_set(
    ctx: typer.Context,
    provider: str | None = typer.Option(None, help="Provider the price is for (absent: unspecified)."),
    model: str | None = typer.Option(None, help="Model the price is for (absent: unspecified)."),
    charge_type: str | None = typer.Option(None, help="Only this charge type [default: any]."),
    prompt: int = typer.Option(..., "--prompt", metavar="MICROS", help="Micro-units per million prompt tokens."),
    completion: int = typer.Option(..., "--completion", metavar="MICROS",
                                   help="Micro-units per million completion tokens."),
    per_call: int = typer.Option(0, "--per-call", metavar="MICROS", help="Fixed micro-units per charge."),
    effective_from: str | None = typer.Option(None, metavar="TIME",
                                                 help="ISO 8601 with a zone [default: now]."),
    note_text: str | None = typer.Option(None, "--note", help="Why, for whoever reads the catalogue."),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """Set a price from a moment on; earlier charges keep the price they were costed with.

    Example: ledger prices set --provider openai --model gpt-4o --prompt 2500000
    --completion 10000000 --effective-from 2026-01-01T00:00:00Z
    """
    fields = {"provider": provider, "model": model, "charge_type": charge_type,
              "prompt_micros_per_million": prompt, "completion_micros_per_million": completion,
              "per_call_micros": per_call, "effective_from": effective_from, "note": note_text}
    ledger = state_of(ctx).ledger()
    before = ledger.price_table(refresh=True).version
    price = ledger.set_price(**{k: v for k, v in fields.items() if v is not None})
    if json_output:
        emit_json(price.as_dict())
        return
    verb = "set" if price.version > before else "already in the catalogue:"
    out.print(f"{verb} price version {price.version}: {_describe(price, ledger.settings.currency)}", markup=False)


@prices_app.command("list")
def prices_list(
    ctx: typer.Context,
    at: str | None = typer.Option(None, "--at", metavar="TIME",
                                     help="The prices in effect at this moment [default: now]."),
    all_: bool = typer.Option(False, "--all", help="Every price ever set, in version order."),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """The prices in effect now (or --at a moment), or --all of them.

    Example: ledger prices list --at 2026-03-01T00:00:00Z
    """
    ledger = state_of(ctx).ledger()
    table_of_prices = ledger.price_table(refresh=True)
    if all_:
        shown = table_of_prices.prices
    else:
        shown = table_of_prices.current(_moment(at, "--at") if at else None)
    if json_output:
        emit_json([p.as_dict() for p in shown])
        return
    if not shown:
        out.print("no prices" + ("" if all_ else " in effect") + "; set one with: ledger prices set")
        return
    print_table(_price_table(shown, ledger.settings.currency))


@prices_app.command("import")
def prices_import(
    ctx: typer.Context,
    path: str = typer.Argument(..., metavar="FILE", help="A .toml or .json catalogue file."),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """Set every price of a catalogue file, in one transaction (all or none).

    Prices already in the catalogue are left alone, so importing a file again
    changes nothing. TOML: currency = "USD" and [[price]] tables with provider,
    model, charge_type, prompt_micros_per_million, completion_micros_per_million,
    per_call_micros, effective_from, note.

    Example: ledger prices import prices.toml
    """
    from ledger.pricing import load_catalogue_file

    ledger = state_of(ctx).ledger()
    entries = load_catalogue_file(path, ledger.settings.charge_types, ledger.settings.currency)
    before = ledger.price_table(refresh=True).version
    prices = ledger.set_prices(entries)
    added = sum(1 for p in prices if p.version > before)
    if json_output:
        emit_json({"prices": len(prices), "added": added, "version": ledger.price_table().version})
        return
    out.print(f"imported {plural(len(prices), 'price')} from {path}: {added:,} new, {len(prices) - added:,} "
              f"already in the catalogue; catalogue version {ledger.price_table().version}", markup=False)


@app.command()
def reprice(
    ctx: typer.Context,
    catalogue: str = typer.Option(..., "--catalogue", metavar="FILE", help="The catalogue to price with."),
    start: str | None = typer.Option(None, "--from", metavar="YYYY-MM-DD", help="First billing date."),
    end: str | None = typer.Option(None, "--to", metavar="YYYY-MM-DD", help="Last billing date (inclusive)."),
    limit: int = typer.Option(1000, min=1, help="Account-days listed at most."),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """What the log's charges would cost under another catalogue, per account and day.

    Reads the log into a scratch projection in memory; changes nothing.

    Example: ledger reprice --catalogue prices-2027.toml --from 2026-11-01
    """
    from ledger.pricing import load_catalogue_file, table_of

    first, last = parse_day(start, "--from"), parse_day(end, "--to")
    if first and last and first > last:
        raise CliError(f"--from {first} is after --to {last}")
    ledger = state_of(ctx).ledger()
    currency = ledger.settings.currency
    prices = table_of(load_catalogue_file(catalogue, ledger.settings.charge_types, currency), currency)
    with needed("projections.reprice", "repricing"):
        from projections import reprice as repricing
    with progress_bar("repricing the log"):
        result = repricing.reprice(ledger, prices, first, last)
    if json_output:
        emit_json(result.to_dict())
        return
    changed = result.changed
    before, after = result.total("cost_micros"), result.total("repriced_micros")
    out.print(f"{plural(len(result.days), 'account-day')} repriced up to position {result.position:,}: "
              f"{format_micros(before, currency)} as recorded, {format_micros(after, currency)} repriced, "
              f"difference {format_micros(after - before, currency)}", markup=False)
    if not changed:
        out.print("no account-day changes")
        return
    table = Table("account", "date", Column("charges", justify="right"), Column("recorded", justify="right"),
                  Column("repriced", justify="right"), Column("difference", justify="right"),
                  Column("unpriced", justify="right"), "basis")
    for day in changed[:limit]:
        table.add_row(day.account_id, day.billing_date.isoformat(), f"{day.charges:,}",
                      format_micros(day.cost_micros), format_micros(day.repriced_micros),
                      format_micros(day.difference_micros),
                      f"{day.unpriced_charges:,} -> {day.repriced_unpriced:,}", day.basis)
    print_table(table)
    if len(changed) > limit:
        note(f"... and {plural(len(changed) - limit, 'more account-day', 'more account-days')} "
             "(--limit, or --json for all)")


def _moment(value: str, option: str) -> datetime:
    from ledger.charges import instant_field

    errors: dict[str, str] = {}
    moment, _ = instant_field({option: value}, option, errors, None)
    if errors or moment is None:
        raise CliError(f"{option}: {errors.get(option, 'not a date-time')}")
    return moment


def _describe(price: Price, currency: str) -> str:
    key = "/".join(v or "*" for v in (price.provider, price.model, price.charge_type))
    fee = f", {format_micros(price.per_call_micros)} per call" if price.per_call_micros else ""
    return (f"{key} from {price.effective_from.isoformat()}: {format_micros(price.prompt_micros_per_million)} "
            f"prompt, {format_micros(price.completion_micros_per_million)} completion {currency} per "
            f"million tokens{fee}")


def _price_table(prices: list[Price], currency: str) -> Table:
    table = Table(Column("version", justify="right"), "provider", "model", "charge type", "effective from",
                  Column(f"prompt {currency}/M", justify="right"), Column(f"completion {currency}/M", justify="right"),
                  Column("per call", justify="right"), "note")
    for p in prices:
        table.add_row(str(p.version), p.provider or "-", p.model or "-", p.charge_type or "any",
                      p.effective_from.isoformat(), format_micros(p.prompt_micros_per_million),
                      format_micros(p.completion_micros_per_million), format_micros(p.per_call_micros),
                      p.note or "")
    return table
