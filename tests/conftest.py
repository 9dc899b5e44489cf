"""Store fixtures, per-worker databases and the test profiles.

PostgreSQL tests never skip: an unreachable server is an error, so a green
run means they ran. ``LEDGER_TEST_PG_URL`` names the database (default: the
``test`` database on 127.0.0.1); each test starts from an empty schema.

Parallel runs (pytest-xdist, on by default: see docs/TESTING.md): worker
``gwN`` uses its own PostgreSQL database ``<name>_xN`` (``test_x0``,
``test_x1``, ... on the same server, created on demand and emptied when the
worker ends) and its own Redis databases ``1 + 2N`` (``LEDGER_TEST_REDIS_URL``)
and ``2 + 2N`` (``LEDGER_TEST_JOBS_REDIS_URL``). Both are set in the
environment before any test module is imported, so module constants, the
servers and the commands the tests start all see the worker's own stores.

Profiles: ``LEDGER_TEST_PROFILE=default`` (the default) runs every test with
shorter trials and fewer Hypothesis examples; ``LEDGER_TEST_PROFILE=long``
runs the full trials. Same tests, same assertions; only sizes differ.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import pytest
import redis
import sqlalchemy as sa
from hypothesis import settings as hypothesis_settings

from ledger import Ledger, Settings

# -- profiles ---------------------------------------------------------------------------

PROFILE = os.environ.get("LEDGER_TEST_PROFILE", "default")
if PROFILE not in ("default", "long"):
    raise pytest.UsageError(f"LEDGER_TEST_PROFILE={PROFILE!r}: expected 'default' or 'long'")

#: Trial sizes the test modules read from the environment: {variable: (default, long)}.
#: The long values are the modules' own defaults; an explicitly set variable wins.
TRIAL_SIZES = {
    "REL_SIM_EXAMPLES": ("60", "500"),  # tests/reliability/test_simulation.py, SQLite
    "REL_SIM_PG_EXAMPLES": ("6", "30"),  # tests/reliability/test_simulation.py, PostgreSQL
    "REL_CRASH_TRIALS": ("8", "50"),  # tests/reliability/test_crashes.py
    "REL_CONCURRENT_CHARGES": ("800", "2400"),  # tests/reliability/test_concurrency.py
    "TEST_CHARGES": ("1500", "5000"),  # tests/integration/test_concurrent_writers.py
}
for _name, (_default, _long) in TRIAL_SIZES.items():
    os.environ.setdefault(_name, _long if PROFILE == "long" else _default)

#: Hypothesis: a test without its own count runs the profile's max_examples; a test with
#: its own writes ``K * settings.default.max_examples // 100``: K examples in the long
#: profile (100, Hypothesis's own default), a third of K in the default profile.
hypothesis_settings.register_profile("default", max_examples=33)
hypothesis_settings.register_profile("long", max_examples=100)
hypothesis_settings.load_profile(PROFILE)

# -- stores: the run's own, or the xdist worker's own -------------------------------------

WORKER = os.environ.get("PYTEST_XDIST_WORKER")  # "gw0", "gw1", ... under xdist; None in a serial run
#: Worker gwN uses Redis databases 1 + 2N and 2 + 2N: at most this many workers.
MAX_WORKERS = 4

_BASE_PG_URL = os.environ.get(
    "LEDGER_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)
_BASE_REDIS_URL = os.environ.get("LEDGER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _worker_urls(worker: str) -> tuple[str, str, str]:
    """The worker's PostgreSQL URL and its two Redis URLs (tests, jobs tests)."""
    number = int(worker.removeprefix("gw"))
    if number >= MAX_WORKERS:
        raise pytest.UsageError(
            f"xdist worker {worker}: at most {MAX_WORKERS} workers (each takes two Redis databases of 1-8)"
        )
    pg = sa.engine.make_url(_BASE_PG_URL)
    pg = pg.set(database=f"{pg.database}_x{number}")
    redis_base = _BASE_REDIS_URL.rsplit("/", 1)[0]
    return (
        pg.render_as_string(hide_password=False),
        f"{redis_base}/{1 + 2 * number}",
        f"{redis_base}/{2 + 2 * number}",
    )


if WORKER:
    (
        os.environ["LEDGER_TEST_PG_URL"],
        os.environ["LEDGER_TEST_REDIS_URL"],
        os.environ["LEDGER_TEST_JOBS_REDIS_URL"],
    ) = _worker_urls(WORKER)

PG_URL = os.environ.get(
    "LEDGER_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("LEDGER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


#: Trials of 8 processes killed or racing each other, some with leases and deadlines: they share
#: one xdist group ("heavy"), so one worker runs them one after another (never two at once on
#: 2 cores). They are collected first, so that worker starts on them while the others share the rest.
HEAVY = (
    "tests/reliability/test_concurrent_commits.py",
    "tests/reliability/test_crashes.py",
    "tests/reliability/test_concurrency.py",
    "tests/reliability/test_jobs_delivery.py",
    "tests/reliability/test_budget_concurrency.py",
    "tests/integration/test_concurrent_writers.py",
    "tests/ha/test_failover.py",
)

#: Tests whose sizes the profile sets (trial counts, Hypothesis examples): marked ``long``,
#: so ``LEDGER_TEST_PROFILE=long python -m pytest -m long`` runs exactly the full trials.
PROFILED = (
    "tests/reliability/test_simulation.py",
    "tests/reliability/test_crashes.py",
    "tests/reliability/test_concurrency.py",
    "tests/reliability/test_budget_concurrency.py",
    "tests/reliability/test_budget_state_machine.py",
    "tests/integration/test_concurrent_writers.py",
    "tests/integration/test_compaction_properties.py",
    "tests/integration/test_compaction_projections.py::test_random_histories",
    "tests/integration/test_projection_properties.py",
    "tests/http/test_schema.py",
    "tests/unit/test_billing_date.py::test_cached_billing_date_equals_direct_conversion",
    "tests/unit/test_rollup.py::test_digest_ignores_order_and_sees_every_figure",
    "tests/unit/test_pricing.py::test_the_sum_of_costed_charges_is_exactly_the_sum_of_their_costs",
)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    heavy: list[pytest.Item] = []
    rest: list[pytest.Item] = []
    for item in items:
        if item.nodeid.startswith(PROFILED):
            item.add_marker(pytest.mark.long)
        if item.nodeid.startswith(HEAVY):
            item.add_marker(pytest.mark.xdist_group("heavy"))
            heavy.append(item)
        else:
            rest.append(item)
    items[:] = heavy + rest


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto`` (the default in pyproject.toml): LEDGER_TEST_WORKERS, else 4 (measured on 2 cores:
    the tests wait on servers, browsers and subprocesses as much as they compute; docs/TESTING.md)."""
    return min(int(os.environ.get("LEDGER_TEST_WORKERS", "4")), MAX_WORKERS)


def wait_until(check: Callable[[], Any], what: str, timeout: float, poll: float = 0.05) -> Any:
    """Poll until ``check()`` is truthy and return it; fail naming ``what`` after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(poll)
    return value


def reset_postgres(url: str = PG_URL) -> None:
    """Drop every table of the test database: each test starts empty."""
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("DROP SCHEMA IF EXISTS public CASCADE")
            connection.exec_driver_sql("CREATE SCHEMA public")
    except sa.exc.OperationalError as exc:  # fail loudly, never skip
        raise RuntimeError(
            f"PostgreSQL is not reachable at {url}: start it (see .ci/run)"
        ) from exc
    finally:
        engine.dispose()


def scalar(url: str, sql: str) -> Any:
    """The one value ``sql`` answers on ``url``, read on a connection of its own."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            return connection.exec_driver_sql(sql).scalar_one()
    finally:
        engine.dispose()


def replication_of(url: str) -> Any:
    """The replication state of the server at ``url`` (ledger.store.replication), on a connection of its own."""
    from ledger.store.replication import read_replication

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        return read_replication(engine)
    finally:
        engine.dispose()


def admin_sql(sql: str) -> None:
    """``sql`` on the server's ``postgres`` database, outside a transaction (CREATE, DROP, ALTER DATABASE)."""
    engine = sa.create_engine(sa.engine.make_url(PG_URL).set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql(sql)
    finally:
        engine.dispose()


def database_beside(suffix: str) -> str:
    """The URL of the database ``<database>_<suffix>`` beside the run's (a worker's own), on the same server."""
    url = sa.engine.make_url(PG_URL)
    return url.set(database=f"{url.database}_{suffix}").render_as_string(hide_password=False)


def read_only(url: str) -> str:
    """``url`` with every transaction read-only, as on a standby (a stand-in read database)."""
    return sa.engine.make_url(url).update_query_dict({"options": "-c default_transaction_read_only=on"}) \
        .render_as_string(hide_password=False)


@contextmanager
def scratch_database(suffix: str) -> Iterator[str]:
    """A database of the test's own beside the run's (``<database>_<suffix>``), which the test may make
    unreachable (``ALTER DATABASE ... ALLOW_CONNECTIONS false``); dropped afterwards whatever happened."""
    name = sa.engine.make_url(database_beside(suffix)).database
    admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin_sql(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        admin_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


#: Databases this process dropped and created afresh (``ensure_database(..., fresh=True)``: once per run).
_MADE_FRESH: set[str] = set()


def ensure_database(url: str = PG_URL, timeout: float = 60.0, *, fresh: bool = False) -> None:
    """Create the test database if it is missing (a worker's on its first run); fail loudly if unreachable.

    ``fresh``: drop and create it, once per run. Each test empties its database with DROP SCHEMA,
    which leaves dead rows in the database's own catalogue; where autovacuum is off (this machine's
    PostgreSQL, CI's too) they pile up run after run and every later run's catalogue work slows.
    """
    target = sa.engine.make_url(url)
    engine = sa.create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    end = time.monotonic() + timeout
    drop = fresh and target.database not in _MADE_FRESH
    try:
        while True:
            try:
                with engine.connect() as connection:
                    if drop:
                        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)')
                        drop = False
                        _MADE_FRESH.add(target.database)
                    exists = connection.exec_driver_sql(
                        "SELECT 1 FROM pg_database WHERE datname = %(name)s", {"name": target.database}
                    ).scalar()
                    if not exists:
                        connection.exec_driver_sql(f'CREATE DATABASE "{target.database}"')
                return
            except sa.exc.OperationalError as exc:
                # Two workers creating their databases at once: "source database "template1"
                # is being accessed by other users" or a duplicate name; try again shortly.
                retry = "accessed by other users" in str(exc) or "already exists" in str(exc)
                if not retry or time.monotonic() > end:
                    raise RuntimeError(
                        f"PostgreSQL is not reachable at {url}, or cannot create its database: start it (see .ci/run)"
                    ) from exc
            except sa.exc.ProgrammingError as exc:  # a concurrent CREATE of the same name won
                if "already exists" not in str(exc):
                    raise
                return
            time.sleep(0.2)
    finally:
        engine.dispose()


@pytest.fixture(scope="session", autouse=True)
def test_stores() -> Iterator[None]:
    """The run's PostgreSQL database exists before any test (a worker's made afresh); a worker leaves its stores empty."""
    ensure_database(PG_URL, fresh=bool(WORKER))
    yield
    if WORKER:  # only the worker's own databases: a serial run's `test` and Redis 14/15 stay as they were
        reset_postgres(PG_URL)
        for url in (REDIS_URL, os.environ["LEDGER_TEST_JOBS_REDIS_URL"]):
            redis.Redis.from_url(url).flushdb()


@pytest.fixture(scope="session", autouse=True)
def secret_key_file(tmp_path_factory) -> Iterator[str]:
    """The dashboard's secret key in the test run's own directory (never the runner's home).

    Set in the environment, so servers and commands the tests start use it too.
    """
    path = str(tmp_path_factory.mktemp("secret") / "secret-key")
    before = os.environ.get("LEDGER_SECRET_KEY_FILE")
    os.environ["LEDGER_SECRET_KEY_FILE"] = path
    yield path
    if before is None:
        os.environ.pop("LEDGER_SECRET_KEY_FILE", None)
    else:
        os.environ["LEDGER_SECRET_KEY_FILE"] = before


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture
def postgres_url() -> str:
    reset_postgres(PG_URL)
    return PG_URL


#: The stores the ledger supports, as the parameters of a fixture that runs a test once per store.
STORES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=STORES)
def store_url(request, tmp_path) -> str:
    """Each store the ledger supports: the test runs once per store."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    reset_postgres(PG_URL)
    return PG_URL


@pytest.fixture
def make_ledger(store_url) -> Iterator[Callable[..., Ledger]]:
    """Build ledgers on the test's store (several may share it, like processes)."""
    made: list[Ledger] = []

    def make(**settings) -> Ledger:
        settings.setdefault("database_url", store_url)
        ledger = Ledger(Settings(**settings))
        made.append(ledger)
        return ledger

    yield make
    for ledger in made:
        ledger.close()


@pytest.fixture
def ledger(make_ledger) -> Ledger:
    return make_ledger()
