"""Helpers and fixtures the HTTP tests share (imported by each test module, so no second conftest).

The app on the test's store through the ASGI client, and a real ``ledger
serve``: one per test (``server``), or one per module and store
(``shared_server``) for tests that keep to rows of their own. Keys are made
the way an operator makes them: through the library for the ASGI tests,
through ``ledger keys create --json`` for the server (run in this process by
typer's runner: the same command, without starting Python again).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

import httpx
import pytest
from conftest import STORES, WORKER, database_beside, ensure_database, reset_postgres
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from bench.processes import SERVICE_MODULES, Forked, Process, preload, run_cli, stop
from ledger_service.cli import app as cli_app
from ledger_service.http import create_app
from ledger_service.keys import create_key

#: The fork server that starts ``ledger serve`` has the service imported (before it starts: at import).
preload(("bench.processes", *SERVICE_MODULES))

def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ledger_command(url: str, *args: str) -> str:
    """``ledger --database-url URL ARGS`` as a user runs it; its stdout."""
    result = subprocess.run([sys.executable, "-m", "ledger_service.cli", "--database-url", url, *args],
                            check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def ledger_cli(url: str, *args: str) -> str:
    """``ledger --database-url URL ARGS`` run in this process (typer's runner); its stdout.

    The same command as :func:`ledger_command` for a test's set-up (keys, prices), without the
    half second a new Python process costs; tests of the installed command use :func:`ledger_command`.
    """
    result = CliRunner().invoke(cli_app, ["--database-url", url, *args])
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr)
    return result.stdout



@dataclass
class Keys:
    admin: str
    ingest_any: str
    ingest_a: str
    read_a: str
    read_b: str


@pytest.fixture
def keys(ledger) -> Keys:
    return Keys(
        admin=create_key(ledger, "admin")[1],
        ingest_any=create_key(ledger, "ingest")[1],
        ingest_a=create_key(ledger, "ingest", "acct-a")[1],
        read_a=create_key(ledger, "read", "acct-a")[1],
        read_b=create_key(ledger, "read", "acct-b")[1],
    )


@pytest.fixture
def client(ledger) -> Iterator[TestClient]:
    with TestClient(create_app(ledger), raise_server_exceptions=True) as test_client:
        yield test_client


@dataclass
class Server:
    url: str
    database_url: str
    process: Process
    log: IO[str]

    def output(self) -> str:
        """What the server has printed so far (its log file is never an unread pipe)."""
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def new_key(self, *args: str) -> str:
        """A new key's secret: ``ledger keys create --json ARGS`` on the server's store."""
        return self.new_key_made(*args)["key"]

    def new_key_made(self, *args: str) -> dict[str, str]:
        """``ledger keys create --json ARGS`` on the server's store: the key's id and secret."""
        return json.loads(ledger_cli(self.database_url, "keys", "create", "--json", *args))


def wait_healthy(url: str, process: Process, seconds: float = 30) -> bool:
    """Whether the server at ``url`` answered ``/healthz`` before ``process`` exited or ``seconds`` passed."""
    deadline = time.monotonic() + seconds
    while process.poll() is None and time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return True
        except httpx.TransportError:
            time.sleep(0.1)
    return False


@contextmanager
def serving(store_url: str, port: int | None = None) -> Iterator[Server]:
    """``ledger serve`` on ``port`` (default: a free loopback port) for the ``with`` block, up when
    /healthz answers. A test that stops the server and starts it again on the same address passes the port.

    The command runs as ``python -m ledger_service.cli`` would run it, in a child of a fork server
    that imported the service once (a new interpreter costs about a second of CPU per start), with
    the test's environment of the moment; ``tests/e2e`` starts the installed script itself.
    """
    port = port or free_port()
    arguments = ["--database-url", store_url, "serve", "--host", "127.0.0.1", "--port", str(port)]
    # The server's output goes to a file, never an unread pipe: a burst of logged
    # tracebacks would fill the pipe and block the server mid-test.
    with tempfile.NamedTemporaryFile(mode="w+", prefix="ledger-serve-", suffix=".log") as log:
        process = Forked(run_cli, (arguments, {**os.environ, "PYTHONUNBUFFERED": "1"}, log.name))
        url = f"http://127.0.0.1:{port}"
        try:
            if not wait_healthy(url, process):
                log.seek(0)
                if process.poll() is not None:
                    raise RuntimeError(f"ledger serve exited: {log.read()}")
                raise RuntimeError(f"ledger serve did not come up: {log.read()}")
            yield Server(url, store_url, process, log)
        finally:
            stop(process, timeout=20)


@pytest.fixture
def server(store_url) -> Iterator[Server]:
    """``ledger serve`` on the test's store."""
    with serving(store_url) as running:
        yield running


@pytest.fixture(scope="module", params=STORES)
def module_store_url(request, tmp_path_factory) -> Iterator[str]:
    """A store for the module, once per store kind: empty when the module starts (and, on PostgreSQL, when it ends).

    On PostgreSQL a database apart (the run's or worker's + ``_serve``), so a test of the same module
    that empties the run's database (``store_url``, ``postgres_url``) never drops tables under a
    shared server that is still running.
    """
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('module-store') / 'ledger.db'}"
        return
    url = database_beside("serve")
    ensure_database(url, fresh=bool(WORKER))
    reset_postgres(url)
    yield url
    reset_postgres(url)


@pytest.fixture(scope="module")
def shared_server(module_store_url) -> Iterator[Server]:
    """One ``ledger serve`` for the module's tests, per store.

    For tests that use keys, accounts and ids of their own and neither stop the server, change its
    settings, need an empty store nor count the whole store; the others take ``server``.
    """
    with serving(module_store_url) as running:
        yield running
