"""High availability on a real ``pg_auto_failover`` formation: failover time and what synchronous replication costs.

``python -m bench --database-url postgresql+psycopg2://… --only failover``
starts its own formation (tests/ha/formation.py: a monitor and two nodes on
127.0.0.1:5436-5438, tuned health checks, run as the ``postgres`` OS user)
and tears it down afterwards; the ``--database-url`` only says PostgreSQL is
measured (the formation is its own servers). Debian's
``pg-auto-failover-cli`` and ``postgresql-15-auto-failover`` must be installed.

* **Failover time**: writer threads record charges through the multi-host
  URL; every process of the primary is SIGKILLed; the figure is the time from
  the kill to the first charge acknowledged after it (on the new primary).
  ``FAILOVER_ROUNDS`` rounds, failing over and back; the ledger retries each
  call with the same charge id, so every charge acknowledged is counted once
  (checked: a difference makes the row INCONSISTENT).
* **Synchronous replication's cost**: 8 writer processes, ``record_charge``
  per charge, with the standby in the replication quorum
  (``synchronous_standby_names`` set) and then out of it (empty), each on a
  fresh database; the ratio is synchronous over asynchronous.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench import writers
from bench.context import Context
from bench.recording import open_accounts
from bench.rows import POSTGRESQL, Inconsistent, Row
from bench.workload import account_ids, charges

#: The formation's monitor port (its nodes take the next two): apart from the test trials' 5433-5435.
BASE_PORT = 5436
FAILOVER_ROUNDS = 3
FAILOVER_THREADS = 4
WRITERS = 8
PER_WRITER = 3_000  # charges per writer process in each replication mode
ACCOUNTS = 50


def _formation_class() -> Any:
    """tests/ha/formation.py, beside this checkout's bench/ (the harness is the tests' own)."""
    here = Path(__file__).resolve().parents[1] / "tests" / "ha"
    if not (here / "formation.py").exists():
        raise RuntimeError(f"the failover scenario needs the source checkout's tests/ha/formation.py ({here})")
    sys.path.insert(0, str(here))
    from formation import PACKAGES, Formation, packages_installed

    if not packages_installed():
        raise RuntimeError(f"pg_autoctl is missing: apt-get install -y {' '.join(PACKAGES)}")
    return Formation


def failover(ctx: Context) -> list[Row]:
    """Failover time and the synchronous/asynchronous write rates; PostgreSQL only."""
    if ctx.kind != POSTGRESQL:
        return []
    per_writer = 100 if ctx.quick else PER_WRITER
    rounds = 1 if ctx.quick else FAILOVER_ROUNDS
    formation = _formation_class()(base_port=BASE_PORT)
    with formation:
        ctx.log(f"formation up: primary {formation.primary()}, "
                f"synchronous_standby_names {formation.synchronous_standby_names()!r}")
        seconds = [_one_failover(ctx, formation, f"f{i}") for i in range(rounds)]
        formation.wait_healthy()  # the old primary back as the synchronous standby
        ctx.log(f"synchronous: {_replication(formation)}")
        sync = _writers(formation, "sync", per_writer)
        formation.set_synchronous(False)
        ctx.log(f"asynchronous: {_replication(formation)}")
        asynchronous = _writers(formation, "async", per_writer)
    median = statistics.median(seconds)
    listed = ", ".join(f"{s:.1f}" for s in seconds)
    return [
        Row("failover: SIGKILL of the primary -> first acknowledged charge (median)", ctx.kind, None, median,
            unit="seconds", note=f"{rounds} failovers, tuned pg_auto_failover: {listed} s; 0 charges lost"),
        asynchronous,
        sync.against(asynchronous),
    ]


def _one_failover(ctx: Context, formation: Any, prefix: str) -> float:
    """Kill the primary under writer threads; seconds from the kill to the first charge acknowledged after it."""
    from ledger import Ledger, Settings

    formation.wait_healthy()
    url = formation.database_url(prefix)
    formation.create_database(prefix)
    ledger = Ledger(Settings(database_url=url))
    stop = threading.Event()
    acked: list[tuple[float, str]] = []
    lock = threading.Lock()
    errors: list[str] = []

    def write(thread: int) -> None:
        number = 0
        while not stop.is_set():
            number += 1
            charge_id = f"{prefix}-{thread}-{number}"
            try:
                ledger.record_charge(account_id=f"acct-{number % 7}", charge_type="completion",
                                     charge_id=charge_id, prompt_tokens=number % 100 + 1,
                                     occurred_at="2026-05-01T12:00:00+00:00")
            except Exception as exc:  # noqa: BLE001 - counted; the same id is retried
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
                number -= 1
                time.sleep(0.1)
                continue
            with lock:
                acked.append((time.monotonic(), charge_id))

    threads = [threading.Thread(target=write, args=(i,), daemon=True) for i in range(FAILOVER_THREADS)]
    try:
        for thread in threads:
            thread.start()
        while len(acked) < 200:
            time.sleep(0.05)
        old = formation.primary()
        killed_at = time.monotonic()
        formation.kill_node(old)
        dead_at = time.monotonic()  # nothing of the old primary runs: an acknowledgement now is the new one's
        formation.restart_node(old)
        while not any(at > dead_at for at, _ in acked[-FAILOVER_THREADS * 2:]):
            if time.monotonic() - killed_at > 120:
                raise RuntimeError(f"no charge acknowledged within 120 s of the kill\n{formation.logs()}")
            time.sleep(0.01)
        first = min(at for at, _ in acked if at > dead_at)
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
    seconds = first - killed_at
    ctx.log(f"failover {old} -> {formation.primary()}: first charge {seconds:.1f} s after the kill; "
            f"{len(errors)} calls raised")
    ids = {charge_id for _, charge_id in acked}
    ledger.sequence()
    stored = _stored_ids(url, prefix)
    ledger.close()
    if ids - stored:
        raise Inconsistent(f"{len(ids - stored)} acknowledged charges lost in the failover")
    if len(stored) != len(set(stored)):
        raise Inconsistent("a charge counted twice")
    return seconds


def _replication(formation: Any) -> str:
    """What the primary says of its standbys: synchronous_standby_names and each one's sync_state."""
    engine = sa.create_engine(formation.url)
    try:
        with engine.connect() as connection:
            names = connection.exec_driver_sql("SHOW synchronous_standby_names").scalar()
            states = connection.exec_driver_sql("SELECT application_name, sync_state FROM pg_stat_replication").all()
    finally:
        engine.dispose()
    return f"synchronous_standby_names {names!r}, standbys {[tuple(row) for row in states]}"


def _stored_ids(url: str, prefix: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.exec_driver_sql(
                "SELECT charge_id FROM ledger_charge_index WHERE charge_id LIKE %(p)s", {"p": f"{prefix}-%"}).all()
    finally:
        engine.dispose()
    return {row[0] for row in rows}


def _writers(formation: Any, name: str, per_writer: int) -> Row:
    """8 writer processes recording ``per_writer`` charges each, one commit per call, on a fresh database."""
    formation.create_database(name)
    url = formation.database_url(name)
    accounts = account_ids(ACCOUNTS)
    items = list(charges(name, WRITERS * per_writer, accounts))
    open_accounts(url, accounts, name)  # one untimed charge per account, as the other writer scenarios
    shares = [items[i::WRITERS] for i in range(WRITERS)]
    count, seconds = writers.in_processes(url, shares)
    stored = len(_stored_ids(url, name)) - len(accounts)
    if count != len(items) or stored != len(items):
        raise Inconsistent(f"{name}: {count} written, {stored} stored, {len(items)} sent")
    mode = "synchronous standby" if name == "sync" else "asynchronous standby"
    return Row(f"record_charge, {WRITERS} writer processes, {mode}", POSTGRESQL, count, seconds,
               key=f"failover-{name}")
