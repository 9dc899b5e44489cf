"""``ledger budgets`` and ``ledger credits`` end to end, on SQLite and PostgreSQL.

Budgets are set, listed and removed through the command; their spent and a
balance's figures are checked after charges recorded with ``ledger record``
(one micro-unit per prompt token, so a charge's cost is its prompt tokens).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from test_cli import days_ago, ok, record, runner

from ledger import Ledger, Settings
from ledger_service.cli import app


@pytest.fixture
def cli(store_url):
    """Run ``ledger --database-url <store> ARGS`` (the store is SQLite, then PostgreSQL)."""

    def run(*args: str):
        return runner.invoke(app, ["--database-url", store_url, *args])

    run.url = store_url
    return run


def priced(cli) -> None:
    """One micro-unit per prompt token, nothing for completions: cost = prompt tokens."""
    ok(cli("prices", "set", "--provider", "openai", "--model", "gpt-4o", "--prompt", "1000000",
           "--completion", "0", "--effective-from", "2020-01-01T00:00:00Z"))


def charge(cli, charge_id: str, cost: int, *, user: str = "ada", when: str | None = None, account: str = "acme"):
    return record(cli, charge_id, account=account, user=user, prompt=cost, completion=0, when=when)


def statuses(cli, *args: str) -> dict[str, dict]:
    listed = json.loads(ok(cli("budgets", "list", "--json", *args)).stdout)
    return {status["budget_id"]: status for status in listed}


def table_row(stdout: str, first_cell: str) -> list[str]:
    """The cells of the table row whose first cell is ``first_cell``."""
    for line in stdout.splitlines():
        cells = [cell.strip() for cell in line.strip("│ ").split("│")]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in:\n{stdout}")


def this_month() -> str:
    return datetime.now(UTC).date().replace(day=1).isoformat()


def error(result, code: int = 2) -> str:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    return result.stderr


# -- budgets ------------------------------------------------------------------------------


def test_set_reports_created_unchanged_changed_and_remove_takes_it_away(cli):
    made = ok(cli("budgets", "set", "acme-monthly", "--account", "acme", "--limit-micros", "500000000"))
    assert made.stdout == (
        f"created budget acme-monthly: account acme, 500.000000 USD a month (hard, period from {this_month()}); "
        "spent 0.000000, held 0.000000, remaining 500.000000; thresholds 50%, 80%, 100%\n")
    again = ok(cli("budgets", "set", "acme-monthly", "--account", "acme", "--limit-micros", "500000000"))
    assert again.stdout.startswith("unchanged: budget acme-monthly: account acme, 500.000000 USD a month")
    changed = json.loads(ok(cli("budgets", "set", "acme-monthly", "--account", "acme", "--limit-micros", "500000000",
                                "--mode", "soft", "--thresholds", "80,100", "--json")).stdout)
    assert changed == {
        "budget_id": "acme-monthly", "account_id": "acme", "user_id": None, "period": "month",
        "period_start": this_month(), "mode": "soft", "thresholds": [80, 100], "limit": None, "unit": "micros",
        "limit_micros": 500000000, "spent_micros": 0, "held_micros": 0, "remaining_micros": 500000000,
        "created": False, "changed": True}

    ok(cli("budgets", "set", "ada-daily", "--account", "acme", "--user", "ada", "--limit-tokens", "20000",
           "--period", "day", "--thresholds", ""))
    ok(cli("budgets", "set", "globex", "--account", "globex", "--limit-micros", "1000000", "--period", "total"))
    assert sorted(statuses(cli)) == ["acme-monthly", "ada-daily", "globex"]
    assert sorted(statuses(cli, "--account", "acme")) == ["acme-monthly", "ada-daily"]
    daily = statuses(cli)["ada-daily"]
    assert (daily["user_id"], daily["period"], daily["thresholds"], daily["unit"], daily["limit_tokens"]) == (
        "ada", "day", [], "tokens", 20000)
    assert "limit_micros" not in daily

    table = ok(cli("budgets", "list")).stdout
    assert table_row(table, "acme-monthly") == [
        "acme-monthly", "acme", "-", "month", this_month(), "soft", "USD", "500.000000", "0.000000", "0.000000",
        "500.000000", "80,100"]
    assert table_row(table, "ada-daily")[2:] == [
        "ada", "day", datetime.now(UTC).date().isoformat(), "hard", "tokens", "20,000", "0", "0",
        "20,000", "-"]
    assert table_row(table, "globex")[3:5] == ["total", "-"]

    removed = ok(cli("budgets", "remove", "acme-monthly"))
    assert removed.stdout == "removed budget acme-monthly\n"
    assert sorted(statuses(cli)) == ["ada-daily", "globex"]
    assert error(cli("budgets", "remove", "acme-monthly")) == (
        "error: unknown budget 'acme-monthly': no budget with this id is set\n")
    assert json.loads(ok(cli("budgets", "remove", "globex", "--json")).stdout) == {
        "budget_id": "globex", "removed": True}
    assert ok(cli("budgets", "list", "--account", "globex")).stdout == (
        "no budgets for account globex; set one with: ledger budgets set\n")


def test_spent_counts_recorded_charges_in_scope_and_period_net_of_reversals(cli):
    priced(cli)
    ok(cli("budgets", "set", "acme-month", "--account", "acme", "--limit-micros", "1000"))
    ok(cli("budgets", "set", "acme-ever", "--account", "acme", "--limit-micros", "1000", "--period", "total"))
    ok(cli("budgets", "set", "ada-tokens", "--account", "acme", "--user", "ada", "--limit-tokens", "1000"))
    charge(cli, "c1", 300)
    charge(cli, "c2", 200, user="bob")
    charge(cli, "c-old", 50, when=days_ago(40))  # an earlier month: only the total budget counts it
    charge(cli, "other", 700, account="globex")

    now = statuses(cli)
    assert {k: now["acme-month"][k] for k in ("spent_micros", "held_micros", "remaining_micros")} == {
        "spent_micros": 500, "held_micros": 0, "remaining_micros": 500}
    assert now["acme-ever"]["spent_micros"] == 550
    assert (now["ada-tokens"]["spent_tokens"], now["ada-tokens"]["remaining_tokens"]) == (300, 700)

    ledger = Ledger(Settings(database_url=cli.url))
    try:
        held = ledger.reserve("acme", user_id="ada", estimate_micros=100, estimate_tokens=150)
        now = statuses(cli)
        assert (now["acme-month"]["held_micros"], now["acme-month"]["remaining_micros"]) == (100, 400)
        assert (now["ada-tokens"]["held_tokens"], now["ada-tokens"]["remaining_tokens"]) == (150, 550)
        ledger.release(held.reservation_id)
    finally:
        ledger.close()

    ok(cli("reverse", "c1", "--account", "acme"))
    now = statuses(cli)
    assert (now["acme-month"]["spent_micros"], now["acme-month"]["held_micros"]) == (200, 0)
    assert (now["acme-ever"]["spent_micros"], now["ada-tokens"]["spent_tokens"]) == (250, 0)

    charge(cli, "c3", 2000)  # no reservation: never refused, even past the limit
    over = statuses(cli)["acme-month"]
    assert (over["spent_micros"], over["remaining_micros"]) == (2200, 0)
    assert table_row(ok(cli("budgets", "list")).stdout, "acme-month")[7:11] == [
        "0.001000", "0.002200", "0.000000", "0.000000"]


def test_bad_budget_input_names_the_field_and_sets_nothing(cli):
    cases = [
        ((), "error: invalid budget: limit: give exactly one of --limit-micros N, --limit-tokens N or --credits\n"),
        (("--limit-micros", "5", "--credits"), ("error: invalid budget: limit: give exactly one of --limit-micros N, "
                                               "--limit-tokens N or --credits (got --limit-micros, --credits)\n")),
        (("--limit-micros", "0"), "error: invalid budget: limit_micros: must be greater than 0\n"),
        (("--limit-tokens", "5", "--period", "week"),
         "error: invalid budget: period: must be one of day, month, total\n"),
        (("--limit-tokens", "5", "--mode", "strict"), "error: invalid budget: mode: must be one of hard, soft\n"),
        (("--limit-tokens", "5", "--thresholds", "50,eighty"), ("error: invalid budget: thresholds: must be integer "
                                                               "percents separated by commas, e.g. 50,80,100; got "
                                                               "'50,eighty'\n")),
        (("--limit-tokens", "5", "--thresholds", "0"),
         "error: invalid budget: thresholds: each threshold must be an integer percent from 1 to 1000\n"),
        (("--credits", "--period", "month"), ("error: invalid budget: period: a credits budget spans the grants' "
                                             "lives: use \"total\" (or leave it out)\n")),
    ]
    for args, message in cases:
        assert error(cli("budgets", "set", "b", "--account", "acme", *args)) == message, args
    assert "--limit-micros" in error(cli("budgets", "set", "b", "--account", "acme", "--limit-micros", "ten"))
    assert "--account" in error(cli("budgets", "set", "b", "--limit-micros", "10"))
    assert "account_id" in error(cli("budgets", "set", "b", "--account", "acme\u200b", "--limit-micros", "10"))
    assert statuses(cli) == {}

    ok(cli("budgets", "set", "b", "--account", "acme", "--limit-micros", "10"))
    moved = error(cli("budgets", "set", "b", "--account", "globex", "--limit-micros", "10"))
    assert moved.startswith("error: invalid budget: account_id: budget 'b' belongs to account 'acme'")
    assert [s["account_id"] for s in statuses(cli).values()] == ["acme"]


def test_help_lists_the_new_groups_and_their_commands():
    page = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert page.exit_code == 0 and "budgets" in page.stdout and "credits" in page.stdout
    for group, commands in (("budgets", ("set", "list", "remove")), ("credits", ("grant", "list"))):
        shown = runner.invoke(app, [group], env={"COLUMNS": "200"})
        assert shown.exit_code == 0
        assert all(f" {command} " in shown.stdout for command in commands), shown.stdout


# -- credits ------------------------------------------------------------------------------


def in_days(days: int) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).replace(microsecond=0).isoformat()


def test_grants_are_used_earliest_expiry_first_then_overage(cli):
    priced(cli)
    charge(cli, "before", 70, when=days_ago(3))  # before any grant: no grant covers it
    first = json.loads(ok(cli("credits", "grant", "acme", "1000", "--grant-id", "late", "--json")).stdout)
    assert {k: first[k] for k in ("grant_id", "account_id", "amount_micros", "expires_at", "expired", "duplicate")} \
        == {"grant_id": "late", "account_id": "acme", "amount_micros": 1000, "expires_at": None, "expired": False,
            "duplicate": False}
    soon = ok(cli("credits", "grant", "acme", "300", "--grant-id", "soon", "--expires-at", in_days(30)))
    assert soon.stdout.startswith("granted 0.000300 USD to account acme (grant soon, expires ")
    assert soon.stdout.endswith("balance now 0.001300 USD\n")
    again = ok(cli("credits", "grant", "acme", "1000", "--grant-id", "late"))
    assert again.stdout.startswith("already granted: 0.001000 USD to account acme (grant late, never expires)")
    ok(cli("budgets", "set", "prepaid", "--account", "acme", "--credits"))

    charge(cli, "c1", 500)
    balance = json.loads(ok(cli("credits", "list", "acme", "--json")).stdout)
    assert {k: balance[k] for k in ("balance_micros", "granted_micros", "used_micros", "overage_micros")} == {
        "balance_micros": 800, "granted_micros": 1300, "used_micros": 500, "overage_micros": 0}
    assert [(g["grant_id"], g["remaining_micros"]) for g in balance["grants"]] == [("late", 800), ("soon", 0)]
    prepaid = statuses(cli)["prepaid"]
    assert (prepaid["limit"], prepaid["period"], prepaid["limit_micros"], prepaid["spent_micros"],
            prepaid["remaining_micros"]) == ("credits", "total", 1300, 500, 800)

    text = ok(cli("credits", "list", "acme")).stdout
    assert text.splitlines()[0] == ("account acme: balance 0.000800 USD; granted 0.001300 (unexpired grants), "
                                    "used 0.000500, overage 0.000000")
    assert table_row(text, "late")[2:] == ["never", "0.001000", "0.000800", "active"]
    assert table_row(text, "soon")[3:] == ["0.000300", "0.000000", "active"]

    charge(cli, "c2", 1000)
    balance = json.loads(ok(cli("credits", "list", "acme", "--json")).stdout)
    assert {k: balance[k] for k in ("balance_micros", "used_micros", "overage_micros")} == {
        "balance_micros": 0, "used_micros": 1300, "overage_micros": 200}
    assert statuses(cli)["prepaid"]["remaining_micros"] == 0

    ok(cli("reverse", "c2", "--account", "acme"))
    balance = json.loads(ok(cli("credits", "list", "acme", "--json")).stdout)
    assert (balance["balance_micros"], balance["overage_micros"]) == (800, 0)

    assert ok(cli("credits", "list", "globex")).stdout == (
        "account globex: balance 0.000000 USD; granted 0.000000 (unexpired grants), used 0.000000, "
        "overage 0.000000\nno credit granted to account globex; grant some with: ledger credits grant\n")


def test_bad_grants_name_the_field_and_grant_nothing(cli):
    cases = [
        (("0",), "error: invalid credit grant: amount_micros: must be greater than 0\n"),
        (("5", "--expires-at", "2020-01-01T00:00:00Z"), ("error: invalid credit grant: expires_at: must be in the "
                                                         "future\n")),
        (("5", "--expires-at", "next week"), ("error: invalid credit grant: expires_at: must be an ISO 8601 time "
                                             "with its offset, e.g. 2027-01-01T00:00:00Z\n")),
        (("5", "--expires-at", "2099-01-01T00:00:00"), ("error: invalid credit grant: expires_at: must be a time "
                                                       "with its offset (timezone-aware)\n")),
    ]
    for args, message in cases:
        assert error(cli("credits", "grant", "acme", *args)) == message, args
    assert "AMOUNT_MICROS" in error(cli("credits", "grant", "acme", "ten"))
    assert "AMOUNT_MICROS" in error(cli("credits", "grant", "acme"))
    assert json.loads(ok(cli("credits", "list", "acme", "--json")).stdout)["grants"] == []

    ok(cli("credits", "grant", "acme", "5", "--grant-id", "g1"))
    reused = error(cli("credits", "grant", "acme", "6", "--grant-id", "g1"))
    assert reused == ("error: invalid credit grant: grant_id: grant 'g1' was made with other terms "
                      "(account 'acme', 5 micros): use a new grant id\n")
    assert json.loads(ok(cli("credits", "list", "acme", "--json")).stdout)["granted_micros"] == 5


def test_an_account_and_a_user_take_either_spelling_on_every_command(cli):
    """``record`` spells them as the charge fields (--account-id), the other commands as filters (--account)."""
    ok(cli("record", "--account", "acme", "--user", "ada", "--charge-type", "completion",
           "--prompt-tokens", "3", "--completion-tokens", "0", "--charge-id", "either-1"))
    ok(cli("budgets", "set", "either", "--account-id", "acme", "--user-id", "ada", "--limit-tokens", "100",
           "--period", "total"))
    listed = json.loads(ok(cli("budgets", "list", "--account-id", "acme", "--json")).stdout)
    (status,) = [b for b in listed if b["budget_id"] == "either"]
    assert status["user_id"] == "ada" and status["spent_tokens"] == 3
    assert ok(cli("reverse", "either-1", "--account-id", "acme")).exit_code == 0
