"""The dashboard in a real browser: Playwright drives Debian's Chromium, headless, against ``ledger serve``.

These tests only read: they share one seeded server per store (the period
test, which records more usage, has its own in ``test_dashboard_period.py``).
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest
from dashboard_helpers import (
    PERIOD,
    api_totals,
    browser,  # noqa: F401 - a fixture
    choose_period,
    screenshot,
    seed,
    shown_totals,
    sign_in,
    store_of,
)
from http_helpers import module_store_url, serving  # noqa: F401 - a fixture

# One worker runs them in a row, so they share one seeded server per store.
pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("dashboard")]


@pytest.fixture(scope="module")
def seeded(module_store_url):  # noqa: F811 - the fixture imported above
    """A server with the seeded usage, shared by the tests that only read it (one per store)."""
    with serving(module_store_url) as server:
        yield server, seed(server)


@pytest.fixture
def site(seeded, browser):  # noqa: F811 - the fixture imported above
    """The shared seeded server, its keys, and a fresh browser page (its own cookies)."""
    server, keys = seeded
    context = browser.new_context(base_url=server.url, accept_downloads=True)
    yield server, keys, context.new_page()
    context.close()


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
    _server, _keys, page = site
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
    _server, keys, page = site
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
