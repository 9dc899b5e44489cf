"""Budget alerts delivered as signed webhooks to a real receiver on a loopback port.

The receiver is an ``http.server`` in a thread that keeps every request it
gets (headers and body bytes) and can refuse its first N requests, or hold a
request open. Deliveries run through :func:`jobs.webhooks.deliver_due`
against the real stores (SQLite and PostgreSQL), and once through the real
Huey worker path: ``huey_consumer jobs.huey`` in a subprocess on Redis with
the PostgreSQL ledger, its periodic budget check doing the work. Backoff is
checked without waiting by passing ``now`` (the clock the deliveries run
on); waiting is polling with a deadline, never a timed assertion.
"""

from __future__ import annotations

import json
import os
import socket
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import huey.bin.huey_consumer as huey_consumer_script
import pytest
import redis
from conftest import PG_URL, reset_postgres, wait_until

from jobs import huey
from jobs.queue import queue_url as configured_queue_url
from jobs.queue import use_queue
from jobs.schedule import ConfiguredInterval
from jobs.tasks import deliver_webhooks
from jobs.webhooks import deliver_due, delivery_log, retry_delay
from ledger import Ledger, Settings
from ledger.budget_rules import utc_now
from ledger.settings import JobsSettings
from ledger.webhooks import verify

ROOT = Path(__file__).resolve().parents[2]
JOBS_REDIS_URL = os.environ.get("LEDGER_TEST_JOBS_REDIS_URL", "redis://127.0.0.1:6379/14")
SECRET = "whsec_test_0123456789abcdef"
DEADLINE = 45.0

wait_for = partial(wait_until, timeout=DEADLINE)


class _Listener(ThreadingHTTPServer):
    """A listening socket with room for many deliverers connecting at once (the default backlog, 5,
    resets connections when three deliverers post together: a refusal of the test's, not the ledger's)."""

    request_queue_size = 128
    daemon_threads = True


class Receiver:
    """A webhook receiver on 127.0.0.1: answers 503 to its first ``fail_first`` requests, then 200.

    With ``hold`` set, each request is kept (recorded) and left unanswered
    until the event is set.
    """

    def __init__(self, fail_first: int = 0, status: int = 200) -> None:
        self.fail_first = fail_first
        self.status = status
        self.hold: threading.Event | None = None
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    refused = len(receiver.requests) <= receiver.fail_first
                if receiver.hold is not None:
                    receiver.hold.wait(DEADLINE)
                self.send_response(503 if refused else receiver.status)
                self.end_headers()
                self.wfile.write(b"busy" if refused else b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = _Listener(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/hooks/ledger"

    def bodies(self) -> list[dict]:
        with self._lock:
            return [json.loads(body) for _, body in self.requests]

    def ids(self) -> list[str]:
        return [body["id"] for body in self.bodies()]

    def close(self) -> None:
        if self.hold is not None:
            self.hold.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(**options) -> Receiver:
        made.append(Receiver(**options))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


def fast(**overrides) -> JobsSettings:
    """Tiny backoff, so a retry is due within a fraction of a second."""
    values = {"webhook_retry_first_seconds": 0.05, "webhook_retry_max_seconds": 0.2,
              "webhook_max_attempts": 6, "webhook_timeout_seconds": 2.0}
    values.update(overrides)
    return JobsSettings(**values)


_charges = iter(range(10**9))


def spend(ledger: Ledger, account: str, tokens: int) -> None:
    ledger.record_charge(account_id=account, user_id="u1", charge_id=f"c{next(_charges)}",
                         charge_type="completion", prompt_tokens=tokens, completion_tokens=0)


def deliver_until(ledger: Ledger, settings: JobsSettings, done, what: str) -> None:
    """Deliver what is due, again and again (as the worker's checks do), until ``done()``."""
    def step():
        deliver_due(ledger, settings=settings)
        return done()
    wait_until(step, what, timeout=DEADLINE, poll=0.05)


def log_of(ledger: Ledger) -> dict[tuple[str, str], dict]:
    return {(row["alert_id"], row["endpoint_id"]): row for row in delivery_log(ledger, limit=1000)}


# -- each threshold once, signed ---------------------------------------------------------------------


def test_each_threshold_arrives_once_per_period_with_a_valid_signature(make_ledger, receivers):
    ledger = make_ledger()
    receiver = receivers()
    endpoint = ledger.add_webhook(receiver.url, secret=SECRET)
    ledger.set_budget("acme-monthly", account_id="acme", limit_tokens=1000)

    spend(ledger, "acme", 400)
    assert ledger.check_budget_alerts() == []
    spend(ledger, "acme", 450)  # 850: 50% and 80% at once
    assert sorted(a.threshold for a in ledger.check_budget_alerts()) == [50, 80]
    deliver_due(ledger, settings=fast())
    spend(ledger, "acme", 150)  # 1000: 100%
    assert [a.threshold for a in ledger.check_budget_alerts()] == [100]
    spend(ledger, "acme", 500)  # past the limit: nothing more to fire
    for _ in range(3):  # checks and deliveries repeated, as the worker repeats them
        ledger.check_budget_alerts()
        deliver_due(ledger, settings=fast())

    bodies = receiver.bodies()
    assert sorted(b["threshold"] for b in bodies) == [50, 80, 100]
    assert len(set(receiver.ids())) == 3
    stored = {a.alert_id: a.body for a in ledger.budget_alerts(account_id="acme")}
    for headers, body in receiver.requests:
        assert verify(SECRET, body, headers["ledger-signature"])
        assert not verify("whsec_another_secret_0000", body, headers["ledger-signature"])
        assert headers["content-type"] == "application/json"
        alert_id = json.loads(body)["id"]
        assert headers["idempotency-key"] == headers["ledger-alert-id"] == alert_id
        assert json.loads(body) == stored[alert_id]  # the stored body, as stored
        assert json.loads(body)["type"] == "budget.threshold_crossed"
    by_threshold = {b["threshold"]: b for b in bodies}
    assert by_threshold[50]["spent_tokens"] == by_threshold[80]["spent_tokens"] == 850
    assert by_threshold[100]["spent_tokens"] == 1000 and by_threshold[100]["limit_tokens"] == 1000
    assert all(b["budget_id"] == "acme-monthly" and b["account_id"] == "acme" for b in bodies)

    log = log_of(ledger)
    assert len(log) == 3
    assert {(row["endpoint_id"], row["state"], row["attempts"], row["last_status"]) for row in log.values()} == {
        (endpoint.endpoint_id, "delivered", 1, 200)}


def test_the_body_sent_is_the_stored_bytes_exactly(make_ledger, receivers):
    ledger = make_ledger()
    receiver = receivers()
    ledger.add_webhook(receiver.url, secret=SECRET)
    ledger.set_budget("b", account_id="acme", user_id="ünï", limit_tokens=1000, thresholds=(10,))
    ledger.record_charge(account_id="acme", user_id="ünï", charge_id="c", charge_type="completion",
                         prompt_tokens=150, completion_tokens=50)
    [alert] = ledger.check_budget_alerts()
    deliver_due(ledger, settings=fast())

    from ledger.store.schema import budget_alerts

    with ledger.store.transaction(commit=False) as session:
        stored = session.execute(
            budget_alerts.select().where(budget_alerts.c.alert_id == alert.alert_id)).one()._mapping["body"]
    [(_, body)] = receiver.requests
    assert body == stored.encode()
    assert json.loads(body)["user_id"] == "ünï" and json.loads(body)["spent_tokens"] == 200


# -- retries -------------------------------------------------------------------------------------------


def test_a_receiver_failing_its_first_attempts_gets_the_alert_after_backoff(make_ledger, receivers):
    ledger = make_ledger()
    receiver = receivers(fail_first=3)
    endpoint = ledger.add_webhook(receiver.url, secret=SECRET)
    ledger.set_budget("b", account_id="acme", limit_tokens=100, thresholds=(50,))
    spend(ledger, "acme", 60)
    [alert] = ledger.check_budget_alerts()
    settings = JobsSettings(webhook_retry_first_seconds=2, webhook_retry_max_seconds=600)  # the defaults' shape

    clock = utc_now()
    due_times = []
    for attempt in (1, 2, 3):
        [result] = deliver_due(ledger, now=clock, settings=settings)
        assert (result.attempt, result.state, result.status) == (attempt, "pending", 503)
        wait = (result.next_attempt_at - clock).total_seconds()
        expected = 2 * 2 ** (attempt - 1)  # 2 s, 4 s, 8 s: within seconds, then doubling
        assert 0.8 * expected - 1e-6 <= wait <= expected + 1e-6
        # Not due before its backoff: nothing is posted.
        assert deliver_due(ledger, now=result.next_attempt_at - timedelta(milliseconds=50), settings=settings) == []
        assert len(receiver.requests) == attempt
        clock = result.next_attempt_at
        due_times.append(clock)
    [result] = deliver_due(ledger, now=clock, settings=settings)
    assert (result.attempt, result.state, result.status) == (4, "delivered", 200)

    assert receiver.ids() == [alert.alert_id] * 4  # the same id every time: the receiver dedups on it
    assert all(verify(SECRET, body, headers["ledger-signature"]) for headers, body in receiver.requests)
    row = log_of(ledger)[(alert.alert_id, endpoint.endpoint_id)]
    assert (row["state"], row["attempts"], row["last_status"], row["last_error"]) == ("delivered", 4, 200, None)
    assert deliver_due(ledger, now=clock + timedelta(days=1), settings=settings) == []  # delivered once


def test_retry_delays_grow_exponentially_to_the_cap_with_jitter():
    settings = JobsSettings(webhook_retry_first_seconds=2, webhook_retry_max_seconds=600)
    delays = [[retry_delay(attempt, settings) for _ in range(200)] for attempt in range(1, 16)]
    for attempt, seen in enumerate(delays, start=1):
        nominal = min(600, 2 * 2 ** (attempt - 1))
        assert all(0.8 * nominal <= d <= nominal for d in seen)
        assert len(set(seen)) > 100  # jittered, not one value
    assert max(delays[-1]) <= 600 and min(delays[-1]) >= 480  # capped
    assert retry_delay(10_000, settings) <= 600  # no overflow however many attempts


def test_gives_up_after_max_attempts(make_ledger, receivers):
    ledger = make_ledger()
    receiver = receivers(fail_first=10**6)
    endpoint = ledger.add_webhook(receiver.url, secret=SECRET)
    ledger.set_budget("b", account_id="acme", limit_tokens=100, thresholds=(50,))
    spend(ledger, "acme", 60)
    [alert] = ledger.check_budget_alerts()
    settings = fast(webhook_max_attempts=4)

    deliver_until(ledger, settings, lambda: log_of(ledger)[(alert.alert_id, endpoint.endpoint_id)]["state"]
                  == "failed", "the delivery to be given up")
    assert len(receiver.requests) == 4
    row = log_of(ledger)[(alert.alert_id, endpoint.endpoint_id)]
    assert (row["attempts"], row["last_status"], row["last_error"]) == (4, 503, "HTTP 503: busy")
    assert deliver_due(ledger, now=utc_now() + timedelta(days=1), settings=settings) == []
    assert len(receiver.requests) == 4


def test_refused_connections_and_timeouts_are_failed_attempts_retried(make_ledger, receivers):
    ledger = make_ledger()
    slow = receivers()
    slow.hold = threading.Event()
    # A port held bound but never listening: connections to it are refused, and
    # no other test's receiver can take it meanwhile (a closed receiver's could).
    bound = socket.socket()
    bound.bind(("127.0.0.1", 0))
    closed_url = f"http://127.0.0.1:{bound.getsockname()[1]}/hooks/ledger"
    refused = ledger.add_webhook(closed_url, secret=SECRET)
    timing_out = ledger.add_webhook(slow.url, secret=SECRET)
    ledger.set_budget("b", account_id="acme", limit_tokens=100, thresholds=(50,))
    spend(ledger, "acme", 60)
    [alert] = ledger.check_budget_alerts()

    results = {r.endpoint_id: r for r in deliver_due(ledger, settings=fast(webhook_timeout_seconds=0.5))}
    assert results[refused.endpoint_id].state == "pending" and results[refused.endpoint_id].status is None
    assert "refused" in results[refused.endpoint_id].error.lower()
    assert results[timing_out.endpoint_id].state == "pending" and results[timing_out.endpoint_id].status is None
    assert "timed out" in results[timing_out.endpoint_id].error.lower()
    log = log_of(ledger)
    assert log[(alert.alert_id, refused.endpoint_id)]["attempts"] == 1
    assert "refused" in log[(alert.alert_id, refused.endpoint_id)]["last_error"].lower()

    slow.hold.set()  # the receiver answers again: the retry gets through
    deliver_until(ledger, fast(), lambda: log_of(ledger)[(alert.alert_id, timing_out.endpoint_id)]["state"]
                  == "delivered", "the retry to get through")
    bound.close()


# -- which endpoints get what ----------------------------------------------------------------------------


def test_an_endpoint_added_for_one_account_receives_only_its_alerts(make_ledger, receivers):
    ledger = make_ledger()
    everyone, acme_only = receivers(), receivers()
    ledger.add_webhook(everyone.url, secret=SECRET)
    ledger.add_webhook(acme_only.url, secret=SECRET, account_id="acme")
    for account in ("acme", "globex"):
        ledger.set_budget(f"{account}-b", account_id=account, limit_tokens=100, thresholds=(50, 100))
        spend(ledger, account, 100)
    assert len(ledger.check_budget_alerts()) == 4
    deliver_until(ledger, fast(), lambda: len(everyone.requests) == 4 and len(acme_only.requests) == 2,
                  "every delivery")

    assert sorted((b["account_id"], b["threshold"]) for b in everyone.bodies()) == [
        ("acme", 50), ("acme", 100), ("globex", 50), ("globex", 100)]
    assert sorted((b["account_id"], b["threshold"]) for b in acme_only.bodies()) == [("acme", 50), ("acme", 100)]
    assert {row["account_id"] for row in delivery_log(ledger, account_id="acme")} == {"acme"}


def test_a_removed_endpoint_receives_nothing_more(make_ledger, receivers):
    ledger = make_ledger()
    removed, kept = receivers(), receivers()
    gone = ledger.add_webhook(removed.url, secret=SECRET)
    ledger.add_webhook(kept.url, secret=SECRET)
    ledger.set_budget("b", account_id="acme", limit_tokens=100)
    spend(ledger, "acme", 50)
    ledger.check_budget_alerts()
    deliver_due(ledger, settings=fast())
    assert [b["threshold"] for b in removed.bodies()] == [50]

    removed.fail_first = 10**6  # the next alert is refused, so it is still pending when the endpoint goes
    spend(ledger, "acme", 30)
    [eighty] = ledger.check_budget_alerts()
    deliver_due(ledger, settings=fast())
    assert len(removed.requests) == 2
    ledger.remove_webhook(gone.endpoint_id)
    spend(ledger, "acme", 20)
    [hundred] = ledger.check_budget_alerts()
    for _ in range(3):
        deliver_due(ledger, now=utc_now() + timedelta(minutes=5), settings=fast())

    assert len(removed.requests) == 2  # neither the pending retry nor the new alert
    assert sorted(b["threshold"] for b in kept.bodies()) == [50, 80, 100]
    row = log_of(ledger)[(eighty.alert_id, gone.endpoint_id)]
    assert (row["state"], row["last_error"]) == ("failed", "endpoint removed")
    assert (hundred.alert_id, gone.endpoint_id) not in log_of(ledger)


# -- at least once, never the same attempt twice at once -------------------------------------------------

CRASHING_DELIVERER = """
import sys
from jobs.webhooks import deliver_due
from ledger import Ledger, Settings
from ledger.settings import JobsSettings
deliver_due(Ledger(Settings(database_url=sys.argv[1])), settings=JobsSettings(webhook_timeout_seconds=30))
"""


def test_a_deliverer_killed_between_post_and_record_sends_again_later(store_url, receivers):
    ledger = Ledger(Settings(database_url=store_url))
    try:
        receiver = receivers()
        receiver.hold = threading.Event()  # the POST arrives; its answer never reaches the deliverer
        endpoint = ledger.add_webhook(receiver.url, secret=SECRET)
        ledger.set_budget("b", account_id="acme", limit_tokens=100, thresholds=(50,))
        spend(ledger, "acme", 60)
        [alert] = ledger.check_budget_alerts()

        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        process = subprocess.Popen([sys.executable, "-c", CRASHING_DELIVERER, store_url], env=env,
                                   start_new_session=True)
        try:
            wait_for(lambda: receiver.requests, "the POST to arrive")
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        receiver.hold.set()
        receiver.hold = None

        row = log_of(ledger)[(alert.alert_id, endpoint.endpoint_id)]
        assert (row["state"], row["attempts"]) == ("pending", 1)  # claimed, outcome never recorded
        assert deliver_due(ledger, settings=fast()) == []  # its claim holds: not posted twice at once
        claim_seconds = JobsSettings(webhook_timeout_seconds=30).webhook_claim_seconds
        [again] = deliver_due(ledger, now=utc_now() + timedelta(seconds=claim_seconds + 1), settings=fast())
        assert (again.attempt, again.state) == (2, "delivered")
        assert receiver.ids() == [alert.alert_id, alert.alert_id]  # at least once; the id dedups
        assert all(verify(SECRET, body, headers["ledger-signature"]) for headers, body in receiver.requests)
    finally:
        ledger.close()


@pytest.mark.postgres
def test_two_deliverers_at_once_never_post_the_same_attempt(postgres_url, receivers):
    ledgers = [Ledger(Settings(database_url=postgres_url)) for _ in range(3)]
    try:
        ledger = ledgers[0]
        receiver = receivers()
        for _ in range(2):
            ledger.add_webhook(receiver.url, secret=SECRET)
        for n in range(6):
            ledger.set_budget(f"b{n}", account_id=f"acct{n}", limit_tokens=100, thresholds=(25, 50, 75, 100))
            spend(ledger, f"acct{n}", 100)
        assert len(ledger.check_budget_alerts()) == 24
        barrier = threading.Barrier(3)
        results: list = []

        def run(own: Ledger) -> None:
            barrier.wait()
            results.extend(deliver_due(own, settings=fast()))

        threads = [threading.Thread(target=run, args=(own,)) for own in ledgers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(DEADLINE)

        assert len(receiver.requests) == 48 == len(results)
        posted = [(json.loads(body)["id"], headers["ledger-signature"]) for headers, body in receiver.requests]
        assert len({(r.alert_id, r.endpoint_id) for r in results}) == 48  # each delivery attempted once
        assert len({alert_id for alert_id, _ in posted}) == 24
        assert {row["state"] for row in log_of(ledger).values()} == {"delivered"}
        assert {row["attempts"] for row in log_of(ledger).values()} == {1}
    finally:
        for own in ledgers:
            own.close()


# -- the schedule ----------------------------------------------------------------------------------------


def test_the_budget_check_interval_under_a_minute_runs_its_followers_within_the_minute():
    from datetime import datetime

    every_ten = ConfiguredInterval(lambda: 10)
    assert every_ten.follow_ups() == [10, 20, 30, 40, 50]
    assert every_ten(datetime(2026, 6, 1, 0, 0, 1)) is True
    assert every_ten(datetime(2026, 6, 1, 0, 0, 40)) is False  # Huey asked twice in one minute
    assert every_ten(datetime(2026, 6, 1, 0, 1, 1)) is True
    every_three_minutes = ConfiguredInterval(lambda: 180)
    assert every_three_minutes.follow_ups() == []
    due = [every_three_minutes(datetime(2026, 6, 1, 0, minute, 2)) for minute in range(7)]
    assert due == [True, False, False, True, False, False, True]
    off = ConfiguredInterval(lambda: 0)
    assert not any(off(datetime(2026, 6, 1, 0, minute)) for minute in range(5)) and off.follow_ups() == []


def test_the_budget_check_interval_is_off_or_at_least_a_second():
    from pydantic import ValidationError

    assert JobsSettings().budget_check_seconds == 10
    assert JobsSettings(budget_check_seconds=0).budget_check_seconds == 0
    for bad in (0.5, -1, 86_401):
        with pytest.raises(ValidationError, match="budget_check_seconds"):
            JobsSettings(budget_check_seconds=bad)


# -- through the real Huey worker ------------------------------------------------------------------------


@pytest.fixture
def worker_rig(tmp_path) -> Iterator[dict]:
    """A PostgreSQL ledger, a Redis queue (our own db, flushed) and the consumers started on them."""
    reset_postgres(PG_URL)
    redis.Redis.from_url(JOBS_REDIS_URL).flushdb()
    use_queue(huey, JOBS_REDIS_URL)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env.update(PYTHONPATH=str(ROOT), LEDGER_DATABASE_URL=PG_URL, LEDGER_HUEY_URL=JOBS_REDIS_URL,
               LEDGER_BUDGET_CHECK_SECONDS="1", LEDGER_WEBHOOK_RETRY_FIRST_SECONDS="0.2",
               LEDGER_WEBHOOK_RETRY_MAX_SECONDS="0.5")
    rig = {"env": env, "processes": [], "tmp": tmp_path}

    def start(*options: str) -> subprocess.Popen:
        with open(tmp_path / f"consumer-{len(rig['processes'])}.log", "w") as log:  # the child keeps its copy
            process = subprocess.Popen(
                [sys.executable, huey_consumer_script.__file__, "jobs.huey", "-w", "2", "-k", "thread",
                 "-m", "0.2", *options], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        rig["processes"].append(process)
        return process

    rig["start"] = start
    ledger = Ledger(Settings(database_url=PG_URL))
    rig["ledger"] = ledger
    try:
        yield rig
    finally:
        for process in rig["processes"]:
            if process.poll() is None:
                process.kill()
                process.wait()
        ledger.close()
        use_queue(huey, configured_queue_url())
        print("\n".join(p.read_text() for p in sorted(tmp_path.glob("consumer-*.log"))))


@pytest.mark.redis
@pytest.mark.postgres
def test_the_worker_checks_budgets_periodically_and_delivers_through_a_failing_receiver(worker_rig, receivers):
    ledger = worker_rig["ledger"]
    receiver = receivers(fail_first=2)
    endpoint = ledger.add_webhook(receiver.url, secret=SECRET)
    ledger.set_budget("acme-monthly", account_id="acme", limit_tokens=1000)
    worker_rig["start"]()  # periodic on: the budget check runs every LEDGER_BUDGET_CHECK_SECONDS (1 s)

    for alerts, tokens in enumerate((500, 300, 200), start=1):  # 50%, 80%, 100%: plain charges, no check call
        spend(ledger, "acme", tokens)
        wait_for(partial(lambda n: len(set(receiver.ids())) == n, alerts), f"alert {alerts}")

    wait_for(lambda: {row["state"] for row in log_of(ledger).values()} == {"delivered"}, "every delivery")
    assert sorted(b["threshold"] for b in {b["id"]: b for b in receiver.bodies()}.values()) == [50, 80, 100]
    assert len(receiver.requests) == 5  # two refused, retried, then one each
    assert all(verify(SECRET, body, headers["ledger-signature"]) for headers, body in receiver.requests)
    first = log_of(ledger)
    assert sorted(row["attempts"] for row in first.values()) == [1, 1, 3]
    assert {key[1] for key in first} == {endpoint.endpoint_id}


@pytest.mark.redis
@pytest.mark.postgres
def test_an_enqueued_delivery_task_fires_and_delivers(worker_rig, receivers):
    ledger = worker_rig["ledger"]
    receiver = receivers()
    ledger.add_webhook(receiver.url, secret=SECRET)
    ledger.set_budget("b", account_id="acme", limit_tokens=100, thresholds=(50, 100))
    spend(ledger, "acme", 100)
    worker_rig["start"]("-n")  # no periodic schedule: only what is enqueued runs

    summary = deliver_webhooks(check=True).get(blocking=True, timeout=DEADLINE)
    assert (summary["fired"], summary["delivered"]) == (2, 2)
    assert sorted(b["threshold"] for b in receiver.bodies()) == [50, 100]
    again = deliver_webhooks(check=True).get(blocking=True, timeout=DEADLINE)
    assert (again["fired"], again["attempts"]) == (0, 0)  # fired once, delivered once
    assert len(receiver.requests) == 2
