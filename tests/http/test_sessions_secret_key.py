"""The secret key that signs the dashboard's form tokens lives outside the database: from
``LEDGER_SECRET_KEY``, ``LEDGER_SECRET_KEY_FILE``, or a file ``ledger serve`` makes once (mode 0600)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from http_helpers import free_port, wait_healthy
from ledger.settings import HttpSettings
from ledger_service.secret_key import SecretKeyError, default_path, load_secret_key


def serve_once(database_url: str, env: dict[str, str]) -> str:
    """Start ``ledger serve``, wait until it answers, stop it; what it printed."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "ledger_service.cli", "--database-url", database_url, "serve", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", process)
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    return output


def environment(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LEDGER_SECRET_KEY", "LEDGER_SECRET_KEY_FILE")}
    return {**env, "PYTHONUNBUFFERED": "1", **values}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_serve_makes_the_key_file_0600_and_the_next_reuses_it(tmp_path, sqlite_url):
    env = environment(XDG_CONFIG_HOME=str(tmp_path / "config"))
    path = tmp_path / "config" / "llm-usage-ledger" / "secret-key"
    first = serve_once(sqlite_url, env)
    assert f"secret key: generated a new one in {path} (mode 0600)" in first
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    key = path.read_text()
    assert len(key.strip()) >= 64
    second = serve_once(sqlite_url, env)
    assert f"secret key: read from {path}" in second and "generated" not in second
    assert path.read_text() == key
    assert key.strip() not in first + second


def test_the_key_file_setting_and_the_key_itself(tmp_path, sqlite_url):
    named = tmp_path / "keys" / "ledger.key"
    output = serve_once(sqlite_url, environment(LEDGER_SECRET_KEY_FILE=str(named), XDG_CONFIG_HOME=str(tmp_path)))
    assert f"generated a new one in {named}" in output and mode(named) == 0o600
    assert not (tmp_path / "llm-usage-ledger").exists()
    given = serve_once(sqlite_url, environment(LEDGER_SECRET_KEY="k" * 40, XDG_CONFIG_HOME=str(tmp_path)))
    assert "secret key: from LEDGER_SECRET_KEY" in given and "k" * 40 not in given
    short = subprocess.run([sys.executable, "-m", "ledger_service.cli", "--database-url", sqlite_url, "serve"],
                           env=environment(LEDGER_SECRET_KEY="short"), capture_output=True, text=True, timeout=60)
    assert short.returncode == 2
    assert short.stderr.startswith("error: bad configuration: LEDGER_SECRET_KEY must be at least 32 characters")
    assert "short" not in short.stderr  # a secret is never echoed


def test_processes_starting_together_agree_on_one_key(tmp_path):
    settings = HttpSettings(secret_key_file=tmp_path / "new" / "secret-key")
    with ThreadPoolExecutor(8) as pool:
        keys = list(pool.map(lambda _: load_secret_key(settings), range(16)))
    assert len({key.value for key in keys}) == 1 and sum(key.created for key in keys) == 1
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["secret-key"]  # no temporary file left


def test_a_short_key_file_and_the_default_place(tmp_path):
    short = tmp_path / "short"
    short.write_text("tiny\n")
    with pytest.raises(SecretKeyError, match="fewer than 32 characters"):
        load_secret_key(HttpSettings(secret_key_file=short))
    assert default_path({"XDG_CONFIG_HOME": "/etc/xdg-test"}) == Path("/etc/xdg-test/llm-usage-ledger/secret-key")
    assert default_path({}) == Path.home() / ".config" / "llm-usage-ledger" / "secret-key"
