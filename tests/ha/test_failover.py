"""Failover trials on a real ``pg_auto_failover`` formation (tests/ha/formation.py): nothing lost, nothing twice.

The primary's processes are SIGKILLed three times (failing over and back)
while 8 writer processes (``record_charge``, ``record_charges`` and the Huey
task path through ``ledger worker``), the projector and ``ledger serve``
under HTTP load run throughout. Two of the writers have a retry deadline
shorter than a failover, so their calls raise ``LedgerUnavailable`` and they
retry with the same ids, as a caller should. Then every acknowledged charge is present
exactly once, every call that raised was retried with the same ids and
resolved (to the original receipt when its first attempt had committed),
the audit is clean, HTTP answered no 5xx but 503, and no call waited past
the retry deadline. The hang case freezes the primary (SIGSTOP) instead:
callers get ``LedgerUnavailable`` within the deadline, then succeed on the
new primary.

Long profile only (``LEDGER_TEST_PROFILE=long``; CI's long run): a formation
takes seconds to start and each failover about ten. The whole file takes
about two and a half minutes. Debian's ``pg-auto-failover-cli`` and
``postgresql-15-auto-failover`` must be installed (``.ci/run`` does).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy as sa
from conftest import PROFILE, wait_until

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "http"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from failover_workers import charge_fields
from formation import PACKAGES, Formation, packages_installed
from http_helpers import bearer, serving

pytestmark = [
    pytest.mark.long,
    # One formation on fixed ports: tests/conftest.py puts this file in the "heavy" group, so under
    # xdist both trials go to one worker, one after the other and after no other heavy trial.
    pytest.mark.skipif(PROFILE != "long", reason="failover trials run in the long profile only "
                       "(LEDGER_TEST_PROFILE=long): they start a pg_auto_failover formation and take minutes"),
]

ROOT = Path(__file__).resolve().parents[2]
WORKERS = Path(__file__).resolve().parent / "failover_workers.py"
#: The formation's ports: the monitor, then its two nodes (never 5432).
BASE_PORT = int(os.environ.get("LEDGER_TEST_HA_PORT", "5433"))
JOBS_REDIS_URL = os.environ.get("LEDGER_TEST_JOBS_REDIS_URL", "redis://127.0.0.1:6379/14")
KILLS = 3
DEADLINE = 30.0  # LEDGER_RETRY_DEADLINE_SECONDS of every writer, the workers and the server
#: Two writers run with a deadline shorter than a failover: their calls raise, and they retry with the same ids.
SHORT = ("ws2", "wb2")
SHORT_DEADLINE = 3.0
HANG_DEADLINE = 4.0  # shorter than a failover, so a frozen primary must end in LedgerUnavailable
#: What a call may take beyond its deadline: the last attempt's own ending and the return, on a
#: 2-core machine that CI's long run shares with other trials (5.1-5.9 s measured for a 4 s deadline).
SLACK = 8.0
TASK_WAVE = 20


@pytest.fixture(scope="module")
def formation() -> Iterator[Formation]:
    if not packages_installed():
        raise RuntimeError(f"pg_autoctl is missing: apt-get install -y {' '.join(PACKAGES)} (.ci/run does)")
    with Formation(base_port=BASE_PORT) as running:
        yield running


# -- what the trial saw ---------------------------------------------------------------------


@dataclass
class Seen:
    """The journals of every caller, read back: what was acknowledged, what raised, how long calls took."""

    expected: dict[str, tuple[str, int, int]] = field(default_factory=dict)  # id -> (account, prompt, completion)
    acked: Counter[str] = field(default_factory=Counter)
    raised: dict[str, list[str]] = field(default_factory=dict)  # id -> errors of its attempts
    duplicates: set[str] = field(default_factory=set)  # ids a retry found already recorded
    longest: float = 0.0
    unresolved: list[str] = field(default_factory=list)

    def add_charge(self, charge_id: str, fields: dict[str, Any]) -> None:
        self.expected[charge_id] = (fields["account_id"], fields["prompt_tokens"], fields["completion_tokens"])

    def totals(self) -> dict[str, tuple[int, int, int]]:
        sums: dict[str, list[int]] = {}
        for account, prompt, completion in self.expected.values():
            row = sums.setdefault(account, [0, 0, 0])
            row[0] += 1
            row[1] += prompt
            row[2] += completion
        return {account: (c, p, q) for account, (c, p, q) in sums.items()}


def read_journal(path: Path, seen: Seen) -> list[dict[str, Any]]:
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for entry in entries:
        if entry["event"] in ("ack", "raised"):
            seen.longest = max(seen.longest, entry["seconds"])
        if entry["event"] == "ack":
            for charge_id in entry["ids"]:
                seen.acked[charge_id] += 1
                prefix, _, number = charge_id.rpartition("-")
                if number.isdigit() and prefix.startswith("w"):
                    seen.add_charge(charge_id, charge_fields(prefix, int(number)))
            seen.duplicates.update(entry["duplicates"])
        elif entry["event"] == "raised":
            for charge_id in entry["ids"]:
                seen.raised.setdefault(str(charge_id), []).append(entry["error"])
        elif entry["event"] == "generated":
            seen.expected[entry["id"]] = (entry["account"], entry["prompt_tokens"], entry["completion_tokens"])
        elif entry["event"] == "gave_up":
            seen.unresolved.extend(str(i) for i in entry["ids"])
    return entries


# -- the callers -------------------------------------------------------------------------


def caller_environment(url: str, deadline: float = DEADLINE) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", LEDGER_DATABASE_URL=url,
               LEDGER_RETRY_DEADLINE_SECONDS=str(deadline), LEDGER_CONNECT_TIMEOUT_SECONDS="2",
               LEDGER_HUEY_URL=JOBS_REDIS_URL, LEDGER_TASK_RETRY_BASE_SECONDS="0.2", LEDGER_TASK_RETRIES="50",
               LEDGER_SECRET_KEY_FILE=os.environ.get("LEDGER_SECRET_KEY_FILE", ""))
    return env


class HttpLoad:
    """Client threads posting /v1/charges; a 503 is retried with the same charge after its Retry-After."""

    def __init__(self, base: str, key: str, threads: int, stop: threading.Event) -> None:
        self.base, self.key, self.stop = base, key, stop
        self.statuses: Counter[int] = Counter()
        self.failures: list[str] = []
        self.seen = Seen()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(f"h{i}",), daemon=True) for i in range(threads)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=DEADLINE * 4)
            assert not thread.is_alive(), "an HTTP client thread never finished"

    def run(self, prefix: str) -> None:
        with httpx.Client(timeout=DEADLINE * 3) as client:
            number = 0
            while not self.stop.is_set():
                number += 1
                self.post_until_done(client, prefix, number)

    def post_until_done(self, client: httpx.Client, prefix: str, number: int) -> None:
        body = charge_fields(prefix, number)
        while True:
            started = time.monotonic()
            try:
                response = client.post(f"{self.base}/v1/charges", json=body, headers=bearer(self.key))
            except httpx.TransportError as exc:
                with self.lock:
                    self.failures.append(f"{body['charge_id']}: {type(exc).__name__}: {exc}")
                return
            seconds = time.monotonic() - started
            with self.lock:
                self.statuses[response.status_code] += 1
                self.seen.longest = max(self.seen.longest, seconds)
                if response.status_code in (200, 201):
                    self.seen.acked[body["charge_id"]] += 1
                    self.seen.add_charge(body["charge_id"], body)
                    if response.json().get("duplicate"):
                        self.seen.duplicates.add(body["charge_id"])
                    return
                if response.status_code != 503:
                    self.failures.append(f"{body['charge_id']}: {response.status_code} {response.text[:300]}")
                    return
                self.seen.raised.setdefault(body["charge_id"], []).append("503")
                if "Retry-After" not in response.headers:
                    self.failures.append(f"{body['charge_id']}: a 503 without Retry-After")
            time.sleep(min(float(response.headers.get("Retry-After", "1")), 2.0))


class TaskFeed:
    """Charges enqueued on the Huey queue in waves while the trial runs (the task path's callers)."""

    def __init__(self, stop: threading.Event) -> None:
        from jobs import huey

        self.huey = huey
        self.stop = stop
        self.enqueued: dict[str, dict[str, Any]] = {}
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        from jobs import create_charge

        number = 0
        while not self.stop.is_set():
            tasks = []
            for _ in range(TASK_WAVE):
                number += 1
                fields = charge_fields("wt", number)
                self.enqueued[fields["charge_id"]] = fields
                tasks.append(create_charge.s(**fields))
            self.huey.storage.enqueue_many([self.huey.serialize_task(task) for task in tasks])
            time.sleep(0.25)

    def drained(self) -> bool:
        return (self.huey.pending_count() == 0 and self.huey.scheduled_count() == 0
                and self.huey.storage.in_progress_count() == 0)


def start_process(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def stop_processes(processes: list[subprocess.Popen], timeout: float) -> None:
    end = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(timeout=max(end - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def acks_in(paths: list[Path]) -> int:
    return sum(p.read_text().count('"event": "ack"') for p in paths if p.exists())


def index_counts(url: str) -> Counter[str]:
    """How many times each charge id is in the charge index (by account and id, as it is keyed)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.exec_driver_sql("SELECT charge_id FROM ledger_charge_index").all()
    finally:
        engine.dispose()
    return Counter(row[0] for row in rows)


def check_ledger(url: str, seen: Seen) -> None:
    """Every acknowledged charge exactly once in the index and the log's account totals; the audit clean."""
    from ledger import Ledger, Settings
    from projections.audit import audit

    ledger = Ledger(Settings(database_url=url, retry_deadline_seconds=DEADLINE))
    try:
        ledger.sequence()
        counts = index_counts(url)
        assert not seen.unresolved, f"calls never resolved: {seen.unresolved[:10]}"
        missing = sorted(set(seen.expected) - set(counts))
        assert missing == [], f"{len(missing)} acknowledged charges are missing: {missing[:10]}"
        stray = sorted(set(counts) - set(seen.expected))
        assert stray == [], f"{len(stray)} charges nobody was told of (counted twice under a new id?): {stray[:10]}"
        assert [cid for cid, n in counts.items() if n != 1] == []
        for account, (charges, prompt, completion) in seen.totals().items():
            totals = ledger.account_totals(account)
            assert (totals.charges, totals.prompt_tokens, totals.completion_tokens) == (charges, prompt, completion), \
                account
        result = audit(ledger, catch_up=True)
        assert result.clean, result.to_dict()
        assert result.conservation.charge_events == len(seen.expected)
    finally:
        ledger.close()


# -- the trials ----------------------------------------------------------------------------


def test_primary_killed_three_times_under_load_loses_nothing_and_counts_nothing_twice(formation, tmp_path):
    from jobs import huey
    from jobs.queue import queue_url as configured_queue_url
    from jobs.queue import use_queue

    url = formation.url
    redis.Redis.from_url(JOBS_REDIS_URL).flushdb()  # our own database number only
    use_queue(huey, JOBS_REDIS_URL)
    env = caller_environment(url)
    from ledger import Ledger, Settings

    Ledger(Settings(database_url=url)).close()  # the schema, before processes race to create it
    stop_file = tmp_path / "stop"
    journals = {f"w{kind[0]}{i}": tmp_path / f"w{kind[0]}{i}.jsonl"
                for kind, count in (("single", 3), ("batch", 3)) for i in range(count)}
    short_env = caller_environment(url, SHORT_DEADLINE)
    writers = [start_process([sys.executable, str(WORKERS), "single" if name[1] == "s" else "batch", name,
                              str(path), str(stop_file)], short_env if name in SHORT else env,
                             tmp_path / f"{name}.log")
               for name, path in journals.items()]
    projector_journal = tmp_path / "projector.jsonl"
    projector = start_process([sys.executable, str(WORKERS), "projector", "p", str(projector_journal),
                               str(stop_file)], env, tmp_path / "projector.log")
    consumers = [start_process([sys.executable, "-m", "ledger_service.cli", "worker", "--workers", "2",
                                "--no-periodic"], env, tmp_path / f"consumer-{i}.log") for i in range(2)]
    stop = threading.Event()
    feed = TaskFeed(stop)
    saved = {k: os.environ.get(k) for k in ("LEDGER_RETRY_DEADLINE_SECONDS", "LEDGER_CONNECT_TIMEOUT_SECONDS")}
    os.environ.update(LEDGER_RETRY_DEADLINE_SECONDS=str(DEADLINE), LEDGER_CONNECT_TIMEOUT_SECONDS="2")
    try:
        with serving(url) as server:
            load = HttpLoad(server.url, server.new_key("--role", "ingest"), threads=3, stop=stop)
            load.start()
            feed.thread.start()
            paths = list(journals.values())
            wait_until(lambda: acks_in(paths) >= 50, "the writers to record", timeout=60)
            failovers = []
            for _ in range(KILLS):
                before = acks_in(paths)
                killed_at = time.monotonic()
                old = formation.kill_primary()
                new = formation.wait_for_new_primary(old)
                promoted = time.monotonic() - killed_at
                wait_until(lambda b=before: acks_in(paths) > b + 20, "writes after the failover", timeout=60)
                formation.wait_healthy()
                failovers.append((old, new, round(promoted, 1)))
            print(f"failovers (old, new, seconds to promotion): {failovers}")
            stop.set()
            stop_file.touch()
            feed.thread.join(timeout=10)
            load.join()
            stop_processes([*writers, projector], timeout=DEADLINE * 5)
            wait_until(feed.drained, "the task queue to drain", timeout=DEADLINE * 4, poll=0.2)
        stop_processes(consumers, timeout=0)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        stop.set()
        stop_file.touch()
        stop_processes([*writers, projector, *consumers], timeout=0)
        use_queue(huey, configured_queue_url())

    seen = Seen()
    short = Seen()
    for name, path in journals.items():
        entries = read_journal(path, seen)
        assert entries and entries[-1]["event"] == "done", f"{path.name} did not finish: {entries[-3:]}"
        if name in SHORT:
            read_journal(path, short)
    for charge_id, fields in feed.enqueued.items():
        seen.add_charge(charge_id, fields)
    http = load.seen
    seen.expected.update(http.expected)
    projector_entries = [json.loads(line) for line in projector_journal.read_text().splitlines()]
    errors = Counter(error for errors in seen.raised.values() for error in errors)
    print(f"{len(seen.expected)} charges ({len(feed.enqueued)} by task, {len(http.expected)} by HTTP); "
          f"short-deadline writers: {sum(len(e) for e in short.raised.values())} raised, "
          f"{len(short.duplicates & set(short.raised))} of their ids found recorded on retry; "
          f"raised {dict(errors)}, resolved as duplicates {len(seen.duplicates)}; HTTP {dict(load.statuses)}; "
          f"longest call {max(seen.longest, http.longest):.1f} s; projector errors "
          f"{sum(e['event'] == 'projector_error' for e in projector_entries)}")

    # Every call that raised was retried with the same ids and resolved: recorded once, either by the
    # retry or by the attempt that raised (then the retry was answered as a duplicate).
    assert set(seen.raised) <= set(seen.acked), sorted(set(seen.raised) - set(seen.acked))[:10]
    assert set(errors) <= {"LedgerUnavailable"}, errors  # never a raw driver error
    # A duplicate receipt to a call that never raised is the ledger's own retry finding the attempt whose
    # COMMIT was lost but happened: its charge is still counted once (check_ledger).
    assert all(n == 1 for n in seen.acked.values())
    assert set(load.statuses) <= {200, 201, 503}, load.statuses
    assert load.failures == []
    assert max(seen.longest, http.longest) <= DEADLINE + SLACK
    # The short-deadline writers felt every failover as LedgerUnavailable, within their deadline,
    # and their retries with the same ids resolved each charge once (check_ledger).
    assert short.raised and short.longest <= SHORT_DEADLINE + SLACK
    assert sum(e["event"] == "projected" for e in projector_entries) > 0
    from jobs.rejected import list_rejected
    from ledger import Ledger, Settings

    ledger = Ledger(Settings(database_url=url))
    try:
        assert list_rejected(ledger) == []  # the task path kept no charge aside
    finally:
        ledger.close()
    check_ledger(url, seen)


@dataclass
class HangCaller:
    """A thread recording one charge at a time with a short deadline, retrying raised calls with the same id."""

    ledger: Any
    prefix: str
    stop: threading.Event
    seen: Seen = field(default_factory=Seen)
    acked_after: list[float] = field(default_factory=list)  # monotonic time of each acknowledgement

    def run(self) -> None:
        from ledger.errors import LedgerUnavailable

        number = 0
        while not self.stop.is_set():
            number += 1
            fields = charge_fields(self.prefix, number)
            while True:
                started = time.monotonic()
                try:
                    receipt = self.ledger.record_charge(**fields)
                except Exception as exc:
                    self.seen.longest = max(self.seen.longest, time.monotonic() - started)
                    self.seen.raised.setdefault(fields["charge_id"], []).append(type(exc).__name__)
                    if not isinstance(exc, LedgerUnavailable) and len(self.seen.raised[fields["charge_id"]]) > 50:
                        raise
                    time.sleep(0.2)
                    continue
                self.seen.longest = max(self.seen.longest, time.monotonic() - started)
                self.seen.acked[receipt.charge_id] += 1
                self.seen.add_charge(receipt.charge_id, fields)
                if receipt.duplicate:
                    self.seen.duplicates.add(receipt.charge_id)
                self.acked_after.append(time.monotonic())
                break


def test_a_frozen_primary_ends_in_ledger_unavailable_within_the_deadline_then_the_new_primary_records(formation):
    from ledger import Ledger, Settings

    formation.wait_healthy()
    url = formation.database_url("hang")
    formation.create_database("hang")
    ledger = Ledger(Settings(database_url=url, retry_deadline_seconds=HANG_DEADLINE, connect_timeout_seconds=1))
    stop = threading.Event()
    callers = [HangCaller(ledger, f"wh{i}", stop) for i in range(4)]
    threads = [threading.Thread(target=c.run, daemon=True) for c in callers]
    try:
        for thread in threads:
            thread.start()
        wait_until(lambda: all(c.acked_after for c in callers), "the callers to record", timeout=60)
        old = formation.freeze_primary()
        frozen_at = time.monotonic()
        try:
            new = formation.wait_for_new_primary(old)
            promoted = time.monotonic()
            # Every caller records again, on the new primary.
            wait_until(lambda: all(c.acked_after and c.acked_after[-1] > promoted for c in callers),
                       "every caller to record on the new primary", timeout=DEADLINE * 2)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=HANG_DEADLINE * 4)
            formation.thaw()
        assert not any(thread.is_alive() for thread in threads), "a caller hung"
        print(f"frozen {old}, {new} promoted after {promoted - frozen_at:.1f} s")
    finally:
        ledger.close()

    seen = Seen()
    for caller in callers:
        seen.expected.update(caller.seen.expected)
        seen.acked.update(caller.seen.acked)
        seen.duplicates |= caller.seen.duplicates
        seen.longest = max(seen.longest, caller.seen.longest)
        for charge_id, errors in caller.seen.raised.items():
            seen.raised.setdefault(charge_id, []).extend(errors)
    errors = Counter(error for errors in seen.raised.values() for error in errors)
    print(f"{len(seen.expected)} charges; raised {dict(errors)}; duplicates {len(seen.duplicates)}; "
          f"longest call {seen.longest:.1f} s")
    assert errors["LedgerUnavailable"] > 0  # the frozen primary was felt, as the error a caller can act on
    assert set(errors) == {"LedgerUnavailable"}, errors
    assert seen.longest <= HANG_DEADLINE + SLACK  # never a hang
    assert set(seen.raised) <= set(seen.acked)  # then each succeeded with the same id
    check_ledger(url, seen)
