"""Every CSV the ledger writes opens in a spreadsheet as data: formula-like text gets a leading ', numbers stay."""

from __future__ import annotations

import csv
import io
from datetime import date
from decimal import Decimal

import pytest

from http_helpers import bearer, client, keys  # noqa: F401 - fixtures
from ledger_service.csvsafe import FORMULA_STARTS, safe_cell, safe_row, write_csv
from test_dashboard_session import sign_in

NASTY = ('=HYPERLINK("http://x")', "+cmd|' /C calc'!A0", "@SUM(1+1)", "-2+3")


@pytest.mark.parametrize("start", FORMULA_STARTS)
def test_each_dangerous_first_character_gets_a_quote(start):
    assert safe_cell(f"{start}1+1") == f"'{start}1+1"


@pytest.mark.parametrize("text", ["acme", "gpt-4o", "a=b", "a+b", " =1", "'=1", "2026-01-31", "日本"])
def test_other_text_is_unchanged(text):
    assert safe_cell(text) == text


@pytest.mark.parametrize("number", [0, 5, -5, -2, 10**30, 1.5, -0.25, Decimal("-3.10")])
def test_numbers_stay_numbers_even_negative(number):
    assert safe_cell(number) is number


def test_none_and_empty_are_empty_cells_and_other_values_are_text():
    assert safe_cell(None) == "" and safe_cell("") == ""
    assert safe_cell(date(2026, 1, 31)) == "2026-01-31"
    assert safe_cell(True) == "True"
    assert safe_cell("-5") == "'-5"  # text that looks like a number is still text from a caller


def test_written_rows_read_back_neutralised():
    buffer = io.StringIO()
    write_csv(buffer, ["name", "figure"], [[name, -7] for name in NASTY] + [[None, 0]])
    rows = list(csv.reader(io.StringIO(buffer.getvalue())))
    assert rows == [["name", "figure"], *[["'" + name, "-7"] for name in NASTY], ["", "0"]]
    assert safe_row(["=1", 2, None]) == ["'=1", 2, ""]


def record_nasty(client, admin: str) -> None:
    charges = [{"account_id": account, "user_id": user, "charge_type": "completion", "provider": "@openai",
                "model": model, "prompt_tokens": 10 + n, "completion_tokens": 1, "charge_id": f"nasty-{n}",
                "occurred_at": "2026-01-31T12:00:00Z"}
               for n, (account, user, model) in enumerate(zip(NASTY, reversed(NASTY), NASTY[1:] + NASTY[:1]))]
    answer = client.post("/v1/charges/batch", json={"charges": charges}, headers=bearer(admin))
    assert answer.json()["recorded"] == len(NASTY)


def test_usage_csv_over_http_is_neutralised(client, keys):
    record_nasty(client, keys.admin)
    answer = client.get("/v1/usage", params={"group_by": "account_id,user_id,provider,model"},
                        headers={**bearer(keys.admin), "Accept": "text/csv"})
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert sorted(row["account_id"] for row in rows) == sorted("'" + name for name in NASTY)
    assert {row["provider"] for row in rows} == {"'@openai"}
    for row in rows:
        assert all(row[k].startswith("'") for k in ("account_id", "user_id", "model"))
        assert row["prompt_tokens"].isdigit() and row["charges"] == "1"


def test_dashboard_csv_is_neutralised(client, keys):
    record_nasty(client, keys.admin)
    sign_in(client, keys.admin)
    answer = client.get("/dashboard/overview/usage.csv", params={"period": "custom", "from": "2026-01-01",
                                                                  "to": "2026-01-31"})
    assert answer.status_code == 200
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert len(rows) == len(NASTY)
    for row in rows:
        assert all(row[k].startswith("'") for k in ("account_id", "user_id", "provider", "model")), row
        assert row["billing_date"] == "2026-01-31" and int(row["total_tokens"]) > 0
