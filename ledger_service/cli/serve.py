"""``ledger serve``: the HTTP API on uvicorn, with the same settings as every command.

The command reads the settings (its options and the environment) and hands
them to every server process (:mod:`ledger_service.server`).
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

import typer

from ledger_service.cli.app import EXIT, CliError, app, note, state_of

if TYPE_CHECKING:
    from ledger.settings import HttpSettings


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
    from ledger_service.server import ServerConfig, run_server

    state = state_of(ctx)
    state.settings()  # a bad database URL or zone fails here, named, before the server starts
    check_address(host, port)
    settings = state.process_settings()
    settings = settings.model_copy(update={"http": prepare_secret_key(settings.http)})
    note(f"serving the ledger API on http://{host}:{port} (docs at /docs)")
    try:
        run_server(ServerConfig(settings, host=host, port=port, workers=workers, log_level=log_level,
                                access_log=False, server_header=False))
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


def prepare_secret_key(http: HttpSettings) -> HttpSettings:
    """Find or make the secret key before the workers start, say where it is, and point them at it.

    Made here, once, so that every worker reads the same file: the settings
    returned name it.
    """
    from ledger_service.secret_key import SecretKeyError, load_secret_key

    try:
        key = load_secret_key(http)
    except SecretKeyError as exc:
        raise CliError(str(exc)) from None
    if key.path is None:
        note("secret key: from LEDGER_SECRET_KEY")
        return http
    if key.created:
        note(f"secret key: generated a new one in {key.path} (mode 0600)")
    else:
        note(f"secret key: read from {key.path}")
    if key.readable_by_others:
        note(f"warning: {key.path} is readable by other users; chmod 600 it")
    return http.model_copy(update={"secret_key_file": key.path})
