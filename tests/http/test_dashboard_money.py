"""Money on the dashboard reads as money (``$13.41``, the ledger's currency), the exact micro-units stay in
each figure's title and in the CSV, and a cost without a price reads "unpriced", never as free."""

from __future__ import annotations

import csv
import io
import re
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient
from test_dashboard_session import sign_in

from ledger_service.dashboard.money import axis_money, cost_text, money, pricing
from ledger_service.http import create_app
from ledger_service.keys import create_key

PERIOD = {"period": "custom", "from": "2026-03-01", "to": "2026-03-07"}
PRICE = {"provider": "openai", "model": "gpt-4o", "prompt_micros_per_million": 2_500_000,
         "completion_micros_per_million": 10_000_000, "effective_from": "2026-01-01T00:00:00+00:00"}


def charge(n: int, account: str, model: str, prompt: int, completion: int) -> dict:
    return {"account_id": account, "user_id": "ada", "charge_type": "completion", "provider": "openai",
            "model": model, "prompt_tokens": prompt, "completion_tokens": completion, "charge_id": f"m-{n}",
            "occurred_at": f"2026-03-0{2 + n % 3}T12:00:00Z"}


class Cells(HTMLParser):
    """Every element carrying ``data-value``: (tag, attributes, text)."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str], str]] = []
        self._open: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag, attrs):
        if tag in ("td", "dd"):
            self._open.append((tag, dict(attrs)))
            self.found.append((tag, dict(attrs), ""))

    def handle_data(self, data):
        if self._open:
            tag, attrs, text = self.found[-1]
            self.found[-1] = (tag, attrs, text + data)

    def handle_endtag(self, tag):
        if tag in ("td", "dd") and self._open:
            self._open.pop()


def cells(html: str) -> list[tuple[str, dict[str, str], str]]:
    parser = Cells()
    parser.feed(html)
    return parser.found


@pytest.fixture
def signed_in(make_ledger):
    """A USD ledger: acct-a with priced and unpriced charges, acct-b unpriced only, acct-c priced only."""
    ledger = make_ledger()
    ledger.set_prices([PRICE])
    items = [charge(1, "acct-a", "gpt-4o", 1_000_000, 1_091_256), charge(2, "acct-a", "mystery", 10, 2),
             charge(3, "acct-b", "mystery", 50, 5), charge(4, "acct-c", "gpt-4o", 4_000, 1)]
    assert all(outcome.ok for outcome in ledger.record_charges(items))
    with TestClient(create_app(ledger)) as http:
        sign_in(http, create_key(ledger, "admin")[1])
        yield http


def test_costs_read_as_money_with_the_exact_amount_in_the_title(signed_in):
    page = signed_in.get("/dashboard/overview", params=PERIOD).text
    [total] = [c for c in cells(page) if c[1].get("data-figure") == "cost_micros"]
    exact = int(total[1]["data-value"])
    assert exact == 2_500_000 + 10_912_560 + 10_000 + 10  # 13.422570 USD
    assert total[2] == "$13.42 (partly unpriced)" and total[1]["title"] == "13.422570 USD"
    assert not re.search(r">\s*-?[\d,]+\.\d{6}\s*<", page), "no bare six-decimal amounts on the page"
    for tag, attrs, text in cells(page):
        if "title" in attrs:
            assert re.fullmatch(r"-?[\d,]+\.\d{6} USD", attrs["title"]) and "data-value" in attrs
            assert text.startswith(("$", "<$", "unpriced")), text


def test_unpriced_and_partly_unpriced_rows_are_marked(signed_in):
    page = signed_in.get("/dashboard/overview", params=PERIOD).text
    by_account = re.search(r'<table>\s*<caption>Top accounts by cost</caption>.*?</table>', page, re.DOTALL).group(0)
    rows = {re.search(r'>(acct-\w)</a>', row).group(1): next(c for c in cells(row) if "title" in c[1])
            for row in re.findall(r"<tr>.*?</tr>", by_account, re.DOTALL) if "acct-" in row}
    assert rows["acct-b"][2] == "unpriced" and rows["acct-b"][1]["data-pricing"] == "unpriced"
    assert rows["acct-a"][2].endswith("(partly unpriced)") and rows["acct-a"][1]["data-pricing"] == "partly unpriced"
    assert rows["acct-c"][2] == "$0.01" and "data-pricing" not in rows["acct-c"][1]
    assert "0.000000<" not in page and ">$0.00<" not in by_account
    account_b = signed_in.get("/dashboard/accounts/acct-b", params=PERIOD).text
    [total] = [c for c in cells(account_b) if c[1].get("data-figure") == "cost_micros"]
    assert total[2] == "unpriced"
    assert '<span class="note">(unpriced)</span>' in account_b  # the cost chart's legend


def test_the_csv_keeps_exact_integer_micro_units(signed_in):
    answer = signed_in.get("/dashboard/overview/usage.csv", params=PERIOD)
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert all(re.fullmatch(r"\d+", row["cost_micros"]) for row in rows)
    assert sum(int(row["cost_micros"]) for row in rows) == 13_422_570


def test_another_currency_is_shown_with_its_symbol_or_code(make_ledger):
    ledger = make_ledger(currency="EUR")
    ledger.set_prices([PRICE])
    assert ledger.record_charges([charge(1, "acct-a", "gpt-4o", 1_000_000, 0)])[0].ok
    with TestClient(create_app(ledger)) as http:
        sign_in(http, create_key(ledger, "admin")[1])
        page = http.get("/dashboard/accounts/acct-a", params=PERIOD).text
    [total] = [c for c in cells(page) if c[1].get("data-figure") == "cost_micros"]
    assert total[2] == "€2.50" and total[1]["title"] == "2.500000 EUR"


@pytest.mark.parametrize(("micros", "currency", "shown"), [
    (13_412_562, "USD", "$13.41"), (13_415_000, "USD", "$13.42"), (0, "USD", "$0.00"), (3, "USD", "<$0.01"),
    (-2_500_000, "USD", "-$2.50"), (1_234_567_890_000, "GBP", "£1,234,567.89"), (1_500_000, "JPY", "¥2"),
    (1_500_000, "SEK", "1.50 SEK"), (1_500_000, "EUR", "€1.50"),
])
def test_money_is_written_as_people_read_it(micros, currency, shown):
    assert money(micros, currency) == shown


def test_pricing_marks():
    assert pricing({"charges": 3, "unpriced_charges": 3, "cost_micros": 0}) == "unpriced"
    assert pricing({"charges": 3, "unpriced_charges": 1, "cost_micros": 5}) == "partly unpriced"
    assert pricing({"charges": 3, "unpriced_charges": 0, "cost_micros": 0}) == ""
    assert cost_text({"charges": 2, "unpriced_charges": 2, "cost_micros": 0}, "USD") == "unpriced"
    assert cost_text({"charges": 2, "unpriced_charges": 1, "cost_micros": 10_000}, "USD") == "$0.01 (partly unpriced)"


@pytest.mark.parametrize(("step", "labels"), [
    (0, ["$0.00"]), (1, ["$0.000000", "$0.000001", "$0.000002"]), (5_000, ["$0.000", "$0.005", "$0.010"]),
    (500_000, ["$0.00", "$0.50", "$1.00"]),
])
def test_money_axis_labels_differ_at_every_step(step, labels):
    assert [axis_money(n * step, step, "USD") for n in range(len(labels))] == labels
