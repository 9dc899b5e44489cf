"""The ``ledger`` command through its real entry point, on SQLite and PostgreSQL.

Each command's happy path and its error paths, with the exact exit code and
the one ``error: ...`` line a user sees.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from ledger_service.cli import app

runner = CliRunner()
COMMANDS = ("record", "import", "reverse", "accounts", "project", "rebuild", "audit", "report",
            "compact", "prices", "reprice", "rejected", "worker", "bench", "demo", "keys", "serve")
KEYS = ["account_id", "user_id", "billing_date", "charge_type", "provider", "model",
        "charges", "prompt_tokens", "completion_tokens", "total_tokens", "cost_micros", "unpriced_charges"]


@pytest.fixture
def cli(store_url):
    """Run ``ledger --database-url <store> ARGS`` and return the result."""

    def run(*args: str, input: str | None = None):
        return runner.invoke(app, ["--database-url", store_url, *args], input=input)

    run.url = store_url
    return run


def ok(result):
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr)
    return result


def days_ago(n: int, hour: int = 12) -> str:
    moment = datetime.now(timezone.utc).replace(hour=hour, minute=0, second=0, microsecond=0)
    return (moment - timedelta(days=n)).isoformat()


def record(cli, charge_id: str, *, account: str = "acme", user: str = "ada", prompt: int = 100,
           completion: int = 20, model: str = "gpt-4o", when: str | None = None, charge_type: str = "completion"):
    args = ["record", "--account-id", account, "--user-id", user, "--charge-type", charge_type,
            "--provider", "openai", "--model", model, "--prompt-tokens", str(prompt),
            "--completion-tokens", str(completion), "--charge-id", charge_id, "--json"]
    if when:
        args += ["--occurred-at", when]
    return json.loads(ok(cli(*args)).stdout)


# -- no store needed -------------------------------------------------------------


def test_no_command_prints_help_listing_every_command():
    result = runner.invoke(app, [])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.stdout


def test_unknown_option_is_one_usage_line():
    result = runner.invoke(app, ["record", "--bogus"])
    assert result.exit_code == 2
    # One line, naming the option (click may add its closest match: "(Possible options: --user)").
    assert result.stderr.startswith("error: No such option: --bogus") and result.stderr.count("\n") == 1


def test_bad_billing_time_zone_is_a_usage_error(sqlite_url):
    result = runner.invoke(app, ["--database-url", sqlite_url, "--billing-tz", "Mars/Olympus", "accounts"])
    assert result.exit_code == 2
    assert result.stderr == (
        "error: bad configuration: billing_tz (--billing-tz) must be an IANA time zone name such as "
        "UTC or Europe/Paris, got 'Mars/Olympus'\n")


def test_bad_database_url_is_a_usage_error():
    result = runner.invoke(app, ["--database-url", "nosuchdb://x", "accounts"])
    assert result.exit_code == 2
    assert result.stderr == ("error: bad database URL (--database-url): nosuchdb is not supported; the ledger "
                             "runs on sqlite:///PATH or postgresql+psycopg2://USER@HOST/DATABASE\n")


def test_unreachable_database_is_an_operational_failure():
    result = runner.invoke(app, ["--database-url", "postgresql+psycopg2://postgres@127.0.0.1:1/none", "accounts"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: database unavailable: ")
    assert result.stderr.count("\n") == 1


# -- record, reverse, accounts ---------------------------------------------------------


def test_record_prints_a_receipt_and_a_retry_is_not_counted_twice(cli):
    result = ok(cli("record", "--account-id", "acme", "--user-id", "ada", "--charge-type", "completion",
                    "--prompt-tokens", "120", "--completion-tokens", "30", "--charge-id", "c1"))
    assert result.stdout.startswith("recorded charge c1 for account acme (user ada), occurred at ")
    again = ok(cli("record", "--account-id", "acme", "--user-id", "ada", "--charge-type", "completion",
                   "--prompt-tokens", "120", "--completion-tokens", "30", "--charge-id", "c1"))
    assert again.stdout.startswith("already recorded: charge c1 for account acme (user ada), occurred at ")
    totals = json.loads(ok(cli("accounts", "--json")).stdout)
    assert totals == [{"account_id": "acme", "charges": 1, "prompt_tokens": 120,
                       "completion_tokens": 30, "total_tokens": 150, "cost_micros": 0, "unpriced_charges": 1}]


def test_record_seed_style_by_user_profile(cli):
    receipt = json.loads(ok(cli("record", "--user-profile-id", "123", "--charge-type", "usage",
                                "--prompt-tokens", "100", "--completion-tokens", "50", "--json")).stdout)
    assert receipt["account_id"] == "profile-123"
    assert receipt["duplicate"] is False
    assert set(receipt) == {"charge_id", "account_id", "duplicate", "recorded_at", "cost_micros", "price_version"}


def test_record_invalid_charge_names_each_field_and_stores_nothing(cli):
    result = cli("record", "--account-id", "acme", "--charge-type", "refund", "--prompt-tokens", "-1")
    assert result.exit_code == 2
    assert result.stderr == (
        "error: invalid charge: charge_type: unknown charge type 'refund'; expected one of completion, "
        "plugin, subscription, tool, usage; prompt_tokens: must be >= 0, got -1\n")
    assert ok(cli("accounts")).stdout == "no accounts yet\n"


def test_record_bad_date(cli):
    result = cli("record", "--account-id", "acme", "--charge-type", "usage", "--occurred-at", "2026-13-01")
    assert result.exit_code == 2
    assert result.stderr == "error: invalid charge: occurred_at: not an ISO 8601 date-time: '2026-13-01'\n"


def test_record_not_an_integer(cli):
    result = cli("record", "--account-id", "acme", "--charge-type", "usage", "--prompt-tokens", "many")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: Invalid value for '--prompt-tokens': ")


def test_record_conflicting_retry_names_the_differences(cli):
    record(cli, "c1", prompt=100, completion=20)
    result = cli("record", "--account-id", "acme", "--user-id", "ada", "--charge-type", "completion",
                 "--provider", "openai", "--model", "gpt-4o", "--prompt-tokens", "101",
                 "--completion-tokens", "20", "--charge-id", "c1")
    assert result.exit_code == 2
    assert result.stderr == (
        "error: charge 'c1' was already recorded with different fields: prompt_tokens: recorded 100, "
        "now 101; total_tokens: recorded 120, now 121\n")


def test_reverse_then_errors(cli):
    record(cli, "c1")
    record(cli, "c2", prompt=7, completion=3)
    assert ok(cli("reverse", "c1", "--reason", "test")).stdout == "reversed charge c1 of account acme\n"
    totals = json.loads(ok(cli("accounts", "acme", "--json")).stdout)
    assert totals[0]["charges"] == 1 and totals[0]["total_tokens"] == 10
    again = cli("reverse", "c1")
    assert again.exit_code == 2
    assert again.stderr == "error: charge 'c1' is already reversed\n"
    unknown = cli("reverse", "nope")
    assert unknown.exit_code == 2
    assert unknown.stderr == "error: unknown charge 'nope': no charge with this id was recorded\n"


def test_accounts_table_and_unknown_account(cli):
    record(cli, "c1", account="acme", prompt=1000, completion=234)
    record(cli, "c2", account="globex")
    table = ok(cli("accounts")).stdout
    assert "acme" in table and "globex" in table and "1,234" in table
    result = cli("accounts", "nope")
    assert result.exit_code == 2
    assert result.stderr == "error: unknown account 'nope': no charge was recorded for it\n"


# -- project, report, audit, rebuild, compact ---------------------------------------------


def test_project_then_report_json_has_exactly_the_contract_keys(cli):
    record(cli, "c1", when=days_ago(2), prompt=100, completion=20)
    record(cli, "c2", when=days_ago(2), prompt=50, completion=5, model="gpt-4o-mini")
    record(cli, "c3", when=days_ago(1), user="grace", prompt=10, completion=1)
    projected = json.loads(ok(cli("project", "--json")).stdout)
    assert projected["events"] >= 3 and projected["position"] >= 3
    rows = json.loads(ok(cli("report", "--format", "json", "--no-project")).stdout)
    assert [list(row) for row in rows] == [KEYS] * 3
    assert {row["billing_date"] for row in rows} == {days_ago(2)[:10], days_ago(1)[:10]}
    by_user = json.loads(ok(cli("report", "--format", "json", "--group-by", "account_id,user_id")).stdout)
    assert by_user == [
        dict(zip(KEYS, ["acme", "ada", None, None, None, None, 2, 150, 25, 175, 0, 2])),
        dict(zip(KEYS, ["acme", "grace", None, None, None, None, 1, 10, 1, 11, 0, 1])),
    ]
    filtered = json.loads(ok(cli("report", "--format", "json", "--model", "gpt-4o-mini",
                                 "--from", days_ago(2)[:10], "--to", days_ago(2)[:10])).stdout)
    assert [(r["model"], r["total_tokens"]) for r in filtered] == [("gpt-4o-mini", 55)]


def test_projecting_in_another_zone_is_one_clear_line_and_exit_2(cli):
    record(cli, "c1", when=days_ago(1))
    ok(cli("project"))
    record(cli, "c2", when=days_ago(1))
    refused = cli("--billing-tz", "Europe/Paris", "project")
    assert refused.exit_code == 2, (refused.stdout, refused.stderr)
    assert refused.stderr.startswith("error: daily_billing_records holds billing dates in time zone 'UTC'")
    assert refused.stderr.count("\n") == 1 and "ledger --billing-tz Europe/Paris rebuild" in refused.stderr
    ok(cli("--billing-tz", "Europe/Paris", "rebuild"))
    rows = json.loads(ok(cli("--billing-tz", "Europe/Paris", "report", "--format", "json")).stdout)
    assert sum(row["charges"] for row in rows) == 2


def test_report_csv_and_table(cli):
    record(cli, "c1", when=days_ago(1))
    csv_text = ok(cli("report", "--format", "csv", "--group-by", "account_id,model")).stdout
    assert csv_text.splitlines() == [
        "account_id,model,charges,prompt_tokens,completion_tokens,total_tokens,cost_micros,unpriced_charges",
        "acme,gpt-4o,1,100,20,120,0,1",
    ]
    table = ok(cli("report", "--group-by", "model")).stdout
    assert "gpt-4o" in table and "total" in table


def test_report_csv_neutralises_formulas_and_keeps_numbers(cli):
    """A name a spreadsheet would run as a formula gets a leading ' (OWASP); figures stay numbers."""
    names = {'=HYPERLINK("http://x")': "+cmd|' /C calc'!A0", "@SUM(1+1)": "-2+3"}
    for n, (account, model) in enumerate(names.items()):
        record(cli, f"f{n}", account=account, model=model, when=days_ago(1))
    rows = list(csv.reader(io.StringIO(ok(cli("report", "--format", "csv", "--group-by",
                                               "account_id,user_id,model")).stdout)))
    assert rows[0] == ["account_id", "user_id", "model", *KEYS[6:]]
    assert sorted(rows[1:]) == [
        ["'=HYPERLINK(\"http://x\")", "ada", "'+cmd|' /C calc'!A0", "1", "100", "20", "120", "0", "1"],
        ["'@SUM(1+1)", "ada", "'-2+3", "1", "100", "20", "120", "0", "1"],
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "2026-02-30"], "error: --from: not a date in YYYY-MM-DD form: '2026-02-30'\n"),
        (["--to", "yesterday"], "error: --to: not a date in YYYY-MM-DD form: 'yesterday'\n"),
        (["--from", "2026-02-02", "--to", "2026-02-01"], "error: --from 2026-02-02 is after --to 2026-02-01\n"),
        (["--group-by", "account_id,colour"],
         "error: --group-by: unknown column(s) colour; choose from "
         "account_id,user_id,billing_date,charge_type,provider,model\n"),
        (["--format", "xml"], "error: --format: choose table, csv or json, not 'xml'\n"),
        (["--account", "nope"], "error: unknown account 'nope': no charge was recorded for it\n"),
    ],
)
def test_report_errors(cli, args, message):
    record(cli, "c1")
    result = cli("report", *args)
    assert result.exit_code == 2
    assert result.stderr == message


def test_audit_clean_then_tampered_records_fail_row_by_row(cli):
    for i in range(5):
        record(cli, f"c{i}", when=days_ago(1 + i % 2), prompt=10 * i, completion=i)
    result = ok(cli("audit"))
    assert result.stdout.startswith("audit CLEAN at position ")
    verdict = json.loads(ok(cli("audit", "--json")).stdout)
    assert verdict["clean"] is True and verdict["conservation"]["balanced"] is True
    engine = sa.create_engine(cli.url)
    with engine.begin() as connection:
        connection.execute(sa.text(
            "UPDATE daily_billing_records SET total_tokens = total_tokens + 7 WHERE user_id = 'ada'"
            " AND billing_date = (SELECT MIN(billing_date) FROM daily_billing_records)"))
    engine.dispose()
    failed = cli("audit")
    assert failed.exit_code == 1
    assert failed.stdout.startswith("audit FAILED at position ")
    assert "1 difference" in failed.stdout
    assert "account_id=acme" in failed.stdout and "user_id=ada" in failed.stdout
    data = json.loads(cli("audit", "--json").stdout)
    assert data["clean"] is False and data["difference_count"] == 1
    check = cli("rebuild", "--check")
    assert check.exit_code == 1 and "1 difference from the live records" in check.stdout
    assert ok(cli("rebuild")).stdout.startswith("rebuilt daily billing records from ")
    assert ok(cli("audit")).stdout.startswith("audit CLEAN")


def test_compact_prunes_closed_days_and_changes_no_figure(cli):
    for i in range(12):
        record(cli, f"c{i}", when=days_ago(5 + i % 3), prompt=10 + i, completion=i)
    record(cli, "today", when=datetime.now(timezone.utc).isoformat(), prompt=1, completion=1)
    before = ok(cli("report", "--format", "json")).stdout
    today = datetime.now(timezone.utc).date().isoformat()
    dry = ok(cli("compact", "--before", today, "--grace-days", "0", "--dry-run"))
    assert dry.stdout.startswith("would prune 12 raw events")
    done = json.loads(ok(cli("compact", "--before", today, "--grace-days", "0", "--json")).stdout)
    assert done["events_pruned"] == 12 and done["days"] == 3 and done["rollups_written"] == 3
    assert ok(cli("report", "--format", "json")).stdout == before
    assert ok(cli("audit")).stdout.startswith("audit CLEAN")
    assert json.loads(ok(cli("accounts", "--json")).stdout)[0]["charges"] == 13
    nothing = ok(cli("compact", "--before", today, "--grace-days", "0"))
    assert nothing.stdout.startswith("pruned 0 raw events")


def test_compact_needs_a_valid_date(cli):
    result = cli("compact", "--before", "31/01/2026")
    assert result.exit_code == 2
    assert result.stderr == "error: --before: not a date in YYYY-MM-DD form: '31/01/2026'\n"
    missing = cli("compact")
    assert missing.exit_code == 2
    assert missing.stderr == "error: Missing option '--before'.\n"


# -- rejected charges -------------------------------------------------------------------


def test_rejected_list_and_resubmit_with_a_correction(cli):
    from jobs.rejected import reject
    from ledger import Ledger

    ledger = Ledger.from_url(cli.url)
    try:
        rejected_id = reject(ledger, {"account_id": "acme", "charge_type": "refund", "prompt_tokens": 5,
                                      "charge_id": "r1"}, {"charge_type": "unknown charge type 'refund'"})
    finally:
        ledger.close()
    listed = json.loads(ok(cli("rejected", "list", "--json")).stdout)
    assert [(r["id"], r["errors"]) for r in listed] == [(rejected_id, {"charge_type": "unknown charge type 'refund'"})]
    still_bad = cli("rejected", "resubmit", str(rejected_id))
    assert still_bad.exit_code == 2
    assert still_bad.stderr.startswith("error: invalid charge: charge_type: unknown charge type 'refund'")
    fixed = ok(cli("rejected", "resubmit", str(rejected_id), "--set", "charge_type=usage"))
    assert fixed.stdout == f"rejected charge {rejected_id} recorded as charge r1 for account acme\n"
    assert ok(cli("rejected", "list")).stdout == "no rejected charges waiting\n"
    assert json.loads(ok(cli("accounts", "acme", "--json")).stdout)[0]["prompt_tokens"] == 5
    unknown = cli("rejected", "resubmit", "999")
    assert unknown.exit_code == 2 and unknown.stderr == "error: no rejected charge with id 999\n"
    bad_set = cli("rejected", "resubmit", str(rejected_id), "--set", "colour=red")
    assert bad_set.exit_code == 2 and bad_set.stderr.startswith("error: --set: unknown field 'colour'")


def test_rejected_dismiss_resolves_without_recording_and_says_why(cli):
    from jobs.rejected import reject
    from ledger import Ledger

    ledger = Ledger.from_url(cli.url)
    try:
        kept = reject(ledger, {"account_id": "acme", "charge_type": "usage", "prompt_tokens": -1,
                               "charge_id": "t1"}, {"prompt_tokens": "must be >= 0"})
    finally:
        ledger.close()
    blank = cli("rejected", "dismiss", str(kept), "--reason", "  ")
    assert blank.exit_code == 2 and blank.stderr == "error: --reason: say why the charge is not recorded\n"
    done = json.loads(ok(cli("rejected", "dismiss", str(kept), "--reason", "load test", "--json")).stdout)
    assert done["id"] == kept and done["resolution"] == "dismissed: load test" and done["resolved_at"]
    assert ok(cli("rejected", "list")).stdout == "no rejected charges waiting\n"
    listed = json.loads(ok(cli("rejected", "list", "--all", "--json")).stdout)
    assert [r["resolution"] for r in listed] == ["dismissed: load test"]
    again = cli("rejected", "dismiss", str(kept), "--reason", "twice")
    assert again.exit_code == 2 and "already resolved: dismissed: load test" in again.stderr
    assert cli("accounts", "acme").exit_code == 2  # nothing was recorded for it


# -- help everywhere, and the benchmark's wiring ------------------------------------------------


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "bench"] + ["rejected list", "rejected resubmit", "rejected dismiss", "prices set", "prices list", "prices import"])
def test_every_command_has_help(command):
    result = runner.invoke(app, [*command.split(), "--help"])
    assert result.exit_code == 0
    assert f"Usage: ledger {command}" in result.stdout


def test_bench_runs_through_the_command_line(tmp_path):
    missing = runner.invoke(app, ["bench"])
    assert missing.exit_code == 2
    assert missing.stderr == "error: Missing option '--database-url'.\n"
    result = runner.invoke(app, ["bench", "--database-url", f"sqlite:///{tmp_path / 'bench.db'}",
                                 "--quick", "--only", "report"])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert "report: one account's year" in result.stdout
