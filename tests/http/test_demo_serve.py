"""``ledger demo --serve``: the demo ledger kept, an admin and a read key printed, the dashboard served on it."""

from __future__ import annotations

import re
import subprocess
import sys

import httpx

from http_helpers import free_port, wait_healthy
from test_dashboard_session import sign_in


def test_demo_serve_prints_keys_and_serves_the_dashboard(tmp_path):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "ledger_service.cli", "demo", "--dir", str(tmp_path), "--accounts", "3", "--days", "3",
         "--charges", "300", "--serve", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        lines: list[str] = []
        while not any(line.startswith("read key") for line in lines):
            line = process.stdout.readline()
            assert line, f"the demo stopped: {''.join(lines)[-2000:]}"
            lines.append(line)
        text = "".join(lines)
        admin = re.search(r"admin key \(every account\): (lk_\S+)", text).group(1)
        account, reader = re.search(r"read key \(account (\S+)\): (lk_\S+)", text).groups()
        base = f"http://127.0.0.1:{port}"
        assert wait_healthy(base, process), "the demo's server did not answer /healthz"
        with httpx.Client(base_url=base, follow_redirects=True) as browser:
            signed_in = sign_in(browser, admin)
            assert signed_in.status_code == 200 and signed_in.url.path == "/dashboard/overview"
            assert "Last audit" in signed_in.text and "clean at" in signed_in.text
        with httpx.Client(base_url=base, follow_redirects=True) as browser:
            signed_in = sign_in(browser, reader)
            assert signed_in.url.path == f"/dashboard/accounts/{account}"
        assert (tmp_path / "ledger.db").exists()
    finally:
        process.terminate()
        process.wait(timeout=30)
