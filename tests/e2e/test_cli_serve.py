"""``ledger serve`` on an address it cannot use: one line, the exit code for an operational failure."""

from __future__ import annotations

import socket
import subprocess
import sys


def test_a_busy_port_is_one_line_and_exit_1_before_anything_claims_to_serve(sqlite_url):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "ledger_service.cli", "--database-url", sqlite_url,
                                 "serve", "--port", str(port)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    assert result.stderr == f"error: cannot listen on 127.0.0.1:{port}: address already in use\n"
    assert "serving" not in result.stdout + result.stderr


def test_a_host_that_is_not_an_address_is_named(sqlite_url):
    result = subprocess.run([sys.executable, "-m", "ledger_service.cli", "--database-url", sqlite_url,
                             "serve", "--host", "no-such-host.invalid"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.startswith("error: --host 'no-such-host.invalid'")
