"""``ledger serve``: the HTTP API on uvicorn, with the same settings as every command."""

from __future__ import annotations

import os
import socket

import typer

from ledger_service.cli.app import EXIT, CliError, app, note, state_of
from ledger_service.cli.config import settings_problems


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
    check_address(host, port)
    prepare_secret_key()
    note(f"serving the ledger API on http://{host}:{port} (docs at /docs)")
    try:
        uvicorn.run("ledger_service.http:app_from_environment", factory=True, host=host, port=port,
                    workers=workers, log_level=log_level, access_log=False, server_header=False)
    except SystemExit as exc:  # uvicorn's own startup failure (exit 3 would read as "import rejected")
        if exc.code not in (0, None):
            raise CliError(f"the server on {host}:{port} stopped at start (see above)",
                           code=EXIT["failed"]) from None
        raise


def check_address(host: str, port: int) -> None:
    """Refuse, in one line, an address the server could not listen on, before saying it serves there.

    The server binds the same way (address reuse on), so what binds here binds there.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise CliError(f"--host {host!r}: not an address of this machine ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise CliError(f"cannot listen on {host}:{port}: {exc.strerror.lower() if exc.strerror else exc}",
                           code=EXIT["failed"]) from None


def prepare_secret_key() -> None:
    """Find or make the secret key before the workers start, say where it is, and point them at it.

    Made here, once, so that every worker reads the same file.
    """
    from pydantic import ValidationError

    from ledger.settings import HttpSettings
    from ledger_service.secret_key import SecretKeyError, load_secret_key

    try:
        key = load_secret_key(HttpSettings())
    except SecretKeyError as exc:
        raise CliError(str(exc)) from None
    except ValidationError as exc:
        raise CliError(f"bad configuration: {settings_problems(exc, env_prefix='LEDGER_HTTP_')}") from None
    if key.path is None:
        note("secret key: from LEDGER_SECRET_KEY")
        return
    os.environ["LEDGER_SECRET_KEY_FILE"] = str(key.path)
    if key.created:
        note(f"secret key: generated a new one in {key.path} (mode 0600)")
    else:
        note(f"secret key: read from {key.path}")
    if key.readable_by_others:
        note(f"warning: {key.path} is readable by other users; chmod 600 it")
