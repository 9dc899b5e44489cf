"""Replication health against the real PostgreSQL server: the state read, the verdict, the warning at start.

The server on 5432 has no standby (a streaming standby is the failover
trials' formation), so the states read here are a primary's; what the server
itself says (``SHOW``) decides what is expected. The verdict's other cases
(a synchronous standby, quorum, a standby that is only potential, hidden
state, a server in recovery) are the pure rule :func:`unsafe_reasons` over
the facts pg_stat_replication would give.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import PG_URL, replication_of, scalar, wait_until

from ledger import Ledger, Settings
from ledger.store.keys import reader_of
from ledger.store.maintenance import warn_if_unvacuumed
from ledger.store.replication import (
    Standby,
    read_replication,
    unsafe_reasons,
    warn_if_unsafe,
)

ROOT = Path(__file__).resolve().parents[2]
JOBS_REDIS_URL = os.environ.get("LEDGER_TEST_JOBS_REDIS_URL", "redis://127.0.0.1:6379/14")
#: What every start-up warning says (ledger.store.replication.warn_if_unsafe).
WARNING = "an acknowledged charge could be lost"

pytestmark = pytest.mark.postgres


def with_options(url: str, options: str) -> str:
    """``url`` with libpq ``options`` (e.g. ``-c synchronous_commit=off``) for every session."""
    return sa.engine.make_url(url).update_query_dict({"options": options}).render_as_string(hide_password=False)


def server_setting(name: str, url: str = PG_URL) -> str:
    return scalar(url, f"SHOW {name}")


def standby(name: str, sync_state: str | None, state: str | None = "streaming") -> Standby:
    return Standby(name=name, address="10.0.0.2", state=state, sync_state=sync_state, replay_lag_seconds=0.001,
                   replay_lag_bytes=0, write_lag_bytes=0)


# -- the verdict's rule ---------------------------------------------------------------------

FACTS = {"in_recovery": False, "synchronous_commit": "on", "synchronous_standby_names": "node_2",
         "role_name": "ledger", "sees_standbys": True, "standbys": (standby("node_2", "sync"),)}


@pytest.mark.parametrize(("change", "expected"), [
    ({}, ()),
    ({"synchronous_standby_names": "ANY 1 (node_2, node_3)",
      "standbys": (standby("node_2", "quorum"), standby("node_3", "quorum"))}, ()),
    ({"synchronous_commit": "remote_apply"}, ()),
    ({"synchronous_commit": "off"}, ("synchronous_commit is off",)),
    ({"synchronous_commit": "local"}, ("synchronous_commit is local",)),
    ({"synchronous_standby_names": "", "standbys": (standby("node_2", "async"),)}, ("no synchronous standby",)),
    ({"standbys": (standby("node_2", "potential"),)},
     ("no synchronous standby connected (commits wait until one is)",)),
    ({"standbys": ()}, ("no synchronous standby connected (commits wait until one is)",)),
    ({"sees_standbys": False, "standbys": (standby("node_2", None, None),)},
     ("the standbys' state is hidden from role ledger: grant it pg_monitor",)),
    ({"in_recovery": True}, ("this server is a standby (in recovery), not the primary",)),
    ({"synchronous_commit": "off", "synchronous_standby_names": "", "standbys": ()},
     ("synchronous_commit is off", "no synchronous standby")),
])
def test_a_charge_is_safe_only_when_a_commit_waits_for_a_connected_synchronous_standby(change, expected):
    assert unsafe_reasons(**{**FACTS, **change}) == expected


# -- the real server ----------------------------------------------------------------------------


def test_the_server_the_ledger_writes_to_is_read_as_it_says_it_is():
    with Ledger(Settings(database_url=PG_URL)) as ledger:
        state = read_replication(reader_of(ledger.store))
    assert state.store == "postgresql" and state.role == "primary" and not state.in_recovery
    assert state.synchronous_commit == server_setting("synchronous_commit")
    assert state.synchronous_standby_names == server_setting("synchronous_standby_names")
    assert state.sees_standbys  # the test role is a superuser: it sees everything
    names_set = bool(state.synchronous_standby_names.strip())
    assert ("no synchronous standby" in state.reasons) == (not names_set)
    assert state.safe == (state.verdict == "safe") == (not state.reasons)
    waits = state.synchronous_commit not in ("off", "local")
    assert state.synchronous == (names_set and waits and any(s.synchronous for s in state.standbys))


@pytest.mark.parametrize("setting", ["off", "local"])
def test_synchronous_commit_set_for_the_ledgers_sessions_is_what_counts(setting):
    url = with_options(PG_URL, f"-c synchronous_commit={setting}")
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        state = read_replication(engine)
    finally:
        engine.dispose()
    assert state.synchronous_commit == setting
    assert f"synchronous_commit is {setting}" in state.reasons
    assert not state.safe and not state.synchronous
    assert state.verdict.startswith(f"synchronous_commit is {setting}")


@pytest.fixture
def plain_role() -> Iterator[tuple[str, str]]:
    """A login role of this test database's own without pg_monitor, and one with it (both dropped after)."""
    database = sa.engine.make_url(PG_URL).database
    plain, monitor = f"{database}_plain", f"{database}_monitor"
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as connection:
        for role in (plain, monitor):
            connection.exec_driver_sql(f'DROP ROLE IF EXISTS "{role}"')
            connection.exec_driver_sql(f'CREATE ROLE "{role}" LOGIN')
        connection.exec_driver_sql(f'GRANT pg_monitor TO "{monitor}"')
    try:
        yield plain, monitor
    finally:
        with admin.connect() as connection:
            for role in (plain, monitor):
                connection.exec_driver_sql(f'DROP ROLE IF EXISTS "{role}"')
        admin.dispose()


def test_a_role_without_pg_monitor_is_told_that_the_standbys_state_is_hidden(plain_role):
    plain, monitor = plain_role
    seen = {}
    for role in (plain, monitor):
        engine = sa.create_engine(sa.engine.make_url(PG_URL).set(username=role), poolclass=sa.pool.NullPool)
        try:
            seen[role] = read_replication(engine)
        finally:
            engine.dispose()
    assert seen[plain].sees_standbys is False and seen[monitor].sees_standbys is True
    assert seen[plain].role_name == plain
    if seen[plain].synchronous_standby_names.strip():  # with names set, hidden state is never "safe"
        assert f"the standbys' state is hidden from role {plain}: grant it pg_monitor" in seen[plain].reasons
    else:
        assert seen[plain].reasons == seen[monitor].reasons


# -- the warning at start ---------------------------------------------------------------------

OPEN_TWICE = """
import logging, sys
logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
from ledger import Ledger
first = Ledger.from_url({url!r})
first.record_charge(account_id="acme", charge_type="usage", prompt_tokens=1)
second = Ledger.from_url({url!r})
first.close(); second.close()
"""


def warnings_of(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if WARNING in line]


def test_a_writer_on_postgresql_warns_once_per_process_and_on_sqlite_never(tmp_path):
    state = replication_of(PG_URL)
    for url in (PG_URL, f"sqlite:///{tmp_path / 'ledger.db'}"):
        done = subprocess.run([sys.executable, "-c", OPEN_TWICE.format(url=url)], capture_output=True, text=True,
                              timeout=120, cwd=ROOT, check=False)
        assert done.returncode == 0, done.stderr
        lines = warnings_of(done.stderr)
        if url.startswith("sqlite") or state.safe:
            assert lines == []
        else:
            assert len(lines) == 1, done.stderr
            assert lines[0].startswith("WARNING ledger.store.replication: ") and state.verdict in lines[0]


def test_the_warning_names_synchronous_commit_off():
    url = with_options(PG_URL, "-c synchronous_commit=off")
    done = subprocess.run([sys.executable, "-c", OPEN_TWICE.format(url=url)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr
    lines = warnings_of(done.stderr)
    assert len(lines) == 1 and "synchronous_commit is off" in lines[0]


@pytest.mark.parametrize("check, logger, said", [
    (warn_if_unsafe, "ledger.store.replication", "could not read the replication state"),
    (warn_if_unvacuumed, "ledger.store.maintenance", "could not read the autovacuum settings"),
])
def test_a_state_at_start_that_cannot_be_read_is_logged_and_never_fatal(caplog, check, logger, said):
    unreachable = sa.create_engine("postgresql+psycopg2://postgres@127.0.0.1:1/nowhere",
                                   connect_args={"connect_timeout": 2}, poolclass=sa.pool.NullPool)
    with caplog.at_level(logging.WARNING, logger=logger):
        assert check(unreachable) is None
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert said in caplog.records[0].getMessage()
    assert "carrying on" in caplog.records[0].getMessage()


def test_ledger_worker_warns_at_start_before_any_task(tmp_path):
    state = replication_of(PG_URL)
    log = tmp_path / "worker.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LEDGER_DATABASE_URL": PG_URL, "LEDGER_HUEY_URL": JOBS_REDIS_URL}
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "ledger_service.cli", "worker", "--workers", "1",
                                    "--no-periodic"], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        wait_until(lambda: "queue:" in log.read_text() and (state.safe or WARNING in log.read_text())
                   or process.poll() is not None, "the worker's banner", timeout=60)
    finally:
        process.terminate()
        process.wait(timeout=30)
    lines = warnings_of(log.read_text())
    assert len(lines) == (0 if state.safe else 1), log.read_text()
    if lines:
        assert state.verdict in lines[0]


def test_ledger_health_says_what_the_server_says(tmp_path):
    def health(url: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ledger_service.cli", "--database-url", url, "health", *extra],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False)

    state = replication_of(PG_URL)
    shown = health(PG_URL, "--json")
    assert shown.returncode == 0, shown.stderr
    answer = json.loads(shown.stdout)
    assert (answer["role"], answer["safe"], answer["verdict"]) == ("primary", state.safe, state.verdict)
    assert answer["synchronous_commit"] == state.synchronous_commit
    assert answer["reads"]["source"] == "primary"
    assert warnings_of(shown.stderr) == []  # it opens no ledger: the table says it, once
    table = health(PG_URL)
    assert table.returncode == 0 and "charges safe" in table.stdout
    assert ("yes" if state.safe else f"NO: {state.verdict}") in table.stdout
    assert health(PG_URL, "--require-safe").returncode == (0 if state.safe else 1)

    sqlite = health(f"sqlite:///{tmp_path / 'ledger.db'}", "--json")
    assert sqlite.returncode == 0, sqlite.stderr
    assert json.loads(sqlite.stdout)["verdict"] == "embedded, single file"
    assert not (tmp_path / "ledger.db").exists()  # health creates nothing
