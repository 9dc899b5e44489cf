"""``ledger serve``: the HTTP API on uvicorn, with the same settings as every command."""

from __future__ import annotations

import os

import typer

from ledger_service.cli.app import app, note, state_of


@app.command()
def serve(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8000, "--port", min=0, max=65535),
    workers: int = typer.Option(1, "--workers", min=1, help="Server processes."),
    log_level: str = typer.Option("warning", "--log-level", help="uvicorn's log level."),
) -> None:
    """Serve the HTTP API (OpenAPI at /openapi.json, docs at /docs); keys from `ledger keys`.

    Example: ledger serve --port 8000 --workers 2
    """
    import uvicorn

    state = state_of(ctx)
    state.settings()  # a bad database URL or zone fails here, named, before the server starts
    # Worker processes read their settings from the environment, like every process of the ledger.
    if state.database_url:
        os.environ["LEDGER_DATABASE_URL"] = state.database_url
    if state.billing_tz:
        os.environ["LEDGER_BILLING_TZ"] = state.billing_tz
    note(f"serving the ledger API on http://{host}:{port} (docs at /docs)")
    uvicorn.run("ledger_service.http:app_from_environment", factory=True, host=host, port=port,
                workers=workers, log_level=log_level, access_log=False, server_header=False)
