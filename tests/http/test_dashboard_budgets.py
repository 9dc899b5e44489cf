"""An account page's budgets, credit balance and alerts, in a real browser (Playwright, Debian's Chromium,
against ``ledger serve``).

The seeded usage of ``dashboard_helpers.seed`` (November) plus, recorded now
through the library on the server's store: budgets on acct-a (one per unit
and period kind, one over its limit), a credit grant, a plain charge, a
reserved-and-captured charge and an open reservation; a token budget on
acct-b. The tests read those; the one that fires alerts uses its own account.
"""

from __future__ import annotations

import re

import pytest
from dashboard_helpers import browser, screenshot, seed, sign_in, store_of  # noqa: F401 - a fixture
from http_helpers import module_store_url, serving  # noqa: F401 - a fixture
from playwright.sync_api import Page
from test_dashboard import repeated_ids

from ledger import Ledger
from ledger.settings import Settings
from ledger_service.dashboard.budget_panels import ALERTS_SHOWN, BAR_WIDTH, geometry

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("dashboard-budgets")]

#: gpt-4o at the seeded prices: 100,000 x 2.5 + 10,000 x 10 = 350,000 micro-units, 110,000 tokens.
DORA = {"user_id": "dora", "charge_type": "completion", "provider": "openai", "model": "gpt-4o",
        "prompt_tokens": 100_000, "completion_tokens": 10_000}
#: Each budget's figures after ``arrange`` (those over all time: they cannot roll over during a run).
EXPECTED = {
    "dora-usd": {"spent": (700_000, "$0.70"), "held": (200_000, "$0.20"), "limit": (1_000_000, "$1.00"),
                 "remaining": (100_000, "$0.10")},
    "dora-tokens": {"spent": (220_000, "220,000 tokens"), "held": (5_000, "5,000 tokens"),
                    "limit": (150_000, "150,000 tokens"), "remaining": (0, "0 tokens")},
    "prepaid": {"spent": (700_000, "$0.70"), "held": (200_000, "$0.20"), "limit": (2_000_000, "$2.00"),
                "remaining": (1_100_000, "$1.10")},
}
BALANCE = {"balance_micros": (1_300_000, "$1.30"), "granted_micros": (2_000_000, "$2.00"),
           "used_micros": (700_000, "$0.70"), "overage_micros": (0, "$0.00")}
ACCT_A_BUDGETS = ("team-month", "dora-usd", "dora-tokens", "prepaid")
#: Records console errors, page errors and CSP violations (an init script runs whatever the page's CSP).
WATCH = """document.addEventListener("securitypolicyviolation",
  (e) => (window.__violations ||= []).push(e.violatedDirective + " " + e.blockedURI));"""


def arrange(ledger: Ledger) -> None:
    """Budgets, a grant, charges (plain and captured), an open hold, and two alert checks in between."""
    ledger.grant_credits("acct-a", 2_000_000, grant_id="dash-grant-1")
    ledger.set_budget("team-month", account_id="acct-a", limit_micros=50_000_000)
    ledger.set_budget("dora-usd", account_id="acct-a", user_id="dora", limit_micros=1_000_000, period="total")
    ledger.set_budget("dora-tokens", account_id="acct-a", user_id="dora", limit_tokens=150_000, period="total",
                      mode="soft")
    ledger.set_budget("prepaid", account_id="acct-a", limit="credits", period="total", thresholds=(90,))
    ledger.set_budget("bob-tokens", account_id="acct-b", limit_tokens=1_000, period="total", thresholds=(50, 100))
    [recorded] = ledger.record_charges([{**DORA, "account_id": "acct-a", "charge_id": "dora-1"}])
    assert recorded.ok
    first = ledger.check_budget_alerts()  # dora-tokens at 73%; bob-tokens far past its limit
    assert sorted((a.budget_id, a.threshold) for a in first) == [("bob-tokens", 50), ("bob-tokens", 100),
                                                                ("dora-tokens", 50)]
    ledger.reserve("acct-a", user_id="dora", estimate_micros=300_000, estimate_tokens=8_000, reservation_id="dash-r1")
    ledger.capture("dash-r1", **{k: v for k, v in DORA.items() if k != "user_id"}, charge_id="dora-2")
    ledger.reserve("acct-a", user_id="dora", estimate_micros=200_000, estimate_tokens=5_000, reservation_id="dash-r2")
    assert ledger.check_budget_alerts() == []  # the reservations fired them already


@pytest.fixture(scope="module")
def budgeted(module_store_url):  # noqa: F811 - the fixture imported above
    """A seeded server whose acct-a and acct-b have budgets, its keys, and a ledger on its store."""
    with serving(module_store_url) as server:
        keys = seed(server)
        keys["read_b"] = server.new_key("--role", "read", "--account", "acct-b")
        ledger = Ledger(Settings(database_url=module_store_url))
        try:
            arrange(ledger)
            yield server, keys, ledger
        finally:
            ledger.close()


@pytest.fixture
def site(budgeted, browser):  # noqa: F811 - the fixture imported above
    """The shared server, its keys and ledger, a fresh page, and what the page reported as wrong."""
    server, keys, ledger = budgeted
    context = browser.new_context(base_url=server.url)
    context.add_init_script(WATCH)
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("response", lambda response: problems.append(f"{response.status} {response.url}")
            if response.status >= 400 and response.status not in (401, 403) else None)
    yield server, keys, ledger, page, problems
    context.close()


def budget_item(page: Page, budget_id: str):
    return page.locator(f'li.budget[data-budget="{budget_id}"]')


def shown_figures(page: Page, budget_id: str) -> dict[str, tuple[int, str]]:
    item = budget_item(page, budget_id)
    return {name: (int(item.locator(f'[data-figure="{name}"]').get_attribute("data-value")),
                   item.locator(f'[data-figure="{name}"]').inner_text())
            for name in ("spent", "held", "limit", "remaining")}


def drawn(page: Page, budget_id: str) -> dict[str, float]:
    """The drawn widths of a budget bar's parts and where its limit line stands (SVG units)."""
    bar = budget_item(page, budget_id).locator("svg.budget-bar")
    return {"spent": float(bar.locator('[data-part="spent"]').get_attribute("width")),
            "held": float(bar.locator('[data-part="held"]').get_attribute("width")),
            "limit": float(bar.locator('[data-part="limit"]').get_attribute("x1"))}


def violations(page: Page) -> list[str]:
    return page.evaluate("window.__violations || []")


def test_each_budget_shows_its_terms_and_spent_held_and_limit_as_text_and_bar(site):
    server, keys, ledger, page, problems = site
    sign_in(page, keys["read_a"])
    assert page.url.endswith("/dashboard/accounts/acct-a")
    now = {status.budget_id: status for status in ledger.budgets("acct-a")}
    listed = page.locator("li.budget").evaluate_all("(items) => items.map((item) => item.dataset.budget)")
    assert sorted(listed) == sorted(ACCT_A_BUDGETS)
    for budget_id, figures in EXPECTED.items():
        assert shown_figures(page, budget_id) == figures, budget_id
    team = now["team-month"]  # this month's: compared with what the ledger says now
    assert {name: value for name, (value, _) in shown_figures(page, "team-month").items()} == {
        "spent": team.spent, "held": team.held, "limit": 50_000_000, "remaining": team.remaining}
    terms = {name: budget_item(page, "team-month").locator(f'[data-figure="{name}"]').inner_text()
             for name in ("scope", "period", "period_start", "mode")}
    assert terms == {"scope": "Whole account", "period": "Month", "period_start": team.period_start.isoformat(),
                     "mode": "hard"}
    dora = budget_item(page, "dora-tokens")
    assert dora.locator('[data-figure="scope"]').inner_text() == "User dora"
    assert dora.locator('[data-figure="period_start"]').inner_text() == "all time"
    assert dora.locator('[data-figure="mode"]').inner_text() == "soft"
    assert budget_item(page, "dora-usd").locator('[data-figure="limit"]').get_attribute("title") == "1.000000 USD"

    # The bar: spent then held, against the limit line at the far end while within the limit.
    usd = drawn(page, "dora-usd")
    assert usd == {"spent": pytest.approx(BAR_WIDTH * 0.7, abs=0.1), "held": pytest.approx(BAR_WIDTH * 0.2, abs=0.1),
                   "limit": BAR_WIDTH}
    assert float(budget_item(page, "dora-usd").locator('[data-part="held"]').get_attribute("x")) == usd["spent"]
    bar = page.get_by_role("img", name="dora-usd: spent $0.70 and held $0.20 of a limit of $1.00; $0.10 remaining")
    assert bar.is_visible()
    assert problems == [] and violations(page) == []
    screenshot(page, "budgets-read-key", store_of(server))


def test_a_budget_over_its_limit_is_marked_in_words_outline_and_bar(site):
    _server, keys, _ledger, page, problems = site
    sign_in(page, keys["read_a"])
    over = budget_item(page, "dora-tokens")
    assert over.get_attribute("data-state") == "over"
    assert over.get_by_text("Over the limit by 70,000 tokens", exact=True).is_visible()
    assert page.get_by_role("img", name=re.compile(r"^dora-tokens: .*Over the limit by 70,000 tokens$")).is_visible()
    # Drawn past the limit line (not just full), with the part beyond it outlined.
    parts = drawn(page, "dora-tokens")
    assert parts["spent"] + parts["held"] == pytest.approx(BAR_WIDTH, abs=0.2)
    assert parts["limit"] == pytest.approx(BAR_WIDTH * 150_000 / 225_000, abs=0.1)
    beyond = over.locator('[data-part="over"]')
    assert float(beyond.get_attribute("x")) == parts["limit"] and beyond.get_attribute("stroke") == "#D55E00"
    # The stylesheet loaded and outlines the item in the palette's vermillion; a budget with room is not.
    outline = "(item) => getComputedStyle(item).borderTopColor + ' ' + getComputedStyle(item).borderTopWidth"
    assert over.evaluate(outline) == "rgb(213, 94, 0) 3px"
    assert budget_item(page, "dora-usd").evaluate(outline) != "rgb(213, 94, 0) 3px"
    for budget_id in ("team-month", "dora-usd", "prepaid"):
        item = budget_item(page, budget_id)
        assert item.get_attribute("data-state") == "ok", budget_id
        assert item.locator('[data-part="over"]').count() == 0 and item.locator(".budget-state").count() == 0
    assert problems == [] and violations(page) == []


def test_the_credit_balance_panel_and_none_without_grants(site):
    _server, keys, ledger, page, problems = site
    sign_in(page, keys["read_a"])
    panel = page.get_by_role("region", name="Credit balance")
    assert panel.is_visible()
    shown = {name: (int(panel.locator(f'[data-figure="{name}"]').get_attribute("data-value")),
                    panel.locator(f'[data-figure="{name}"]').inner_text()) for name in BALANCE}
    assert shown == BALANCE
    assert {name: value for name, (value, _) in shown.items()} == {
        name: value for name, value in ledger.balance("acct-a").to_dict().items() if name in BALANCE}
    assert budget_item(page, "prepaid").get_by_text("Limit (credit granted)").is_visible()
    with page.expect_navigation():
        page.get_by_role("button", name="Sign out").click()
    sign_in(page, keys["read_b"])
    assert page.url.endswith("/dashboard/accounts/acct-b")
    assert page.get_by_role("heading", name="Budgets").is_visible()
    assert page.get_by_role("region", name="Credit balance").count() == 0
    assert page.get_by_role("heading", name="Credit balance").count() == 0
    assert problems == [] and violations(page) == []


def alert_rows(page: Page) -> list[tuple[str, str, str, str]]:
    """The alerts table's rows: (when, budget, threshold, period start)."""
    rows = page.get_by_role("table", name=re.compile("^Budget threshold alerts")).locator("tbody tr")
    return [tuple(cell.inner_text() for cell in row.locator("th, td").all()) for row in rows.all()]


def test_alerts_sent_are_listed_newest_first(site):
    server, keys, ledger, page, problems = site
    sign_in(page, keys["read_a"])
    rows = alert_rows(page)
    assert len(rows) == 4
    assert {(budget, threshold) for _, budget, threshold, _ in rows[:3]} == {
        ("dora-usd", "50%"), ("dora-tokens", "80%"), ("dora-tokens", "100%")}
    assert rows[3][1:] == ("dora-tokens", "50%", "all time")
    assert [when for when, *_ in rows] == sorted((when for when, *_ in rows), reverse=True)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", when) for when, *_ in rows)
    sent = ledger.budget_alerts(account_id="acct-a")
    assert sorted((a.budget_id, f"{a.threshold}%") for a in sent) == sorted((r[1], r[2]) for r in rows)
    assert page.locator('[data-figure="more-alerts"]').count() == 0
    assert problems == [] and violations(page) == []
    screenshot(page, "budget-alerts", store_of(server))


def test_alerts_appear_once_checked_and_the_list_is_capped(site):
    _server, keys, ledger, page, problems = site
    sign_in(page, keys["admin"])
    page.goto("/dashboard/accounts/acct-d")
    assert page.get_by_text("No budgets for this account.").is_visible()
    assert page.get_by_text("No alerts sent yet.").is_visible()
    thresholds = tuple(range(5, 101, 5))  # 20 per budget, all crossed: 60 alerts
    for n in range(3):
        ledger.set_budget(f"d-{n}", account_id="acct-d", limit_tokens=100, period="total", thresholds=thresholds)
    assert ledger.record_charges([{**DORA, "account_id": "acct-d", "user_id": "dan", "charge_id": "d-charge"}])[0].ok
    page.reload()
    assert page.locator("li.budget").count() == 3
    assert len(ledger.check_budget_alerts("acct-d")) == 3 * len(thresholds)
    page.reload()
    rows = alert_rows(page)
    assert len(rows) == ALERTS_SHOWN
    assert {budget for _, budget, _, _ in rows} <= {"d-0", "d-1", "d-2"}
    assert page.get_by_text(f"More alerts were sent: only the {ALERTS_SHOWN} newest are listed.").is_visible()
    assert page.get_by_role("table", name=re.compile(rf"\(the {ALERTS_SHOWN} newest\)")).is_visible()
    assert not any(name in page.content() for name in (*ACCT_A_BUDGETS, "bob-tokens", "dora"))
    assert problems == [] and violations(page) == []


def test_a_read_key_of_another_account_sees_none_of_them(site):
    server, keys, _ledger, page, problems = site
    sign_in(page, keys["read_b"])
    assert page.url.endswith("/dashboard/accounts/acct-b")
    assert [item.get_attribute("data-budget") for item in page.locator("li.budget").all()] == ["bob-tokens"]
    assert sorted(row[1:] for row in alert_rows(page)) == [("bob-tokens", "100%", "all time"),
                                                            ("bob-tokens", "50%", "all time")]
    content = page.content()
    assert not any(name in content for name in (*ACCT_A_BUDGETS, "dora", "$1.30"))
    response = page.goto("/dashboard/accounts/acct-a")
    assert response.status == 403
    assert not any(name in page.content() for name in (*ACCT_A_BUDGETS, "dora", "Credit balance"))
    with page.expect_navigation():
        page.get_by_role("button", name="Sign out").click()
    sign_in(page, keys["read_a"])
    assert "bob-tokens" not in page.content()
    assert page.goto("/dashboard/accounts/acct-b").status == 403 and "bob-tokens" not in page.content()
    # The browser logs each refused page it was sent to, and nothing else went wrong.
    assert [p for p in problems if "status of 403" not in p] == [] and len(problems) == 2
    assert violations(page) == []
    screenshot(page, "budgets-refused-read-key", store_of(server))


def test_no_console_errors_or_csp_violations_and_unique_ids(site):
    _server, keys, _ledger, page, problems = site
    sign_in(page, keys["admin"])
    pages = {}
    for account in ("acct-a", "acct-b"):
        assert page.goto(f"/dashboard/accounts/{account}").status == 200
        page.wait_for_load_state("networkidle")
        pages[account] = page.content()
    assert problems == [] and violations(page) == []
    for name, html in pages.items():
        assert repeated_ids(html) == [], name
    # The watch itself works: an inline style is what the CSP refuses, and it is reported.
    page.evaluate("document.head.appendChild(document.createElement('style')).textContent = 'body{}'")
    page.wait_for_function("(window.__violations || []).length > 0")
    assert any(v.startswith("style-src") for v in violations(page))


@pytest.mark.parametrize(("limit", "spent", "held", "expected"), [
    (1_000, 700, 200, (280.0, 80.0, 400.0)),   # within: the limit line at the far end
    (1_000, 1_000, 0, (400.0, 0.0, 400.0)),    # exactly full
    (1_000, 1_500, 500, (300.0, 100.0, 200.0)),  # past: drawn beyond the limit line, which moves left
    (1_000, 800, 400, (800 / 3, 400 / 3, 1_000 / 3)),  # holds push it past
    (0, 0, 0, (0.0, 0.0, 0.0)),                # nothing to scale: no division by zero
    (0, 10, 0, (400.0, 0.0, 0.0)),             # a credits budget with nothing granted but spend
])
def test_bar_geometry(limit, spent, held, expected):
    parts = geometry(limit, spent, held, 400)
    assert (parts.spent, parts.held, parts.limit) == pytest.approx(expected)
