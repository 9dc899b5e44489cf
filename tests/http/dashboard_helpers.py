"""What the dashboard's browser tests share: Chromium, the seeded usage, signing in, the figures shown.

Screenshots of each page are kept under ``$LEDGER_TEST_ARTIFACTS/screenshots``
(default ``.artifacts/screenshots`` in the checkout), which ``.ci/run`` prints.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest
from http_helpers import Server, bearer, ledger_command
from playwright.sync_api import Page, sync_playwright

ARTIFACTS = Path(os.environ.get("LEDGER_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / ".artifacts"))
SCREENSHOTS = ARTIFACTS / "screenshots"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
PERIOD = {"from": "2026-11-20", "to": "2026-11-30"}
FIGURES = ("charges", "prompt_tokens", "completion_tokens", "total_tokens", "cost_micros", "unpriced_charges")


@pytest.fixture(scope="module")
def browser():
    executable = shutil.which("chromium")
    assert executable, "Debian's chromium is needed: apt-get install -y chromium (see .ci/run)"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def seed(server: Server) -> dict[str, str]:
    """Two accounts' usage in November (prices for one model) and the keys to look at it."""
    ledger_command(server.database_url, "prices", "set", "--provider", "openai", "--model", "gpt-4o",
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
