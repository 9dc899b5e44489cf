"""``ledger webhooks``: endpoints for budget alerts, delivery without a worker, and the delivery log."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from ledger_service.cli.app import (
    EXIT,
    CliError,
    app,
    emit_json,
    needed,
    note,
    out,
    print_table,
    state_of,
)
from ledger_service.wording import plural

webhooks_app = typer.Typer(
    help="Webhook endpoints for budget threshold alerts (signed POSTs, retried), and their delivery log.",
    no_args_is_help=True,
)
app.add_typer(webhooks_app, name="webhooks")

STATES = ("pending", "delivered", "failed")


@webhooks_app.command("add")
def webhooks_add(
    ctx: typer.Context,
    url: str = typer.Argument(..., help="Where alerts are POSTed (http:// or https://)."),
    secret: str | None = typer.Option(None, "--secret", help="Signs each POST (at least 16 characters); "
                                      "default: a new random one."),
    account: str | None = typer.Option(None, "--account", "--account-id", help="Only this account's alerts "
                                       "(default: every account's)."),
    json_output: bool = typer.Option(False, "--json", help="Print the endpoint and its secret as JSON."),
) -> None:
    """Register an endpoint and print its id and its signing secret, this once.

    Each POST carries Ledger-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">.

    Example: ledger webhooks add https://hooks.example.com/ledger --account acme
    """
    endpoint = state_of(ctx).ledger().add_webhook(url, secret=secret, account_id=account)
    if json_output:
        emit_json(endpoint.to_dict(with_secret=True))
        return
    out.print(f"id: {endpoint.endpoint_id}", markup=False)
    out.print(f"secret: {endpoint.secret}", markup=False)
    scope = f"account {endpoint.account_id}" if endpoint.account_id else "every account"
    note(f"webhook {endpoint.endpoint_id} receives the alerts of {scope}; "
         "the secret is shown this once, give it to the receiver to verify signatures")


@webhooks_app.command("list")
def webhooks_list(ctx: typer.Context, json_output: bool = typer.Option(False, "--json")) -> None:
    """List the registered endpoints (never their secrets).

    Example: ledger webhooks list
    """
    endpoints = state_of(ctx).ledger().webhooks()
    if json_output:
        emit_json([endpoint.to_dict() for endpoint in endpoints])
        return
    if not endpoints:
        out.print("no webhooks yet")
        return
    table = Table("id", "url", "account", "created")
    for endpoint in endpoints:
        table.add_row(endpoint.endpoint_id, endpoint.url, endpoint.account_id or "(all)",
                      endpoint.created_at.isoformat(timespec="seconds"))
    print_table(table)


@webhooks_app.command("remove")
def webhooks_remove(
    ctx: typer.Context,
    endpoint_id: str = typer.Argument(..., help="The id shown by `ledger webhooks list`."),
) -> None:
    """Stop posting to an endpoint; its deliveries not yet made are dropped (failed in the log).

    Example: ledger webhooks remove wh_3f9c0a1b2c3d4e5f
    """
    state_of(ctx).ledger().remove_webhook(endpoint_id)
    out.print(f"removed webhook {endpoint_id}", markup=False)


@webhooks_app.command("deliver")
def webhooks_deliver(
    ctx: typer.Context,
    check: bool = typer.Option(True, "--check/--no-check", help="Fire crossed budget thresholds first."),
    limit: int = typer.Option(100, "--limit", min=1, help="Most delivery attempts in this run."),
    json_output: bool = typer.Option(False, "--json", help="Print each attempt as JSON."),
) -> None:
    """Fire crossed thresholds and deliver the webhooks due now, in this process (no worker needed).

    One pass: a failed delivery is retried by a later run after its backoff
    (LEDGER_WEBHOOK_RETRY_FIRST_SECONDS, doubling). Exit code 3 when an
    attempt failed. A running `ledger worker` does this every
    LEDGER_BUDGET_CHECK_SECONDS by itself.

    Example: ledger webhooks deliver
    """
    state = state_of(ctx)
    settings = state.process_settings()
    with needed("jobs.webhooks", "webhook delivery"):
        from jobs.webhooks import check_and_deliver
    summary = check_and_deliver(state.ledger(), check=check, settings=settings.jobs, limit=limit)
    if json_output:
        emit_json({"fired": summary.fired, "attempts": [r.to_dict() for r in summary.results]})
    else:
        for result in summary.results:
            out.print(_attempt_line(result), markup=False)
        note(f"{plural(summary.fired, 'alert')} fired, {plural(len(summary.results), 'delivery attempt')}")
    if any(not r.delivered and r.recorded for r in summary.results):
        raise typer.Exit(EXIT["partial"])


def _attempt_line(result: Any) -> str:
    where = f"{result.alert_id} -> {result.endpoint_id} ({result.url}) attempt {result.attempt}"
    if result.delivered:
        return f"delivered {where}: HTTP {result.status}"
    if not result.recorded:
        return f"dropped {where}: the endpoint was removed"
    then = "gave up" if result.state == "failed" else \
        f"retry at {result.next_attempt_at.isoformat(timespec='seconds')}"
    return f"failed {where}: {result.error}; {then}"


@webhooks_app.command("log")
def webhooks_log(
    ctx: typer.Context,
    account: str | None = typer.Option(None, "--account", "--account-id", help="Only this account's alerts."),
    state: str | None = typer.Option(None, "--state", help="pending, delivered or failed."),
    limit: int = typer.Option(100, "--limit", min=1, help="Most rows, newest alerts first."),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """The delivery log: each alert per endpoint, its state, attempts and last outcome.

    Example: ledger webhooks log --state failed
    """
    if state is not None and state not in STATES:
        raise CliError(f"--state: choose one of {', '.join(STATES)}")
    with needed("jobs.webhooks", "the delivery log"):
        from jobs.webhooks import delivery_log
    rows = delivery_log(state_of(ctx).ledger(), account_id=account, state=state, limit=limit)
    if json_output:
        emit_json(rows)
        return
    if not rows:
        out.print("no deliveries yet")
        return
    table = Table("alert", "account", "budget", "threshold", "endpoint", "state", "attempts", "last",
                  "next attempt", "delivered")
    for row in rows:
        last = row["last_error"] or (f"HTTP {row['last_status']}" if row["last_status"] is not None else "-")
        table.add_row(row["alert_id"], row["account_id"], row["budget_id"], f"{row['threshold']}%",
                      row["endpoint_id"], row["state"], str(row["attempts"]), last,
                      row["next_attempt_at"].isoformat(timespec="seconds") if row["state"] == "pending" else "-",
                      row["delivered_at"].isoformat(timespec="seconds") if row["delivered_at"] else "-")
    print_table(table)
