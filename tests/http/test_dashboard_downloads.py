"""The dashboard's CSV downloads name their file per RFC 6266: one ASCII ``filename``, one UTF-8 ``filename*``,
whatever the account id. Through a real ``ledger serve``, and the header builder alone."""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

import httpx
import pytest
from http_helpers import bearer, server  # noqa: F401 - fixture
from test_dashboard_session import sign_in

from ledger_service.http.disposition import ascii_fallback, attachment

PERIOD = {"period": "custom", "from": "2026-01-01", "to": "2026-01-31"}
ACCOUNTS = ["账户", 'a"b', "a\\b", "plain-acct", "ünï cødé; x=1", "%41%22"]


def names_of(header: str) -> tuple[str, str]:
    """The header's ``filename`` and decoded ``filename*``, each present exactly once."""
    plain = re.findall(r'(?:^|;\s*)filename="([^"]*)"', header)
    extended = re.findall(r"(?:^|;\s*)filename\*=UTF-8''([^;\s]*)", header)
    assert len(plain) == 1 and len(extended) == 1 and header.count("filename") == 2, header
    return plain[0], unquote(extended[0], errors="strict")


def test_downloads_name_any_account_safely(server):  # noqa: F811 - the fixture imported above
    admin = server.new_key("--role", "admin")
    charges = [{"account_id": account, "user_id": "ada", "charge_type": "completion", "prompt_tokens": 5,
                "completion_tokens": 1, "charge_id": f"d-{n}", "occurred_at": "2026-01-15T12:00:00Z"}
               for n, account in enumerate(ACCOUNTS)]
    recorded = httpx.post(f"{server.url}/v1/charges/batch", json={"charges": charges}, headers=bearer(admin))
    assert recorded.json()["recorded"] == len(ACCOUNTS)
    with httpx.Client(base_url=server.url, timeout=30, follow_redirects=True) as http:
        sign_in(http, admin)
        for account in ACCOUNTS:
            answer = http.get(f"/dashboard/accounts/{quote(account, safe='')}/usage.csv", params=PERIOD)
            assert answer.status_code == 200, account
            assert answer.text.count("\n") == 2  # the header and the account's one row
            plain, full = names_of(answer.headers["content-disposition"])
            assert full == f"usage-{account.replace(chr(92), '_')}-2026-01-01-2026-01-31.csv"
            assert plain.isascii() and plain.isprintable() and not set(plain) & set('"\\%/')
        overview = http.get("/dashboard/overview/usage.csv", params=PERIOD).headers["content-disposition"]
        assert names_of(overview) == ("usage-all-2026-01-01-2026-01-31.csv",) * 2


@pytest.mark.parametrize(("name", "fallback"), [
    ("usage-账户.csv", "usage-__.csv"),
    ('a"b.csv', "a_b.csv"),
    ("a\\b/c.csv", "a_b_c.csv"),
    ("tab\tnew\nline\x7f.csv", "tab_new_line_.csv"),
    ("100%.csv", "100_.csv"),
    ("", "download"),
])
def test_the_header_has_one_ascii_name_and_one_utf8_name(name, fallback):
    header = attachment(name)
    assert header.startswith("attachment; ") and header.isascii()
    plain, full = names_of(header)
    assert plain == fallback
    assert full == (re.sub(r"[\x00-\x1f\x7f/\\]", "_", name) or "download")
    assert ascii_fallback("ok name (1).csv") == "ok name (1).csv"
