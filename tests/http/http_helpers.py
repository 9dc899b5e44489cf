"""Small helpers the HTTP tests share."""

from __future__ import annotations

import socket
import subprocess
import sys


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
