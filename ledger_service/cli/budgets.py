"""``ledger budgets`` and ``ledger credits``: bound an account's spend, and grant it prepaid credit.

Both groups are thin over the :class:`~ledger.Ledger` API: the core
validates and names each bad field, the CLI only turns options into its
arguments and its answers into lines, tables or JSON. Money is shown as the
rest of the CLI shows micro-units (six decimals of the currency, exact);
tokens as counts.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import typer
from rich.table import Column, Table

from ledger.money import format_micros
from ledger_service.cli.app import CliError, app, emit_json, out, print_table, state_of
from ledger_service.wording import shown

if TYPE_CHECKING:
    from ledger.budget_rules import BudgetStatus
    from ledger.budgets import BudgetSet
    from ledger.credits import Balance, CreditGrant

budgets_app = typer.Typer(
    help="Budgets: bound an account's (or one user's) spend in cost or tokens per day, month or in total.",
    no_args_is_help=True,
)
app.add_typer(budgets_app, name="budgets")

credits_app = typer.Typer(
    help="Prepaid credits: grant an account credit in micro-units, and see what is left of it.",
    no_args_is_help=True,
)
app.add_typer(credits_app, name="credits")


# -- budgets ------------------------------------------------------------------------------


@budgets_app.command("set")
def budgets_set(
    ctx: typer.Context,
    budget_id: str = typer.Argument(..., metavar="BUDGET_ID", help="The budget's id (yours to choose)."),
    account: str = typer.Option(..., "--account", "--account-id", help="The account the budget bounds."),
    user: str | None = typer.Option(None, "--user", "--user-id", help="Only this user's spend within the account."),
    limit_micros: int | None = typer.Option(None, "--limit-micros", metavar="N",
                                               help="A cost limit, in micro-units of the currency."),
    limit_tokens: int | None = typer.Option(None, "--limit-tokens", metavar="N", help="A limit in total tokens."),
    credits: bool = typer.Option(False, "--credits", help="The limit is the account's prepaid credit balance."),
    period: str | None = typer.Option(None, "--period", metavar="PERIOD",
                                         help="day, month or total [default: month; total with --credits]."),
    mode: str = typer.Option("hard", "--mode", metavar="MODE",
                             help="hard (reservations beyond the limit are refused) or soft (alerts only)."),
    thresholds: str = typer.Option("50,80,100", "--thresholds", metavar="PERCENTS",
                                   help="Alert thresholds, integer percents of the limit, comma-separated."),
    json_output: bool = typer.Option(False, "--json", help="Print the status with created and changed."),
) -> None:
    """Create or change a budget (an event in the log); setting it again as it is changes nothing.

    Give exactly one limit: --limit-micros, --limit-tokens or --credits.

    Example: ledger budgets set acme-monthly --account acme --limit-micros 500000000 --thresholds 80,100
    """
    given = [name for name, value in (("--limit-micros", limit_micros), ("--limit-tokens", limit_tokens),
                                      ("--credits", credits or None)) if value is not None]
    if len(given) != 1:
        raise CliError("invalid budget: limit: give exactly one of --limit-micros N, --limit-tokens N or --credits"
                       + (f" (got {', '.join(given)})" if given else ""))
    if period is None:
        period = "total" if credits else "month"
    done = state_of(ctx).ledger().set_budget(
        budget_id, account_id=account, user_id=user, limit_micros=limit_micros, limit_tokens=limit_tokens,
        limit="credits" if credits else None, period=period, mode=mode, thresholds=_thresholds(thresholds),
    )
    if json_output:
        emit_json({**done.status.to_dict(), "created": done.created, "changed": done.changed})
        return
    out.print(f"{_verb(done)} budget {done.status.budget_id}: {_status_text(done.status, _currency(ctx))}",
              markup=False)


@budgets_app.command("list")
def budgets_list(
    ctx: typer.Context,
    account: str | None = typer.Option(None, "--account", "--account-id", help="Only this account's budgets."),
    json_output: bool = typer.Option(False, "--json", help="Print a JSON array of statuses."),
) -> None:
    """Every budget's status now: limit, spent, held and remaining, in the budget's unit.

    Spent counts every recorded charge in the budget's scope and current
    period, net of reversals; held the reservations not yet captured,
    released or expired. remaining = limit - spent - held, never below 0.

    Example: ledger budgets list --account acme
    """
    statuses = state_of(ctx).ledger().budgets(account)
    if json_output:
        emit_json([status.to_dict() for status in statuses])
        return
    if not statuses:
        out.print("no budgets" + (f" for account {account}" if account else "") + "; set one with: ledger budgets set",
                  markup=False)
        return
    print_table(_budget_table(statuses, _currency(ctx)))


@budgets_app.command("remove")
def budgets_remove(
    ctx: typer.Context,
    budget_id: str = typer.Argument(..., metavar="BUDGET_ID", help="The id shown by `ledger budgets list`."),
    json_output: bool = typer.Option(False, "--json", help='Print {"budget_id": ..., "removed": true}.'),
) -> None:
    """Remove a budget (an event in the log): its reservations stop counting against it.

    Example: ledger budgets remove acme-monthly
    """
    state_of(ctx).ledger().remove_budget(budget_id)
    if json_output:
        emit_json({"budget_id": budget_id, "removed": True})
        return
    out.print(f"removed budget {budget_id}", markup=False)


def _thresholds(text: str) -> list[int]:
    """``"50,80,100"`` as integers ("" is none); the core checks their range."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    try:
        return [int(part) for part in parts]
    except ValueError:
        raise CliError(f"invalid budget: thresholds: must be integer percents separated by commas, "
                       f"e.g. 50,80,100; got {text!r}") from None


def _verb(done: BudgetSet) -> str:
    if done.created:
        return "created"
    return "changed" if done.changed else "unchanged:"


def _currency(ctx: typer.Context) -> str:
    return state_of(ctx).ledger().settings.currency


def _amount(status: BudgetStatus, value: int) -> str:
    """A figure in the budget's unit: money exact to the micro-unit, tokens as a count."""
    return f"{value:,}" if status.unit == "tokens" else format_micros(value)


def _unit(status: BudgetStatus, currency: str) -> str:
    if status.unit == "tokens":
        return "tokens"
    return f"{currency} (credits)" if status.credits else currency


def _status_text(status: BudgetStatus, currency: str) -> str:
    """One line: whose, what limit over which period, and the figures now."""
    who = f"account {status.account_id}" + (f" user {status.user_id}" if status.user_id else "")
    unit = "tokens" if status.unit == "tokens" else currency
    if status.credits:
        limit = f"the prepaid balance ({_amount(status, status.limit)} {unit} unexpired)"
    else:
        limit = f"{_amount(status, status.limit)} {unit}"
    period = "in total" if status.period == "total" else f"a {status.period}"
    since = f", period from {status.period_start.isoformat()}" if status.period_start else ""
    return (f"{who}, {limit} {period} ({status.mode}{since}); spent {_amount(status, status.spent)}, "
            f"held {_amount(status, status.held)}, remaining {_amount(status, status.remaining)}; "
            f"thresholds {', '.join(f'{t}%' for t in status.thresholds) or 'none'}")


def _budget_table(statuses: list[BudgetStatus], currency: str) -> Table:
    table = Table("budget", "account", "user", "period", "period start", "mode", "unit",
                  Column("limit", justify="right"), Column("spent", justify="right"),
                  Column("held", justify="right"), Column("remaining", justify="right"), "thresholds")
    for s in statuses:
        table.add_row(s.budget_id, s.account_id, shown(s.user_id), s.period,
                      s.period_start.isoformat() if s.period_start else "-", s.mode, _unit(s, currency),
                      _amount(s, s.limit), _amount(s, s.spent), _amount(s, s.held), _amount(s, s.remaining),
                      ",".join(str(t) for t in s.thresholds) or "-")
    return table


# -- credits ------------------------------------------------------------------------------


@credits_app.command("grant")
def credits_grant(
    ctx: typer.Context,
    account: str = typer.Argument(..., metavar="ACCOUNT", help="The account to credit."),
    amount_micros: int = typer.Argument(..., metavar="AMOUNT_MICROS",
                                        help="The credit, in micro-units of the currency (50 USD is 50000000)."),
    expires_at: str | None = typer.Option(None, "--expires-at", metavar="TIME",
                                             help="ISO 8601 with a zone; the grant covers nothing from then on "
                                                  "[default: never]."),
    grant_id: str | None = typer.Option(None, "--grant-id", metavar="ID",
                                           help="Makes a retry idempotent: the same id grants once."),
    json_output: bool = typer.Option(False, "--json", help="Print the grant, with duplicate."),
) -> None:
    """Grant prepaid credit to an account (an event in the log).

    Example: ledger credits grant acme 50000000 --expires-at 2027-01-01T00:00:00Z --grant-id invoice-1042
    """
    ledger = state_of(ctx).ledger()
    grant = ledger.grant_credits(account, amount_micros, expires_at=expires_at, grant_id=grant_id)
    if json_output:
        data = grant.to_dict()
        data.pop("remaining_micros", None)  # a balance's figure: see `ledger credits list`
        emit_json({**data, "duplicate": grant.duplicate})
        return
    currency = ledger.settings.currency
    what = (f"{format_micros(grant.amount_micros, currency)} to account {grant.account_id} "
            f"(grant {grant.grant_id}, {_expiry(grant)})")
    if grant.duplicate:
        out.print(f"already granted: {what}, at {_moment(grant.granted_at)} (not granted again)", markup=False)
    else:
        out.print(f"granted {what}", markup=False)
    out.print(f"balance now {format_micros(ledger.balance(grant.account_id).balance_micros, currency)}",
              markup=False)


@credits_app.command("list")
def credits_list(
    ctx: typer.Context,
    account: str = typer.Argument(..., metavar="ACCOUNT", help="The account whose credit to show."),
    json_output: bool = typer.Option(False, "--json", help="Print the balance and its grants as JSON."),
) -> None:
    """An account's balance, granted, used and overage, and each grant with what it has left.

    Each billing day's spend is taken from the grants covering that day,
    the earliest-expiring first; spend no grant covered is overage.

    Example: ledger credits list acme
    """
    ledger = state_of(ctx).ledger()
    balance = ledger.balance(account)
    if json_output:
        emit_json(balance.to_dict())
        return
    out.print(_balance_text(balance, ledger.settings.currency), markup=False)
    if not balance.grants:
        out.print(f"no credit granted to account {account}; grant some with: ledger credits grant", markup=False)
        return
    print_table(_grant_table(balance.grants))


def _moment(value: datetime) -> str:
    return value.isoformat(timespec="seconds")


def _expiry(grant: CreditGrant) -> str:
    if grant.expires_at is None:
        return "never expires"
    return f"{'expired' if grant.expired else 'expires'} {_moment(grant.expires_at)}"


def _balance_text(balance: Balance, currency: str) -> str:
    return (f"account {balance.account_id}: balance {format_micros(balance.balance_micros, currency)}; "
            f"granted {format_micros(balance.granted_micros)} (unexpired grants), "
            f"used {format_micros(balance.used_micros)}, overage {format_micros(balance.overage_micros)}")


def _grant_table(grants: list[CreditGrant]) -> Table:
    table = Table("grant", "granted at", "expires at", Column("amount", justify="right"),
                  Column("left", justify="right"), "state")
    for g in grants:
        table.add_row(g.grant_id, _moment(g.granted_at), _moment(g.expires_at) if g.expires_at else "never",
                      format_micros(g.amount_micros), format_micros(g.remaining_micros or 0),
                      "expired" if g.expired else "active")
    return table

