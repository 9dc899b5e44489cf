"""The schema stamp on PostgreSQL: a complete store opens without re-installing; any change installs again."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from ledger import Ledger, Settings

pytestmark = pytest.mark.postgres

#: The write path's busiest function (its pg_proc row is rewritten by each install).
FUNCTION = "ledger_intake_account_charges(text[],text[],uuid[],text[],text[],bytea[],bytea[],timestamptz,text,text," \
           "uuid,bigint,text[],timestamptz[],bigint[],bigint[])"


def _open(url: str) -> None:
    Ledger(Settings(database_url=url)).close()


def _row_version(engine: sa.engine.Engine) -> str | None:
    """The function's catalogue row version (xmin): it changes whenever an install replaces the function."""
    with engine.connect() as connection:
        return connection.execute(
            sa.text("SELECT xmin::text FROM pg_proc WHERE oid = to_regprocedure(:f)"), {"f": FUNCTION}
        ).scalar()


@pytest.fixture
def engine(postgres_url):
    engine = sa.create_engine(postgres_url)
    yield engine
    engine.dispose()


def test_a_complete_store_opens_without_installing_again(postgres_url, engine):
    _open(postgres_url)
    installed = _row_version(engine)
    assert installed is not None
    _open(postgres_url)
    _open(postgres_url)
    assert _row_version(engine) == installed


def test_a_dropped_function_is_installed_again(postgres_url, engine):
    _open(postgres_url)
    with engine.begin() as connection:
        connection.exec_driver_sql(f"DROP FUNCTION {FUNCTION} CASCADE")
    assert _row_version(engine) is None
    _open(postgres_url)
    assert _row_version(engine) is not None


def test_a_function_replaced_by_another_release_is_replaced_back(postgres_url, engine):
    """An earlier release's process re-creates the functions as it knew them: the next open restores these."""
    _open(postgres_url)
    with engine.begin() as connection:
        source = connection.execute(
            sa.text("SELECT pg_get_functiondef(to_regprocedure(:f))"), {"f": FUNCTION}
        ).scalar()
        connection.exec_driver_sql(source.replace("-- Shared:", "-- An older body. Shared:").replace("%", "%%"))
    _open(postgres_url)
    with engine.connect() as connection:
        body = connection.execute(
            sa.text("SELECT prosrc FROM pg_proc WHERE oid = to_regprocedure(:f)"), {"f": FUNCTION}
        ).scalar()
    assert "An older body" not in body


def test_a_dropped_table_is_created_again(postgres_url, engine):
    _open(postgres_url)
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE ledger_holds")
    _open(postgres_url)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT to_regclass('ledger_holds')").scalar() is not None


def test_other_code_installs_again_and_stamps_its_own(postgres_url, engine):
    _open(postgres_url)
    installed = _row_version(engine)
    with engine.begin() as connection:
        connection.exec_driver_sql("UPDATE ledger_schema_stamp SET code = 'another release'")
    _open(postgres_url)
    assert _row_version(engine) != installed
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT code FROM ledger_schema_stamp").scalar() != "another release"
