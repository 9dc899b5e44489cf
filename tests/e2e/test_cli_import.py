"""``ledger import``: streamed, batched, every line accounted for, bad lines reported by number."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ledger_service.cli import app

runner = CliRunner()


@pytest.fixture
def cli(store_url):
    def run(*args: str):
        return runner.invoke(app, ["--database-url", store_url, *args])

    return run


def good(i: int) -> dict:
    return {"account_id": f"acct-{i % 3}", "user_id": f"u{i % 4}", "charge_type": "completion",
            "provider": "openai", "model": "gpt-4o-mini", "prompt_tokens": 100 + i,
            "completion_tokens": i, "occurred_at": f"2026-01-{1 + i % 28:02d}T10:00:00Z"}


#: Every tenth line is bad, in a different way each time; the reason each names.
BAD = [
    ("{not json", "line", "not valid JSON: Expecting property name enclosed in double quotes at column 2"),
    ({"account_id": "a", "charge_type": "completion", "prompt_tokens": -3}, "prompt_tokens", "must be >= 0, got -3"),
    ({"account_id": "a", "charge_type": "refund"}, "charge_type",
     "unknown charge type 'refund'; expected one of completion, plugin, subscription, tool, usage"),
    ({"account_id": "a", "charge_type": "usage", "occurred_at": "2026-01-02T10:00:00"}, "occurred_at",
     "must carry a time zone (e.g. 2026-01-31T12:00:00Z)"),
    ({"account_id": "a", "charge_type": "usage", "colour": "red"}, "colour", "unknown field"),
    ({"charge_type": "usage"}, "account_id", "required (or give user_profile_id to resolve it)"),
    ({"account_id": "a", "charge_type": "usage", "prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 5},
     "total_tokens", "must equal prompt_tokens + completion_tokens (1 + 1 = 2), got 5"),
    ("[1, 2]", "line", "expected a JSON object, got list"),
    ({"account_id": "a", "charge_type": "usage", "occurred_at": "2026-13-40T00:00:00Z"}, "occurred_at",
     "not an ISO 8601 date-time: '2026-13-40T00:00:00Z'"),
    ({"account_id": "a", "charge_type": "usage", "prompt_tokens": "ten"}, "prompt_tokens",
     "expected an integer, got 'ten'"),
]


def mixed_lines(count: int = 200) -> tuple[list[str], dict[int, tuple[str, str]], list[dict]]:
    """JSONL lines, 10% bad: (lines, {line number: (field, message)}, good charges)."""
    lines, bad, goods = [], {}, []
    for i in range(count):
        number = i + 1
        if number % 10 == 0:
            value, name, message = BAD[(number // 10 - 1) % len(BAD)]
            lines.append(value if isinstance(value, str) else json.dumps(value))
            bad[number] = (name, message)
        else:
            charge = good(i)
            lines.append(json.dumps(charge))
            goods.append(charge)
    return lines, bad, goods


def totals(cli) -> dict[str, int]:
    result = cli("accounts", "--json")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    return {k: sum(r[k] for r in rows) for k in ("charges", "prompt_tokens", "completion_tokens", "total_tokens")}


def expected(goods: list[dict]) -> dict[str, int]:
    prompt = sum(g["prompt_tokens"] for g in goods)
    completion = sum(g["completion_tokens"] for g in goods)
    return {"charges": len(goods), "prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def test_jsonl_with_ten_percent_bad_lines_records_exactly_the_good_ones(cli, tmp_path):
    lines, bad, goods = mixed_lines(200)
    path = tmp_path / "charges.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = cli("import", str(path), "--batch-size", "37")
    assert result.exit_code == 3
    assert result.stdout == "200 lines: 180 recorded, 0 already recorded, 20 rejected\n"
    stderr = result.stderr.splitlines()
    assert stderr[0] == f"line 10: {bad[10][0]}: {bad[10][1]}"
    assert stderr[-2] == "... and 10 more"
    assert stderr[-1] == f"20 of 200 lines rejected; see {path}.rejects.jsonl"
    rejects = [json.loads(line) for line in (tmp_path / "charges.jsonl.rejects.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rejects] == sorted(bad)
    for entry in rejects:
        assert entry["errors"] == {bad[entry["line"]][0]: bad[entry["line"]][1]}
        assert entry["text"] == lines[entry["line"] - 1]
    assert totals(cli) == expected(goods)

    again = cli("import", str(path))  # the same file: derived charge ids make it a no-op
    assert again.exit_code == 3
    assert again.stdout == "200 lines: 0 recorded, 180 already recorded, 20 rejected\n"
    assert totals(cli) == expected(goods)


def test_csv_with_ten_percent_bad_lines_reports_file_line_numbers(cli, tmp_path):
    columns = ["account_id", "user_id", "charge_type", "provider", "model", "prompt_tokens",
               "completion_tokens", "occurred_at", "reference"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    goods, bad_lines = [], []
    line = 1
    for i in range(100):
        charge = good(i)
        if i % 10 == 9:
            charge["prompt_tokens"] = -1
        if i == 4:  # a quoted cell spanning two lines (refused: a reference holds no control characters)
            charge["reference"] = "a reference\nover two lines"
        writer.writerow([charge.get(c, "") for c in columns])
        line += 1
        if i % 10 == 9 or i == 4:
            bad_lines.append(line)
        else:
            goods.append(charge)
        if i == 4:
            line += 1
    path = tmp_path / "export.csv"
    path.write_text(buffer.getvalue())
    result = cli("import", str(path), "--json")
    assert result.exit_code == 3
    summary = json.loads(result.stdout)
    assert summary == {"path": str(path), "format": "csv", "lines": 100, "recorded": 89, "duplicates": 0,
                       "rejected": 11, "rejects_path": f"{path}.rejects.jsonl"}
    rejects = [json.loads(x) for x in Path(summary["rejects_path"]).read_text().splitlines()]
    assert [r["line"] for r in rejects] == bad_lines
    assert rejects[0]["line"] == 6 and list(rejects[0]["errors"]) == ["reference"]
    assert "control" in rejects[0]["errors"]["reference"]  # the wording is ledger.charges'
    assert rejects[0]["text"] == "\n".join(path.read_text().splitlines()[5:7])
    assert rejects[1]["errors"] == {"prompt_tokens": "must be >= 0, got -1"}
    assert rejects[1]["text"] == path.read_text().splitlines()[bad_lines[1] - 1]
    assert totals(cli) == expected(goods)


def test_all_good_exits_zero_and_writes_no_reject_file(cli, tmp_path):
    path = tmp_path / "ok.ndjson"
    path.write_text("\n".join(json.dumps(good(i)) for i in range(25)) + "\n\n")
    result = cli("import", str(path))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "25 lines: 25 recorded, 0 already recorded, 0 rejected\n"
    assert result.stderr == ""
    assert not (tmp_path / "ok.ndjson.rejects.jsonl").exists()


def test_seed_export_of_the_charge_table(cli, tmp_path):
    header = ("id,user_profile_id,session_key,provider,charge_type,prompt_tokens,completion_tokens,"
              "total_tokens,model,reference,created_at,updated_at")
    rows = [
        "1,123,s-1,openai,completion,100,50,150,gpt-4o,ref-1,2024-03-01 10:00:00.123456,2024-03-01 10:00:00",
        "2,123,,,usage,10,5,15,,,2024-03-01T23:30:00+00:00,",
        "3,77,s-3,anthropic,tool,7,3,10,claude-3,ref-3,2024-03-02 08:00:00,",
    ]
    path = tmp_path / "charge.csv"
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    plain = cli("import", str(path))
    assert plain.exit_code == 2
    assert plain.stderr == ("error: unknown CSV column(s): id, created_at, updated_at "
                            "(an export of the seed's Charge table? use --seed-export)\n")
    result = cli("import", str(path), "--seed-export")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "3 lines: 3 recorded, 0 already recorded, 0 rejected\n"
    accounts = {r["account_id"]: r["total_tokens"] for r in json.loads(cli("accounts", "--json").stdout)}
    assert accounts == {"profile-123": 165, "profile-77": 10}
    report = json.loads(cli("report", "--format", "json", "--group-by", "account_id,billing_date").stdout)
    assert [(r["account_id"], r["billing_date"], r["charges"]) for r in report] == [
        ("profile-123", "2024-03-01", 2), ("profile-77", "2024-03-02", 1)]
    assert cli("reverse", "seed-3").stdout == "reversed charge seed-3 of account profile-77\n"


@pytest.mark.parametrize(
    ("name", "content", "args", "message"),
    [
        ("missing.jsonl", None, [], "error: no such file: {path}\n"),
        ("charges.txt", "{}", [],
         "error: cannot tell the format of 'charges.txt' from its extension; use --format jsonl, "
         "--format json or --format csv\n"),
        ("charges.txt", "{}", ["--format", "xml"], "error: unknown format 'xml'; use jsonl, json or csv\n"),
        ("bad.csv", "colour,size\nred,3\n", [],
         "error: the CSV header names no charge field (got colour, size); expected columns among "
         "user_profile_id, session_key, provider, charge_type, prompt_tokens, completion_tokens, "
         "total_tokens, model, reference, account_id, user_id, charge_id, occurred_at\n"),
        ("twice.csv", "account_id,account_id\na,b\n", [], "error: CSV column(s) named twice: account_id\n"),
    ],
)
def test_bad_files_are_usage_errors_and_record_nothing(cli, tmp_path, name, content, args, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    result = cli("import", str(path), *args)
    assert result.exit_code == 2
    assert result.stderr == message.format(path=path)
    assert json.loads(cli("accounts", "--json").stdout) == []


def test_a_directory_is_not_a_file(cli, tmp_path):
    folder = tmp_path / "dir.jsonl"
    folder.mkdir()
    result = cli("import", str(folder))
    assert result.exit_code == 2
    assert result.stderr == f"error: {folder} is a directory, not a file\n"


def test_custom_reject_file_and_format_option(cli, tmp_path):
    path = tmp_path / "charges.data"
    path.write_text(json.dumps(good(1)) + "\n" + json.dumps({"account_id": "x"}) + "\n")
    rejects = tmp_path / "out" / "bad.jsonl"
    rejects.parent.mkdir()
    result = cli("import", str(path), "--format", "jsonl", "--rejects", str(rejects))
    assert result.exit_code == 3
    assert result.stderr.splitlines()[0] == "line 2: charge_type: required; one of completion, plugin, subscription, tool, usage"
    assert [json.loads(x)["line"] for x in rejects.read_text().splitlines()] == [2]
