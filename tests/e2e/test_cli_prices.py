"""The price commands end to end: set, import, list, record with cost, reprice."""

from __future__ import annotations

import json

import sqlalchemy as sa

from test_cli import cli, days_ago, ok, record, runner  # noqa: F401 - the cli fixture

CATALOGUE = """
currency = "USD"

[[price]]
provider = "openai"
model = "gpt-4o"
prompt_micros_per_million = 2_500_000
completion_micros_per_million = 10_000_000
effective_from = "2020-01-01T00:00:00Z"
"""


def test_import_list_record_report_and_reprice(cli, tmp_path):
    catalogue = tmp_path / "prices.toml"
    catalogue.write_text(CATALOGUE)
    first = json.loads(ok(cli("prices", "import", str(catalogue), "--json")).stdout)
    again = json.loads(ok(cli("prices", "import", str(catalogue), "--json")).stdout)
    assert (first["added"], again["added"], again["version"]) == (1, 0, first["version"])
    listed = json.loads(ok(cli("prices", "list", "--json")).stdout)
    assert [(p["model"], p["prompt_micros_per_million"]) for p in listed] == [("gpt-4o", 2_500_000)]

    receipt = record(cli, "c1", when=days_ago(2), prompt=1000, completion=500)
    assert (receipt["cost_micros"], receipt["price_version"]) == (7_500, listed[0]["version"])
    unpriced = record(cli, "c2", when=days_ago(2), model="mystery")
    assert unpriced["cost_micros"] is None
    rows = json.loads(ok(cli("report", "--format", "json", "--group-by", "model")).stdout)
    assert {r["model"]: (r["cost_micros"], r["unpriced_charges"]) for r in rows} == {
        "gpt-4o": (7_500, 0), "mystery": (0, 1)}
    table = ok(cli("report", "--group-by", "model")).stdout
    assert "0.007500" in table

    dearer = tmp_path / "dearer.toml"
    dearer.write_text(CATALOGUE.replace("2_500_000", "5_000_000"))
    repriced = json.loads(ok(cli("reprice", "--catalogue", str(dearer), "--json")).stdout)
    assert (repriced["cost_micros"], repriced["repriced_micros"], repriced["difference_micros"]) == (
        7_500, 10_000, 2_500)
    assert [d["difference_micros"] for d in repriced["days"]] == [2_500]
    shown = ok(cli("reprice", "--catalogue", str(dearer), "--from", days_ago(2)[:10])).stdout
    assert "difference 0.002500 USD" in shown
    after = json.loads(ok(cli("report", "--format", "json", "--group-by", "model")).stdout)
    assert after == rows  # repricing touched nothing


def test_price_errors_name_the_field(cli, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"prices": [{"model": "m", "prompt_micros_per_million": 1.5,
                                           "completion_micros_per_million": 1}]}))
    result = cli("prices", "import", str(bad))
    assert result.exit_code == 2
    assert result.stderr.startswith("error: invalid price: price[0].prompt_micros_per_million: "
                                    "expected an integer number of micro-units, got the float 1.5")
    other = tmp_path / "eur.toml"
    other.write_text(CATALOGUE.replace('"USD"', '"EUR"'))
    assert "this ledger bills in USD" in cli("prices", "import", str(other)).stderr
    naive = cli("prices", "set", "--model", "m", "--prompt", "1", "--completion", "1",
                "--effective-from", "2026-01-01T00:00:00")
    assert naive.exit_code == 2 and "effective_from: must carry a time zone" in naive.stderr
    assert json.loads(ok(cli("prices", "list", "--all", "--json")).stdout) == []  # nothing half-set


def test_billing_tables_made_before_costs_are_migrated(cli):
    """An old table gains the two columns; its rows count as unpriced (what a rebuild gives)."""
    engine = sa.create_engine(cli.url)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "CREATE TABLE daily_billing_records (account_id VARCHAR NOT NULL, billing_date DATE NOT NULL, "
            "user_id VARCHAR NOT NULL, charge_type VARCHAR NOT NULL, provider VARCHAR NOT NULL, "
            "model VARCHAR NOT NULL, charges BIGINT NOT NULL, prompt_tokens BIGINT NOT NULL, "
            "completion_tokens BIGINT NOT NULL, total_tokens BIGINT NOT NULL, "
            "updated_at TIMESTAMP WITH TIME ZONE NOT NULL, PRIMARY KEY (account_id, billing_date, user_id, "
            "charge_type, provider, model))")
        connection.exec_driver_sql(
            "INSERT INTO daily_billing_records VALUES ('acme', '2026-01-05', 'ada', 'completion', 'openai', "
            "'gpt-4o', 3, 30, 15, 45, '2026-01-06 00:00:00+00')")
    engine.dispose()
    rows = json.loads(ok(cli("report", "--format", "json", "--no-project")).stdout)
    assert [(r["charges"], r["cost_micros"], r["unpriced_charges"]) for r in rows] == [(3, 0, 3)]
