"""Store fixtures: a SQLite file per test, and the real PostgreSQL server.

PostgreSQL tests never skip: an unreachable server is an error, so a green
run means they ran. ``LEDGER_TEST_PG_URL`` names the database (default: the
``test`` database on 127.0.0.1); each test starts from an empty schema.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Iterator

import pytest
import sqlalchemy as sa

from ledger import Ledger, Settings

PG_URL = os.environ.get(
    "LEDGER_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("LEDGER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


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


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
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
