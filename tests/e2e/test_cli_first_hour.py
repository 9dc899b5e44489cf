"""What a newcomer following the README meets in the first hour, through the real ``ledger`` command.

Configuration mistakes are one plain line (never a traceback or a library's
wording), groups without a subcommand show their help, global options work
after the command, and the outputs say what they mean.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone
from importlib.metadata import version

import pytest
from typer.testing import CliRunner

from ledger_service.cli import app

runner = CliRunner()
SUPPORTED = "sqlite:///PATH or postgresql+psycopg2://USER@HOST/DATABASE"


def ledger(*args: str, env: dict[str, str] | None = None, cwd=None) -> subprocess.CompletedProcess[str]:
    """``python -m ledger_service.cli ARGS`` in a subprocess: the real entry point, real exit code."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "ledger_service.cli", *args], capture_output=True,
                          text=True, env=environment, cwd=cwd, timeout=120)


def one_error_line(result, code: int = 2) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    return result.stderr


@pytest.fixture
def cli(store_url):
    def run(*args: str):
        return runner.invoke(app, ["--database-url", store_url, *args])

    run.url = store_url
    return run


def ok(result):
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr)
    return result


# -- database URLs -------------------------------------------------------------------


@pytest.mark.parametrize("how", ["option", "environment"])
def test_a_mysql_url_is_one_line_naming_the_supported_urls(how, tmp_path):
    url = "mysql://x/y"
    result = (ledger("--database-url", url, "accounts", cwd=tmp_path) if how == "option"
              else ledger("accounts", env={"LEDGER_DATABASE_URL": url}, cwd=tmp_path))
    source = "--database-url" if how == "option" else "LEDGER_DATABASE_URL"
    assert one_error_line(result) == (
        f"error: bad database URL ({source}): mysql is not supported; the ledger runs on {SUPPORTED}\n")


def test_a_postgres_scheme_says_to_write_postgresql_psycopg2(tmp_path):
    result = ledger("--database-url", "postgres://ada:secret@db/ledger", "accounts", cwd=tmp_path)
    message = one_error_line(result)
    assert "write postgresql+psycopg2:// instead" in message
    assert "secret" not in message and "Can't load plugin" not in message


def test_a_sqlite_file_in_a_missing_directory_is_named(tmp_path):
    path = tmp_path / "nonexistent" / "dir" / "x.db"
    result = ledger("--database-url", f"sqlite:///{path}", "accounts", cwd=tmp_path)
    assert one_error_line(result) == (
        f"error: bad database URL (--database-url): cannot create the SQLite database {path}: "
        f"the directory {path.parent} does not exist\n")
    assert not path.parent.exists()


# -- settings in plain words ---------------------------------------------------------


@pytest.mark.parametrize(("env", "expected"), [
    ({"LEDGER_RETRY_ATTEMPTS": "abc"},
     "retry_attempts (LEDGER_RETRY_ATTEMPTS) must be a whole number, got 'abc'"),
    ({"LEDGER_RETRY_ATTEMPTS": "0"}, "retry_attempts (LEDGER_RETRY_ATTEMPTS) must be at least 1, got '0'"),
    ({"LEDGER_BILLING_TZ": "Mars/Olympus"},
     "billing_tz (LEDGER_BILLING_TZ) must be an IANA time zone name such as UTC or Europe/Paris, "
     "got 'Mars/Olympus'"),
    ({"LEDGER_UNPRICED": "maybe"}, "unpriced (LEDGER_UNPRICED) must be 'record' or 'reject', got 'maybe'"),
    ({"LEDGER_CURRENCY": "usd"},
     "currency (LEDGER_CURRENCY) must be a three-letter currency code in capitals, such as USD, got 'usd'"),
])
def test_bad_settings_name_the_field_and_the_variable_in_plain_words(env, expected, tmp_path):
    message = one_error_line(ledger("accounts", env=env, cwd=tmp_path))
    assert message == f"error: bad configuration: {expected}\n"
    for library_words in ("Input should", "Value error", "unable to parse"):
        assert library_words not in message


@pytest.mark.parametrize("where", ["before", "after"])
def test_a_bad_zone_option_names_the_option(where, sqlite_url):
    args = (["--billing-tz", "Mars/Olympus", "accounts"] if where == "before"
            else ["accounts", "--billing-tz", "Mars/Olympus"])
    result = runner.invoke(app, ["--database-url", sqlite_url, *args])
    assert result.exit_code == 2
    assert result.stderr == ("error: bad configuration: billing_tz (--billing-tz) must be an IANA time zone "
                             "name such as UTC or Europe/Paris, got 'Mars/Olympus'\n")


# -- help, version, global options ----------------------------------------------------


@pytest.mark.parametrize("group", ["keys", "prices", "rejected"])
def test_a_group_without_a_subcommand_prints_its_help_and_exits_0(group, tmp_path):
    result = ledger(group, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "Usage:" in result.stdout and "Commands" in result.stdout


def test_version_is_the_installed_package_version(tmp_path):
    result = ledger("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout == f"ledger (llm-usage-ledger) {version('llm-usage-ledger')}\n"


def test_global_options_are_accepted_after_the_command(tmp_path):
    first, second = tmp_path / "first.db", tmp_path / "second.db"
    record = ["record", "--account-id", "acme", "--charge-type", "usage", "--prompt-tokens", "1"]
    assert runner.invoke(app, [*record, "--database-url", f"sqlite:///{second}"]).exit_code == 0
    # after the command wins over before it
    moved = runner.invoke(app, ["--database-url", f"sqlite:///{first}", "accounts", "--json",
                                "--database-url", f"sqlite:///{second}"])
    assert json.loads(moved.stdout)[0]["account_id"] == "acme"
    assert not first.exists()
    report = runner.invoke(app, ["report", "--billing-tz", "Europe/Paris", "--format", "json",
                                 "--group-by", "account_id", "--database-url", f"sqlite:///{second}"])
    assert report.exit_code == 0, report.stderr
    assert json.loads(report.stdout)[0]["charges"] == 1
    keys = runner.invoke(app, ["keys", "list", "--json", "--database-url", f"sqlite:///{second}"])
    assert keys.exit_code == 0 and json.loads(keys.stdout) == []


# -- record ------------------------------------------------------------------------------


def test_record_shows_when_the_charge_occurred_and_an_absent_user_as_a_dash(cli):
    args = ["record", "--account-id", "acme", "--charge-type", "subscription", "--charge-id", "sub-1",
            "--occurred-at", "2026-01-31T12:00:00+01:00"]
    first = ok(cli(*args)).stdout
    assert first == ("recorded charge sub-1 for account acme (user -), occurred at 2026-01-31T11:00:00+00:00, "
                     "unpriced\n")
    again = ok(cli(*args)).stdout
    assert again.startswith("already recorded: charge sub-1 for account acme (user -), occurred at "
                            "2026-01-31T11:00:00+00:00, first recorded at ")
    assert again.endswith(", unpriced (not counted again)\n")
    receipt = json.loads(ok(cli(*args, "--json")).stdout)
    assert receipt["duplicate"] is True and receipt["charge_id"] == "sub-1"


# -- import -----------------------------------------------------------------------------


def charge(n: int) -> dict:
    return {"account_id": "acme", "charge_type": "usage", "prompt_tokens": n, "occurred_at": "2026-01-15T10:00:00Z"}


def test_a_json_array_file_is_imported_item_by_item(cli, tmp_path):
    path = tmp_path / "charges.json"
    path.write_text(json.dumps([charge(1), charge(2), {"account_id": "acme"}], indent=2))
    result = cli("import", str(path))
    assert result.exit_code == 3
    assert result.stdout == "3 items: 2 recorded, 0 already recorded, 1 rejected\n"
    assert result.stderr.startswith("item 3 (line 14): charge_type: ")
    reject = json.loads((tmp_path / "charges.json.rejects.jsonl").read_text())
    assert reject["item"] == 3 and reject["line"] == 14 and json.loads(reject["text"]) == {"account_id": "acme"}
    assert cli("import", str(path)).stdout == "3 items: 0 recorded, 2 already recorded, 1 rejected\n"
    compact = tmp_path / "one-line.json"
    compact.write_text(json.dumps([charge(3), charge(4)]))
    assert ok(cli("import", str(compact), "--json")).stdout.startswith(
        '{"path": "%s", "format": "json", "lines": 2, "recorded": 2' % compact)


def test_a_broken_json_array_is_unusable_and_records_nothing(cli, tmp_path):
    path = tmp_path / "broken.json"
    path.write_text(json.dumps([charge(1)])[:-1] + ",\n" + json.dumps(charge(2)) + " " + json.dumps(charge(3)) + "]")
    result = cli("import", str(path))
    assert result.exit_code == 2
    assert result.stderr == "error: not a valid JSON array: expected ',' or ']' at line 2\n"
    assert json.loads(ok(cli("accounts", "--json")).stdout) == []


def test_one_line_is_one_line(cli, tmp_path):
    path = tmp_path / "one.json"
    path.write_text(json.dumps(charge(1)) + "\n")
    assert ok(cli("import", str(path))).stdout == "1 line: 1 recorded, 0 already recorded, 0 rejected\n"


def test_a_csv_header_typo_suggests_the_column_and_only_a_seed_like_header_suggests_seed_export(cli, tmp_path):
    typo = tmp_path / "typo.csv"
    typo.write_text("acount_id,charge_type,prompt_tokens\nacme,usage,3\n")
    result = cli("import", str(typo))
    assert result.exit_code == 2
    assert result.stderr == "error: unknown CSV column(s): acount_id (did you mean account_id?)\n"
    seed = tmp_path / "seed.csv"
    seed.write_text("id,user_profile_id,charge_type,created_at\n1,7,usage,2024-01-01 00:00:00\n")
    result = cli("import", str(seed))
    assert result.stderr == ("error: unknown CSV column(s): id, created_at (an export of the seed's Charge "
                             "table? use --seed-export)\n")


# -- compaction and audit ------------------------------------------------------------------


def backdated(cli, charge_id: str, days: int) -> None:
    when = (datetime.now(timezone.utc) - timedelta(days=days)).isoformat()
    ok(cli("record", "--account-id", "acme", "--charge-type", "usage", "--prompt-tokens", "5",
           "--charge-id", charge_id, "--occurred-at", when))


def test_compact_counts_held_back_days_by_reason(cli):
    backdated(cli, "old-1", 10)  # a backdated import: recorded just now
    backdated(cli, "old-2", 11)
    result = json.loads(ok(cli("compact", "--before", date.today().isoformat(), "--json")).stdout)
    assert result["skipped"] == 2
    assert result["skipped_by_reason"] == {"grace_period": 2}
    assert result["grace_seconds"] == 2 * 86_400


def test_compaction_names_unprojected_days_apart_from_recent_ones(make_ledger):
    from ledger.compaction import compact

    ledger = make_ledger()
    moment = (datetime.now(timezone.utc) - timedelta(days=5)).isoformat()
    ledger.record_charge(account_id="acme", charge_type="usage", prompt_tokens=1, occurred_at=moment)
    held = compact(ledger, before=date.today(), projected_position=0, grace=timedelta(0), dry_run=True)
    assert (held.skipped, held.skipped_by_reason, held.days) == (1, {"not_projected": 1}, 0)
    recent = compact(ledger, before=date.today(), projected_position=0, dry_run=True)
    assert (recent.skipped, recent.skipped_by_reason) == (1, {"grace_period": 1})


def test_compact_says_which_reason_held_each_day_back(cli):
    backdated(cli, "old-1", 10)
    result = ok(cli("compact", "--before", date.today().isoformat()))
    assert ("1 account-day left for later: 1 within the grace period (an event recorded less than 2 days "
            "ago, however old the charge)") in result.stderr
    assert "recording time" in ok(cli("compact", "--help")).stdout


def test_audit_says_what_conservation_compared(cli):
    backdated(cli, "c1", 1)
    page = ok(cli("audit")).stdout
    assert "compacted accounts: none yet" in page
    assert "accounts 0/0/0/0/0/0" not in page


def test_conservation_wording_names_what_was_compared(make_ledger):
    from projections import Projector, audit

    from ledger.compaction import compact
    from ledger_service.wording import conservation_lines

    ledger = make_ledger()
    moment = (datetime.now(timezone.utc) - timedelta(days=5)).isoformat()
    ledger.record_charge(account_id="acme", charge_type="usage", prompt_tokens=4, occurred_at=moment)
    Projector(ledger).run()
    lines = conservation_lines(audit(ledger).conservation)
    assert lines[1] == "    every account: records 1/4/0/4/0/1 = log 1/4/0/4/0/1"
    assert lines[2].startswith("    compacted accounts: none yet")
    projector = Projector(ledger)
    compact(ledger, before=date.today(), projected_position=projector.position(), grace=timedelta(0))
    projector.run()
    lines = conservation_lines(audit(ledger).conservation)
    assert lines[2].startswith("    1 compacted account (running totals against the log, rollups included): ")


# -- demo ----------------------------------------------------------------------------------


def test_a_plain_demo_says_where_its_ledger_stays_its_size_and_how_to_remove_it(tmp_path):
    result = ledger("demo", "--charges", "300", "--accounts", "2", "--days", "3", cwd=tmp_path,
                    env={"TMPDIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    last = result.stdout.splitlines()[-1]
    folders = [p for p in tmp_path.iterdir() if p.name.startswith("ledger-demo-")]
    assert len(folders) == 1
    assert last.startswith("The demo ledger takes ") and f" MB in {folders[0]}; " in last
    assert last.endswith(f"remove it with: rm -r {folders[0]}")
    assert "recorded 300 charges over 3 days for 4 accounts (2 named" in result.stdout
