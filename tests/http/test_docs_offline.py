"""``/docs`` and ``/redoc`` work without internet: Swagger UI and ReDoc come from the installed package,
every asset URL is this server's own and answers, and each page's policy lets exactly those scripts run.
Through a real ``ledger serve`` (one per store for the module: the tests only read), and in Debian's Chromium
with every request off the loopback refused."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import httpx
import pytest
from dashboard_helpers import browser, screenshot, store_of  # noqa: F401 - a fixture
from http_helpers import module_store_url, shared_server  # noqa: F401 - fixtures

# One worker runs the module, so its shared server starts once per store.
pytestmark = pytest.mark.xdist_group("docs-offline")

PAGES = ("/docs", "/redoc", "/docs/oauth2-redirect")
#: ReDoc always tries its maker's logo from their CDN and hides it when it cannot load: the policy
#: refuses it (so the browser says so), and nothing else may be refused or fail.
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
_URL = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url:\s*'([^']+)'""")


def asset_urls(html: str) -> list[str]:
    return [a or b for a, b in _URL.findall(html)]


def test_the_docs_reference_only_local_assets_that_answer(shared_server):  # noqa: F811 - the fixture imported above
    server = shared_server
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for path in PAGES:
            page = http.get(path)
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), path
            assert "cdn" not in page.text.lower() and "fonts.googleapis" not in page.text, path
            policy = page.headers["content-security-policy"]
            assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy, path
            assert "http" not in policy and "*" not in policy, path
            for url in asset_urls(page.text):
                assert url.startswith("/") and not url.startswith("//") and not urlsplit(url).netloc, url
                answer = http.get(url)
                assert answer.status_code == 200 and answer.content, url
        swagger = asset_urls(http.get("/docs").text)
        assert "/docs/assets/swagger-ui-bundle.js" in swagger and "/docs/assets/swagger-ui.css" in swagger
        assert "/docs/assets/redoc.standalone.js" in asset_urls(http.get("/redoc").text)
        assert http.get("/docs/assets/swagger-ui-bundle.js").headers["content-type"].startswith(
            ("application/javascript", "text/javascript"))


@pytest.mark.browser
@pytest.mark.parametrize(("path", "rendered"), [("/docs", ".opblock"), ("/redoc", "[data-section-id]")])
def test_the_docs_render_in_a_browser_without_internet(shared_server, browser, path, rendered):  # noqa: F811
    server = shared_server
    context = browser.new_context(base_url=server.url)
    page = context.new_page()
    elsewhere: list[str] = []
    problems: list[str] = []

    def only_loopback(route):
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_loopback)
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    try:
        assert page.goto(path).status == 200
        page.wait_for_selector(rendered, timeout=30_000)
        assert page.get_by_text("/v1/usage").first.is_visible()
        screenshot(page, f"api{path.replace('/', '-')}", store_of(server))
    finally:
        context.close()
    assert elsewhere == [] and [p for p in problems if REDOC_LOGO not in p] == []
