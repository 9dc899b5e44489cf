"""``ledger keys``: create, list and revoke the HTTP API's keys."""

from __future__ import annotations

import typer
from rich.table import Table

from ledger_service.cli.app import app, emit_json, note, out, print_table, state_of

keys_app = typer.Typer(help="API keys for `ledger serve`: admin, ingest or read, scoped to an account.",
                       no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    role: str = typer.Option(..., "--role", help="admin, ingest or read."),
    account: str | None = typer.Option(None, "--account", "--account-id", help="The only account the key acts for "
                                          "(required for read, optional for ingest)."),
    name: str = typer.Option("", "--name", help="A label to recognise the key by."),
    json_output: bool = typer.Option(False, "--json", help='Print {"id": ..., "key": ...}.'),
) -> None:
    """Create a key and print its secret, once: only a digest of it is stored.

    Example: ledger keys create --role read --account acme --name "acme dashboard"
    """
    from ledger_service.keys import create_key

    key, secret = create_key(state_of(ctx).ledger(), role, account, name)
    if json_output:
        emit_json({"id": key.id, "key": secret})
        return
    out.print(secret, markup=False)
    scope = f"account {key.account_id}" if key.account_id else "every account"
    note(f"key {key.id}: {key.role} for {scope}; it is shown this once, keep it secret")


@keys_app.command("list")
def keys_list(ctx: typer.Context, json_output: bool = typer.Option(False, "--json")) -> None:
    """List the keys (never their secrets), revoked ones included.

    Example: ledger keys list
    """
    from ledger_service.keys import list_keys

    keys = list_keys(state_of(ctx).ledger())
    if json_output:
        emit_json([key.to_dict() for key in keys])
        return
    if not keys:
        out.print("no keys yet")
        return
    table = Table("id", "role", "account", "name", "created", "revoked")
    for key in keys:
        table.add_row(key.id, key.role, key.account_id or "(all)", key.name,
                      key.created_at.isoformat(timespec="seconds"),
                      key.revoked_at.isoformat(timespec="seconds") if key.revoked_at else "-")
    print_table(table)


@keys_app.command("revoke")
def keys_revoke(
    ctx: typer.Context,
    key_id: str = typer.Argument(..., help="The id shown by `ledger keys list`."),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """Revoke a key: every server refuses it within LEDGER_HTTP_KEY_CACHE_SECONDS (default 1 s).

    Example: ledger keys revoke 3f9c0a1b2c3d4e5f
    """
    from ledger_service.keys import revoke_key

    key = revoke_key(state_of(ctx).ledger(), key_id)
    if json_output:
        emit_json(key.to_dict())
    else:
        out.print(f"revoked key {key.id} ({key.role}) at {key.revoked_at.isoformat(timespec='seconds')}",
                  markup=False)
