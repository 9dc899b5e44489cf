"""The overview's health box in a real browser (Playwright, Debian's Chromium) against ``ledger serve``.

It says what ``/healthz`` says: whether an acknowledged charge survives the
primary's loss, the database written to, the standbys, and where the page's
figures are read from. On PostgreSQL the server reads its figures from a
stand-in read database (a second database reached read-only, holding usage
of its own), so the figures shown prove where they came from.
"""

from __future__ import annotations

import httpx
import pytest
from conftest import PG_URL, database_beside, ensure_database, read_only, reset_postgres
from dashboard_helpers import browser, screenshot, sign_in, store_of  # noqa: F401 - browser is a fixture
from http_helpers import serving

from ledger import Ledger, Settings
from projections import Projector

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("dashboard")]

READ_URL = database_beside("read")
READ_ONLY = read_only(READ_URL)


def standby_with_usage() -> str:
    """The stand-in read database with 7 tokens of account "on-standby" this month; its read-only URL."""
    ensure_database(READ_URL)
    reset_postgres(READ_URL)
    with Ledger(Settings(database_url=READ_URL)) as standby:
        standby.record_charge(account_id="on-standby", charge_type="usage", charge_id="s-1", prompt_tokens=7)
        Projector(standby).run()
    return READ_ONLY


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def site(request, tmp_path, browser, monkeypatch):  # noqa: F811 - the fixture imported above
    """A server (PostgreSQL: reading from the stand-in), an admin key, and a page."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ledger.db'}"
    else:
        reset_postgres(PG_URL)
        monkeypatch.setenv("LEDGER_READ_DATABASE_URL", standby_with_usage())
        url = PG_URL
    with serving(url) as server:
        admin = server.new_key("--role", "admin")
        context = browser.new_context(base_url=server.url)
        yield server, admin, context.new_page()
        context.close()


def box(page, figure: str) -> str:
    return page.locator(f'.health [data-figure="{figure}"]').inner_text()


def test_the_health_box_says_whether_charges_are_safe_and_where_figures_come_from(site):
    server, admin, page = site
    sign_in(page, admin)
    assert page.url.endswith("/dashboard/overview")
    replication = httpx.get(f"{server.url}/healthz", timeout=30).json()["replication"]
    assert page.get_by_role("heading", name="Ledger health").is_visible()
    safe = page.locator('.health [data-figure="replication"]')
    assert safe.get_attribute("data-safe") == ("yes" if replication["safe"] else "no")
    assert box(page, "replication") == f"{'yes' if replication['safe'] else 'NO'}: {replication['verdict']}"
    assert box(page, "reads") == replication["reads"]["summary"]
    if replication["store"] == "sqlite":
        assert replication["verdict"] == "embedded, single file"
        assert "embedded, single file" in box(page, "primary")
        assert page.locator('.health [data-figure="standbys"]').count() == 0
        page.goto("/dashboard/accounts/anyone")
        assert page.locator('[data-figure="reads"]').count() == 0  # read from the primary: nothing to say
        page.goto("/dashboard/overview")
    else:
        assert f"PostgreSQL primary, synchronous_commit {replication['synchronous_commit']}" in box(page, "primary")
        names = [s["name"] for s in replication["standbys"]]
        shown = box(page, "standbys")
        assert all(name in shown for name in names) and (names or shown == "none connected")
        assert page.locator('.health [data-figure="reads"]').get_attribute("data-source") == "read database"
        assert "on-standby" in page.content()  # the figures came from the read database
        page.goto("/dashboard/accounts/on-standby")
        assert page.locator('[data-figure="reads"]').inner_text() == f"These figures: {replication['reads']['summary']}."
        page.goto("/dashboard/overview")
    screenshot(page, "overview-health", store_of(server))
