"""What the dashboard's browser tests share: Chromium, the seeded usage, signing in, the figures shown.

One Chromium per test process: launched by the first test that asks for the
``browser`` fixture, kept for the rest of the run (each test opens its own
context, so no cookies or pages pass from one test to the next), closed when
pytest ends.

Screenshots of each page are kept under ``$LEDGER_TEST_ARTIFACTS/screenshots``
(default ``.artifacts/screenshots`` in the checkout), which ``.ci/run`` prints.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from http_helpers import Server, bearer, ledger_cli
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from ledger import Ledger, Settings
from ledger.store.schema import dashboard_sessions

ARTIFACTS = Path(os.environ.get("LEDGER_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / ".artifacts"))
SCREENSHOTS = ARTIFACTS / "screenshots"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
PERIOD = {"from": "2026-11-20", "to": "2026-11-30"}
FIGURES = ("charges", "prompt_tokens", "completion_tokens", "total_tokens", "cost_micros", "unpriced_charges")


class _Chromium:
    """The process's Playwright and Chromium, started on first use."""

    playwright: Playwright | None = None
    browser: Browser | None = None
    loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def get(cls, config: pytest.Config) -> Browser:
        if cls.playwright is None:
            cls.playwright = sync_playwright().start()
            cls.loop = asyncio.get_running_loop()  # Playwright's: marked running after each of its calls
            config.add_cleanup(cls.stop)
        asyncio.events._set_running_loop(cls.loop)  # as Playwright's calls expect it
        if cls.browser is None or not cls.browser.is_connected():
            executable = shutil.which("chromium")
            assert executable, "Debian's chromium is needed: apt-get install -y chromium (see .ci/run)"
            cls.browser = cls.playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        return cls.browser

    @classmethod
    def stop(cls) -> None:
        asyncio.events._set_running_loop(cls.loop)
        if cls.browser is not None and cls.browser.is_connected():
            cls.browser.close()
        cls.playwright.stop()  # its loop ends, and with it the thread's running loop


@pytest.fixture
def browser(request: pytest.FixtureRequest) -> Iterator[Browser]:
    """The process's Chromium (one launch per test process, not per module).

    Playwright's sync API leaves its own event loop marked as running in this
    thread between calls; it is unmarked after the test, so a later test of the
    process may still call ``asyncio.run``.
    """
    try:
        yield _Chromium.get(request.config)
    finally:
        asyncio.events._set_running_loop(None)


def sessions_in(database_url: str, key_id: str | None = None) -> list[dict]:
    """The rows of ``dashboard_sessions`` on the store: every session, or the key ``key_id``'s (none when
    the table was never made; read on an engine of its own, so looking creates nothing)."""
    engine = sa.create_engine(database_url)
    try:
        if not sa.inspect(engine).has_table(dashboard_sessions.name):
            return []
        query = dashboard_sessions.select()
        if key_id is not None:
            query = query.where(dashboard_sessions.c.key_id == key_id)
        with engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(query)]
    finally:
        engine.dispose()


def end_sessions(database_url: str) -> None:
    """No dashboard session on the store, as on a fresh one (each request looks its session up there)."""
    with Ledger(Settings(database_url=database_url)) as ledger, ledger.store.engine.begin() as connection:
        connection.execute(dashboard_sessions.delete())


def seed(server: Server) -> dict[str, str]:
    """Two accounts' usage in November (prices for one model) and the keys to look at it."""
    ledger_cli(server.database_url, "prices", "set", "--provider", "openai", "--model", "gpt-4o",
               "--prompt", "2500000", "--completion", "10000000", "--effective-from", "2026-01-01T00:00:00Z")
    admin = server.new_key("--role", "admin")
    keys = {"admin": admin, "read_a": server.new_key("--role", "read", "--account", "acct-a")}
    items = [{"account_id": account, "user_id": user, "charge_type": kind, "provider": provider, "model": model,
              "prompt_tokens": 100 * n, "completion_tokens": 7 * n, "charge_id": f"{account}-{user}-{n}",
              "occurred_at": f"2026-11-{20 + n % 6:02d}T12:00:00Z"}
             for n in range(1, 25)
             for account, user, kind, provider, model in (("acct-a", "ada", "completion", "openai", "gpt-4o"),
                                                          ("acct-a", "alan", "tool", None, None),
                                                          ("acct-b", "bob", "plugin", "anthropic", "claude"))]
    answer = httpx.post(f"{server.url}/v1/charges/batch", json={"charges": items}, headers=bearer(admin))
    assert answer.json()["recorded"] == len(items)
    return keys


def sign_in(page: Page, key: str) -> None:
    """With the keyboard, as a person would: the labelled field, then Enter."""
    page.goto("/dashboard")
    page.get_by_label("API key").focus()
    page.keyboard.type(key)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert key not in page.url and key not in page.content()


def choose_period(page: Page) -> None:
    page.get_by_label("Custom range", exact=True).check()
    page.get_by_label("From billing date", exact=True).fill(PERIOD["from"])
    page.get_by_label("To billing date", exact=True).fill(PERIOD["to"])
    with page.expect_navigation():
        page.get_by_role("button", name="Show").click()


def shown_totals(page: Page) -> dict[str, int]:
    return {name: int(page.locator(f'.totals [data-figure="{name}"]').get_attribute("data-value")) for name in FIGURES}


def api_totals(server, key: str, account: str) -> dict[str, int]:
    rows = httpx.get(f"{server.url}/v1/usage", params={**PERIOD, "account": account, "group_by": "account_id"},
                     headers=bearer(key)).json()["data"]
    return {name: sum(row[name] for row in rows) for name in FIGURES}


def screenshot(page: Page, name: str, store: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}-{store}.png"), full_page=True)


def store_of(server) -> str:
    return "sqlite" if server.database_url.startswith("sqlite") else "postgresql"
