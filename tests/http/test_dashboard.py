"""The dashboard in a real browser: Playwright drives Debian's Chromium, headless, against ``ledger serve``.

Screenshots of each page are kept under ``$LEDGER_TEST_ARTIFACTS/screenshots``
(default ``.artifacts/screenshots`` in the checkout), which ``.ci/run`` prints.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from collections import Counter
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, sync_playwright

from http_helpers import bearer, ledger_command, server  # noqa: F401 - fixture

pytestmark = pytest.mark.browser

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


@pytest.fixture
def site(server, browser):  # noqa: F811 - the fixture imported above
    """A server with two accounts' usage, its keys, and a fresh browser page."""
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
    context = browser.new_context(base_url=server.url, accept_downloads=True)
    page = context.new_page()
    yield server, keys, page
    context.close()


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


def test_read_key_sees_its_account_chart_and_the_apis_totals(site):
    server, keys, page = site
    sign_in(page, keys["read_a"])
    assert page.url.endswith("/dashboard/accounts/acct-a")
    choose_period(page)
    assert page.get_by_role("img", name="Tokens per day, stacked by provider and model").is_visible()
    assert page.get_by_role("img", name="Cost per day, stacked by provider and model").is_visible()
    assert page.locator(".legend li").first.is_visible()
    assert page.get_by_text("Billing time zone: UTC").is_visible()
    assert shown_totals(page) == api_totals(server, keys["read_a"], "acct-a")
    assert shown_totals(page)["cost_micros"] > 0 and shown_totals(page)["unpriced_charges"] == 24
    assert page.get_by_role("table", name="By user").is_visible()
    assert page.get_by_role("table", name="By charge type").is_visible()
    with page.expect_download() as download:
        page.get_by_role("link", name="Download these figures as CSV").click()
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert {row["account_id"] for row in rows} == {"acct-a"}
    assert sum(int(row["total_tokens"]) for row in rows) == shown_totals(page)["total_tokens"]
    screenshot(page, "account-read-key", store_of(server))


def test_read_key_never_sees_another_account(site):
    server, keys, page = site
    sign_in(page, keys["read_a"])
    choose_period(page)
    assert "acct-b" not in page.content() and "bob" not in page.content()
    for path in ("/dashboard/accounts/acct-b", "/dashboard/overview", "/dashboard/accounts/acct-b/usage.csv",
                 "/dashboard/overview/usage.csv"):
        response = page.goto(path)
        assert response.status == 403, path
        assert "bob" not in page.content() and "anthropic" not in page.content()
    screenshot(page, "refused-read-key", store_of(server))


def test_admin_key_sees_every_account_and_the_overview(site):
    server, keys, page = site
    sign_in(page, keys["admin"])
    assert page.url.endswith("/dashboard/overview")
    choose_period(page)
    assert page.locator("#overview-tokens").is_visible() and page.locator("#overview-cost").is_visible()
    by_cost = page.get_by_role("table", name="Top accounts by cost")
    assert by_cost.get_by_role("link", name="acct-a").is_visible() and by_cost.get_by_role("link", name="acct-b").is_visible()
    assert page.locator('[data-figure="unpriced"]').is_visible() and page.locator('[data-figure="lag"]').is_visible()
    assert page.get_by_text("Last audit").is_visible()
    both = {name: a + b for (name, a), b in zip(api_totals(server, keys["admin"], "acct-a").items(),
                                                 api_totals(server, keys["admin"], "acct-b").values())}
    assert shown_totals(page) == both
    screenshot(page, "overview-admin", store_of(server))
    with page.expect_navigation():
        by_cost.get_by_role("link", name="acct-b").click()
    assert page.url.split("?")[0].endswith("/dashboard/accounts/acct-b")
    assert shown_totals(page) == api_totals(server, keys["admin"], "acct-b")
    screenshot(page, "account-admin", store_of(server))


def test_after_signing_out_pages_answer_as_for_no_key(site):
    server, keys, page = site
    anonymous = {path: page.request.get(path).status for path in ("/dashboard/overview", "/dashboard/accounts/acct-a")}
    sign_in(page, keys["admin"])
    with page.expect_navigation():
        page.get_by_role("button", name="Sign out").click()
    assert page.get_by_label("API key").is_visible()
    for path, status in anonymous.items():
        assert status == 401
        response = page.goto(path)
        assert response.status == status, path
        assert page.get_by_label("API key").is_visible()
    assert not [c for c in page.context.cookies() if c["name"] == "ledger_session"]
    screenshot(page, "signed-out", store_of(server))


def test_a_bad_key_is_refused_without_echoing_it(site):
    server, keys, page = site
    sign_in(page, "lk_0123456789abcdef_" + "x" * 43)
    assert page.get_by_role("alert").is_visible()
    page.goto("/dashboard/overview")
    assert page.get_by_label("API key").is_visible()


class Ids(HTMLParser):
    """Every ``id`` attribute of a page, SVG included."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.ids.extend(value for name, value in attrs if name == "id")


def repeated_ids(html: str) -> list[str]:
    parser = Ids()
    parser.feed(html)
    return sorted(name for name, count in Counter(parser.ids).items() if count > 1)


def test_every_id_on_every_page_is_unique(site):
    server, keys, page = site
    page.goto("/dashboard/sign-in")
    pages = {"sign-in": page.content()}
    sign_in(page, keys["admin"])
    for name, path in (("overview", "/dashboard/overview"), ("account", "/dashboard/accounts/acct-a"),
                       ("empty", "/dashboard/overview?period=custom&from=2020-01-01&to=2020-01-03")):
        page.goto(f"{path}?period=custom&from={PERIOD['from']}&to={PERIOD['to']}" if "?" not in path else path)
        pages[name] = page.content()
    with page.expect_navigation():
        page.get_by_role("button", name="Sign out").click()
    sign_in(page, keys["read_a"])
    page.goto("/dashboard/overview")
    pages["refused"] = page.content()
    for name, html in pages.items():
        assert repeated_ids(html) == [], name
    assert 'id="top-cost-heading"' in pages["overview"] and 'id="top-tokens-heading"' in pages["overview"]


def test_the_default_period_holds_today_and_the_30_days_before(site):
    server, keys, page = site
    today = datetime.now(timezone.utc).date()
    first = today - timedelta(days=30)
    edges = [{"account_id": "edge", "user_id": "ada", "charge_type": "completion", "prompt_tokens": 1,
              "completion_tokens": 1, "charge_id": f"edge-{n}", "occurred_at": at}
             for n, at in enumerate((f"{first.isoformat()}T00:00:01Z", datetime.now(timezone.utc).isoformat(),
                                     f"{(first - timedelta(days=1)).isoformat()}T23:59:59Z"))]
    answer = httpx.post(f"{server.url}/v1/charges/batch", json={"charges": edges}, headers=bearer(keys["admin"]))
    assert answer.json()["recorded"] == 3
    sign_in(page, keys["admin"])
    page.goto("/dashboard/accounts/edge")
    assert page.get_by_label("Last 30 days", exact=True).is_checked()
    assert page.get_by_text(f"Period: {first.isoformat()} to {today.isoformat()}").is_visible()
    assert shown_totals(page)["charges"] == 2  # the first day's and today's; the day before is outside
    screenshot(page, "account-default-period", store_of(server))
