"""The dashboard's defences in a real browser (Playwright, Debian's Chromium, against ``ledger serve``):
a signed-out cookie is dead, a forged or cross-site form post is refused, downloaded CSV holds no formulas.

One server per store for the module, seeded once; each test starts with no dashboard session on it."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import httpx
import pytest
from dashboard_helpers import (
    browser,  # noqa: F401 - a fixture
    choose_period,
    end_sessions,
    screenshot,
    sessions_in,
    sign_in,
    store_of,
)
from http_helpers import bearer, module_store_url, shared_server  # noqa: F401 - fixtures

# One worker runs the module, so its shared server starts once per store.
pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("dashboard-security")]

EVIL = "http://evil.example"
NASTY = ('=HYPERLINK("http://x")', "+cmd|' /C calc'!A0", "@SUM(1+1)", "-2+3")


@pytest.fixture(scope="module")
def nasty(shared_server):  # noqa: F811 - the fixture imported above
    """The module's server, whose accounts, users and models are named like formulas, and its admin key."""
    admin = shared_server.new_key("--role", "admin")
    items = [{"account_id": account, "user_id": user, "charge_type": "completion", "provider": "openai",
              "model": model, "prompt_tokens": 100 + n, "completion_tokens": 7, "charge_id": f"nasty-{n}",
              "occurred_at": "2026-11-25T12:00:00Z"}
             for n, (account, user, model) in enumerate(zip(NASTY, reversed(NASTY), NASTY[1:] + NASTY[:1]))]
    answer = httpx.post(f"{shared_server.url}/v1/charges/batch", json={"charges": items}, headers=bearer(admin))
    assert answer.json()["recorded"] == len(items)
    return shared_server, admin


@pytest.fixture
def nasty_site(nasty, browser):  # noqa: F811 - the fixture imported above
    """The nasty server with no dashboard session yet (as when it started), its admin key, and a fresh page."""
    server, admin = nasty
    end_sessions(server.database_url)
    context = browser.new_context(base_url=server.url, accept_downloads=True)
    page = context.new_page()
    yield server, admin, page
    context.close()


def cross_site_form(action: str, fields: dict[str, str]) -> str:
    """A page on another site that posts a form to the dashboard as soon as it loads."""
    inputs = "".join(f'<input type="hidden" name="{name}" value="{value}">' for name, value in fields.items())
    return (f'<!doctype html><form id="f" method="post" action="{action}">{inputs}</form>'
            '<script>document.getElementById("f").submit()</script>')


def test_after_signing_out_the_old_cookie_gets_401(nasty_site, browser):  # noqa: F811
    server, admin, page = nasty_site
    sign_in(page, admin)
    [cookie] = [c for c in page.context.cookies() if c["name"] == "ledger_session"]
    assert page.context.request.get("/dashboard/overview/usage.csv").status == 200
    with page.expect_navigation():
        page.get_by_role("button", name="Sign out").click()
    assert sessions_in(server.database_url) == []
    copied = browser.new_context(base_url=server.url)
    try:
        copied.add_cookies([cookie])
        assert copied.request.get("/dashboard/overview/usage.csv").status == 401
        replayed = copied.new_page()
        assert replayed.goto("/dashboard/overview").status == 401
        assert replayed.get_by_label("API key").is_visible()
        screenshot(replayed, "old-cookie-after-sign-out", store_of(server))
    finally:
        copied.close()


def test_a_sign_in_without_the_form_token_is_refused_and_signs_nobody_in(nasty_site):
    server, admin, page = nasty_site
    page.goto("/dashboard/sign-in")
    page.evaluate("document.querySelector('input[name=csrf_token]').remove()")
    page.get_by_label("API key").fill(admin)
    with page.expect_navigation() as navigation:
        page.get_by_role("button", name="Sign in").click()
    assert navigation.value.status == 403
    assert page.get_by_role("alert").is_visible() and admin not in page.content()
    assert not [c for c in page.context.cookies() if c["name"] == "ledger_session"]
    assert sessions_in(server.database_url) == []
    screenshot(page, "sign-in-without-token", store_of(server))


def test_forms_posted_from_another_site_are_refused(nasty_site):
    server, admin, page = nasty_site
    page.goto("/dashboard/sign-in")
    token = page.locator("input[name=csrf_token]").get_attribute("value")
    page.context.route(f"{EVIL}/sign-in", lambda route: route.fulfill(
        content_type="text/html", body=cross_site_form(f"{server.url}/dashboard/sign-in", {"key": admin, "csrf_token": token})))
    with page.expect_response(f"{server.url}/dashboard/sign-in") as posted:
        page.goto(f"{EVIL}/sign-in")
    assert posted.value.request.method == "POST" and posted.value.status == 403
    assert sessions_in(server.database_url) == []

    sign_in(page, admin)
    session_token = page.locator("input[name=csrf_token]").get_attribute("value")
    page.context.route(f"{EVIL}/sign-out", lambda route: route.fulfill(
        content_type="text/html", body=cross_site_form(f"{server.url}/dashboard/sign-out", {"csrf_token": session_token})))
    with page.expect_response(f"{server.url}/dashboard/sign-out") as posted:
        page.goto(f"{EVIL}/sign-out")
    assert posted.value.request.method == "POST" and posted.value.status == 403
    assert len(sessions_in(server.database_url)) == 1
    assert page.goto(f"{server.url}/dashboard/overview").status == 200  # still signed in


def test_a_downloaded_csv_shows_formulas_as_text_and_numbers_as_numbers(nasty_site):
    _server, admin, page = nasty_site
    sign_in(page, admin)
    choose_period(page)
    with page.expect_download() as download:
        page.get_by_role("link", name="Download these figures as CSV").click()
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert sorted(row["account_id"] for row in rows) == sorted("'" + name for name in NASTY)
    assert sorted(row["user_id"] for row in rows) == sorted("'" + name for name in NASTY)
    assert sorted(row["model"] for row in rows) == sorted("'" + name for name in NASTY)
    assert sorted(int(row["prompt_tokens"]) for row in rows) == [100, 101, 102, 103]
    assert all(row["charges"] == "1" and row["completion_tokens"] == "7" and row["provider"] == "openai"
               for row in rows)
    assert download.value.suggested_filename == "usage-all-2026-11-20-2026-11-30.csv"
