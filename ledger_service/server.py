"""The HTTP server's processes, each with the settings of the command that started them.

``ledger serve`` reads its settings once, in the command, and hands them to
every server process: :class:`ServerConfig` is uvicorn's configuration
carrying them (uvicorn pickles its configuration into each worker process it
spawns), and installs them in the process before uvicorn calls
:func:`served_app`. No process reads the environment again, and the command
never writes it.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import uvicorn
from uvicorn.supervisors import Multiprocess

if TYPE_CHECKING:
    from fastapi import FastAPI

    from ledger.settings import ProcessSettings

#: uvicorn's exit code when the server could not start.
STARTUP_FAILURE = 3

_installed: ProcessSettings | None = None


class ServerConfig(uvicorn.Config):
    """uvicorn's configuration plus this process's settings, installed where the app is loaded."""

    def __init__(self, settings: ProcessSettings, **options: Any) -> None:
        self.settings = settings
        super().__init__(f"{__name__}:served_app", factory=True, **options)

    def load(self) -> None:
        global _installed
        _installed = self.settings
        super().load()


def served_app() -> FastAPI:
    """The app of one server process, on the settings :class:`ServerConfig` installed."""
    from ledger.application import Ledger
    from ledger_service.http import create_app

    if _installed is None:
        raise RuntimeError("no settings installed: start the server with run_server(ServerConfig(...))")
    return create_app(Ledger(_installed.ledger), _installed.http, dashboard=_installed.dashboard,
                      owns_ledger=True)


def run_server(config: ServerConfig) -> None:
    """Serve until stopped, in this process or in ``config.workers`` processes (as ``uvicorn.run``)."""
    server = uvicorn.Server(config=config)
    try:
        if config.workers > 1:
            Multiprocess(config, sockets=[config.bind_socket()]).run()
        else:
            server.run()
    except KeyboardInterrupt:
        pass
    if not server.started and config.workers == 1:
        sys.exit(STARTUP_FAILURE)
