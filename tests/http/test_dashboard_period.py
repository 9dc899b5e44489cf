"""The dashboard's default period, in a real browser: today and the 30 days before, in the billing zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from dashboard_helpers import (
    browser,  # noqa: F401 - a fixture
    screenshot,
    seed,
    shown_totals,
    sign_in,
    store_of,
)
from http_helpers import bearer, serving

pytestmark = pytest.mark.browser


@pytest.fixture
def site(store_url, browser):  # noqa: F811 - the fixture imported above
    """A seeded server on the test's store (this test records more usage), and a fresh browser page."""
    with serving(store_url) as server:
        keys = seed(server)
        context = browser.new_context(base_url=server.url, accept_downloads=True)
        yield server, keys, context.new_page()
        context.close()


def test_the_default_period_holds_today_and_the_30_days_before(site):
    server, keys, page = site
    today = datetime.now(UTC).date()
    first = today - timedelta(days=30)
    edges = [{"account_id": "edge", "user_id": "ada", "charge_type": "completion", "prompt_tokens": 1,
              "completion_tokens": 1, "charge_id": f"edge-{n}", "occurred_at": at}
             for n, at in enumerate((f"{first.isoformat()}T00:00:01Z", datetime.now(UTC).isoformat(),
                                     f"{(first - timedelta(days=1)).isoformat()}T23:59:59Z"))]
    answer = httpx.post(f"{server.url}/v1/charges/batch", json={"charges": edges}, headers=bearer(keys["admin"]))
    assert answer.json()["recorded"] == 3
    sign_in(page, keys["admin"])
    page.goto("/dashboard/accounts/edge")
    assert page.get_by_label("Last 30 days", exact=True).is_checked()
    assert page.get_by_text(f"Period: {first.isoformat()} to {today.isoformat()}").is_visible()
    assert shown_totals(page)["charges"] == 2  # the first day's and today's; the day before is outside
    screenshot(page, "account-default-period", store_of(server))
