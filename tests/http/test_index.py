"""``GET /`` leads somewhere: a browser to the dashboard (a relative redirect), an API client to a JSON index.

The two server tests share one server per store."""

from __future__ import annotations

import httpx
import pytest

from http_helpers import client, module_store_url, shared_server  # noqa: F401 - fixtures
from ledger_service.http.index import prefers_html

#: One worker runs the module, so its shared server starts once per store.
pytestmark = pytest.mark.xdist_group("http-index")

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"


def test_a_browser_is_sent_to_the_dashboard_by_a_relative_redirect(shared_server):
    answer = httpx.get(f"{shared_server.url}/", headers={"Accept": BROWSER, "Host": "evil.example"}, timeout=30)
    assert answer.status_code == 303 and answer.headers["location"] == "/dashboard"
    assert "evil" not in str(answer.headers) and "accept" in answer.headers["vary"].lower()
    followed = httpx.get(f"{shared_server.url}/", headers={"Accept": BROWSER}, follow_redirects=True, timeout=30)
    assert followed.url.path == "/dashboard/sign-in" and 'name="key"' in followed.text


def test_an_api_client_gets_an_index_whose_links_answer(shared_server):
    with httpx.Client(base_url=shared_server.url, timeout=30, headers={"Host": "evil.example"}) as http:
        answer = http.get("/")
        assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
        links = {name: link["href"] for name, link in answer.json()["links"].items()}
        assert {"docs", "openapi", "healthz", "dashboard", "usage", "charges", "account_totals"} <= set(links)
        assert all(href.startswith("/") and "evil" not in href for href in links.values())
        for name in ("docs", "redoc", "openapi", "healthz", "dashboard"):
            assert http.get(links[name]).status_code in (200, 303), name
        for name in ("usage", "charges", "charges_batch", "events"):
            method = "GET" if name == "usage" else "POST"
            assert http.request(method, links[name]).status_code == 401, name  # exists, wants a key


@pytest.mark.parametrize(("accept", "html"), [
    (BROWSER, True),
    ("text/html", True),
    ("*/*", False),
    ("", False),
    ("application/json", False),
    ("application/json, text/html;q=0.5", False),
    ("text/html;q=0.9, application/json;q=0.8", True),
    ("text/html;q=0", False),
    ("text/html;q=abc", False),
])
def test_which_accept_headers_mean_a_browser(accept, html):
    assert prefers_html(accept) is html


def test_json_is_the_answer_for_curl_in_process(client):  # noqa: F811 - the fixture imported above
    answer = client.get("/", headers={"Accept": "*/*"})
    assert answer.status_code == 200 and answer.json()["links"]["docs"]["href"] == "/docs"
