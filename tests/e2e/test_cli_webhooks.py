"""``ledger webhooks``: add (its secret printed once), list, remove, deliver without a worker, and the log.

``deliver`` posts to a real receiver on a loopback port (an ``http.server``
in a thread that keeps what it gets and refuses what it is told to).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

from ledger import Ledger, Settings
from ledger.webhooks import verify
from ledger_service.cli import app

runner = CliRunner()
SECRET = "whsec_cli_test_0123456789"


def run(url, *args):
    return runner.invoke(app, ["--database-url", url, *args])


class Receiver:
    """Answers ``status`` to every POST and keeps (headers, body)."""

    def __init__(self) -> None:
        self.status = 200
        self.requests: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"

    def thresholds(self) -> list[int]:
        return sorted(json.loads(body)["threshold"] for _, body in self.requests)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.server.shutdown()
    made.server.server_close()


@pytest.fixture
def ledger(store_url) -> Iterator[Ledger]:
    made = Ledger(Settings(database_url=store_url))
    yield made
    made.close()


def spend(ledger: Ledger, charge_id: str, tokens: int) -> None:
    ledger.record_charge(account_id="acme", user_id="u1", charge_id=charge_id, charge_type="completion",
                         prompt_tokens=tokens, completion_tokens=0)


def test_add_prints_id_and_secret_once_list_never_shows_it_remove(store_url):
    made = run(store_url, "webhooks", "add", "https://hooks.example.com/ledger", "--secret", SECRET,
               "--account", "acme")
    assert made.exit_code == 0, made.stderr
    lines = made.stdout.splitlines()
    assert lines[0].startswith("id: wh_") and lines[1] == f"secret: {SECRET}"
    endpoint_id = lines[0].removeprefix("id: ")
    assert "shown this once" in made.stderr and "account acme" in made.stderr

    generated = run(store_url, "webhooks", "add", "http://127.0.0.1:9/all", "--json")
    assert generated.exit_code == 0, generated.stderr
    created = json.loads(generated.stdout)
    assert created["secret"].startswith("whsec_") and len(created["secret"]) >= 16
    assert created["account_id"] is None

    listed = json.loads(run(store_url, "webhooks", "list", "--json").stdout)
    assert [(e["endpoint_id"], e["url"], e["account_id"]) for e in listed] == [
        (endpoint_id, "https://hooks.example.com/ledger", "acme"),
        (created["endpoint_id"], "http://127.0.0.1:9/all", None)]
    table = run(store_url, "webhooks", "list").stdout
    assert endpoint_id in table and "(all)" in table
    assert SECRET not in table and created["secret"] not in table
    assert all("secret" not in e for e in listed)

    removed = run(store_url, "webhooks", "remove", endpoint_id)
    assert removed.exit_code == 0 and f"removed webhook {endpoint_id}" in removed.stdout
    assert [e["endpoint_id"] for e in json.loads(run(store_url, "webhooks", "list", "--json").stdout)] == [
        created["endpoint_id"]]
    again = run(store_url, "webhooks", "remove", endpoint_id)
    assert again.exit_code == 2 and f"unknown webhook '{endpoint_id}'" in again.stderr


def test_bad_input_is_refused_naming_the_field(sqlite_url):
    for args, field in ((["ftp://example.com/x"], "url"), (["not a url"], "url"),
                        (["https://example.com/x", "--secret", "short"], "secret"),
                        (["https://example.com/x", "--account", ""], "account_id")):
        result = run(sqlite_url, "webhooks", "add", *args)
        assert result.exit_code == 2, (args, result.stdout)
        assert field in result.stderr and result.stderr.count("\n") == 1
    assert json.loads(run(sqlite_url, "webhooks", "list", "--json").stdout) == []
    bad_state = run(sqlite_url, "webhooks", "log", "--state", "lost")
    assert bad_state.exit_code == 2 and "--state" in bad_state.stderr


def test_deliver_fires_and_posts_signed_alerts_and_the_log_shows_them(store_url, ledger, receiver, monkeypatch):
    monkeypatch.setenv("LEDGER_WEBHOOK_RETRY_FIRST_SECONDS", "30")
    added = json.loads(run(store_url, "webhooks", "add", receiver.url, "--secret", SECRET, "--json").stdout)
    ledger.set_budget("acme-monthly", account_id="acme", limit_tokens=1000)
    spend(ledger, "c1", 600)

    first = run(store_url, "webhooks", "deliver")
    assert first.exit_code == 0, first.stderr
    assert first.stdout.startswith("delivered alrt_") and "HTTP 200" in first.stdout
    assert "1 alert fired, 1 delivery attempt" in first.stderr
    assert receiver.thresholds() == [50]
    [(headers, body)] = receiver.requests
    assert verify(SECRET, body, headers["ledger-signature"])
    assert headers["idempotency-key"] == json.loads(body)["id"]

    nothing = run(store_url, "webhooks", "deliver")
    assert nothing.exit_code == 0 and nothing.stdout == "" and "0 alerts fired" in nothing.stderr
    assert len(receiver.requests) == 1  # each alert once

    receiver.status = 500  # the receiver is down when 80% is crossed
    spend(ledger, "c2", 300)
    failed = run(store_url, "webhooks", "deliver", "--json")
    assert failed.exit_code == 3
    report = json.loads(failed.stdout)
    assert report["fired"] == 1
    [attempt] = report["attempts"]
    assert (attempt["state"], attempt["status"], attempt["attempt"]) == ("pending", 500, 1)
    assert attempt["endpoint_id"] == added["endpoint_id"] and attempt["next_attempt_at"]
    retry_not_due = run(store_url, "webhooks", "deliver")  # its backoff (30 s here) is not over
    assert retry_not_due.exit_code == 0 and len(receiver.requests) == 2

    log = json.loads(run(store_url, "webhooks", "log", "--json").stdout)
    assert sorted((row["threshold"], row["state"], row["attempts"], row["last_status"]) for row in log) == [
        (50, "delivered", 1, 200), (80, "pending", 1, 500)]
    assert {row["endpoint_id"] for row in log} == {added["endpoint_id"]}
    pending = json.loads(run(store_url, "webhooks", "log", "--state", "pending", "--json").stdout)
    assert [row["threshold"] for row in pending] == [80]
    table = run(store_url, "webhooks", "log")
    assert table.exit_code == 0
    assert "delivered" in table.stdout and "pending" in table.stdout and "HTTP 500" in table.stdout


def test_a_removed_endpoint_is_not_posted_to_by_deliver(store_url, ledger, receiver):
    added = json.loads(run(store_url, "webhooks", "add", receiver.url, "--json").stdout)
    assert run(store_url, "webhooks", "remove", added["endpoint_id"]).exit_code == 0
    ledger.set_budget("b", account_id="acme", limit_tokens=100)
    spend(ledger, "c1", 100)
    result = run(store_url, "webhooks", "deliver")
    assert result.exit_code == 0 and "3 alerts fired, 0 delivery attempts" in result.stderr
    assert receiver.requests == []
    assert run(store_url, "webhooks", "log").stdout.strip() == "no deliveries yet"
