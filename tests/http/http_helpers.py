"""Helpers and fixtures the HTTP tests share (imported by each test module, so no second conftest).

The app on the test's store through the ASGI client, and a real ``ledger
serve``. Keys are made the way an operator makes them: through the library
for the ASGI tests, through ``ledger keys create --json`` for the server.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from ledger_service.http import create_app
from ledger_service.keys import create_key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ledger_command(url: str, *args: str) -> str:
    """``ledger --database-url URL ARGS`` as a user runs it; its stdout."""
    result = subprocess.run([sys.executable, "-m", "ledger_service.cli", "--database-url", url, *args],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
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
    process: subprocess.Popen
    log: IO[str]

    def output(self) -> str:
        """What the server has printed so far (its log file is never an unread pipe)."""
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def new_key(self, *args: str) -> str:
        return json.loads(ledger_command(self.database_url, "keys", "create", "--json", *args))["key"]


def wait_healthy(url: str, process: subprocess.Popen, seconds: float = 30) -> bool:
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
    /healthz answers. A test that stops the server and starts it again on the same address passes the port."""
    port = port or free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # The server's output goes to a file, never an unread pipe: a burst of logged
    # tracebacks would fill the pipe and block the server mid-test.
    with tempfile.TemporaryFile(mode="w+") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "ledger_service.cli", "--database-url", store_url, "serve",
             "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        url = f"http://127.0.0.1:{port}"
        try:
            if not wait_healthy(url, process):
                log.seek(0)
                if process.poll() is not None:
                    raise RuntimeError(f"ledger serve exited: {log.read()}")
                raise RuntimeError(f"ledger serve did not come up: {log.read()}")
            yield Server(url, store_url, process, log)
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def server(store_url) -> Iterator[Server]:
    """``ledger serve`` on the test's store."""
    with serving(store_url) as running:
        yield running
