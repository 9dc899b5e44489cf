"""The importer as a library: reading, shaping and accounting for every line."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from ledger import Ledger, UnknownAccount
from ledger.importer import (
    ImportFileError,
    detect_format,
    from_seed_export,
    import_file,
    read_csv,
    read_jsonl,
)


def lines_of(reader):
    return [(line.number, line.text, line.fields, line.errors) for line, _ in reader]


def test_jsonl_reader_numbers_lines_skips_blanks_and_names_bad_ones():
    data = b'\xef\xbb\xbf{"a": 1}\n\n   \n{"b": 2}\r\nnot json\n"text"\n\xff\xfe{}\n'
    assert lines_of(read_jsonl(io.BytesIO(data))) == [
        (1, '{"a": 1}', {"a": 1}, None),
        (4, '{"b": 2}', {"b": 2}, None),
        (5, "not json", None, {"line": "not valid JSON: Expecting value at column 1"}),
        (6, '"text"', None, {"line": "expected a JSON object, got str"}),
        (7, "\ufffd\ufffd{}", None, {"line": "not UTF-8 text (invalid start byte at byte 0)"}),
    ]


def test_jsonl_reader_reports_bytes_consumed():
    data = b'{"a": 1}\n{"b": 2}\n'
    assert [consumed for _, consumed in read_jsonl(io.BytesIO(data))] == [9, 18]


def test_csv_reader_maps_columns_drops_empty_cells_and_keeps_first_line_numbers():
    data = (b"account_id,charge_type,prompt_tokens,reference\n"
            b"acme,usage,10,\n"
            b"\n"
            b'acme,usage,5,"two\nlines"\n'
            b"acme,usage\n")
    assert lines_of(read_csv(io.BytesIO(data))) == [
        (2, "acme,usage,10,", {"account_id": "acme", "charge_type": "usage", "prompt_tokens": "10"}, None),
        (4, 'acme,usage,5,"two\nlines"',
         {"account_id": "acme", "charge_type": "usage", "prompt_tokens": "5", "reference": "two\nlines"}, None),
        (6, "acme,usage", None, {"line": "has 2 cells, the header has 4"}),
    ]


def test_csv_reader_refuses_unknown_columns_unless_seed_export():
    data = b"id,account_id,charge_type,created_at\n1,acme,usage,2024-01-01 00:00:00\n"
    with pytest.raises(ImportFileError, match=r"unknown CSV column\(s\): id, created_at"):
        list(read_csv(io.BytesIO(data)))
    assert [line.fields for line, _ in read_csv(io.BytesIO(data), seed_export=True)] == [
        {"id": "1", "account_id": "acme", "charge_type": "usage", "created_at": "2024-01-01 00:00:00"}]


def test_an_empty_csv_has_no_lines():
    assert lines_of(read_csv(io.BytesIO(b""))) == []


def test_seed_export_row_mapping():
    assert from_seed_export({"id": "42", "user_profile_id": "7", "created_at": "2024-03-01 10:00:00",
                             "updated_at": "2024-03-02 10:00:00", "charge_type": "usage"}) == {
        "charge_id": "seed-42", "user_profile_id": "7", "occurred_at": "2024-03-01T10:00:00+00:00",
        "charge_type": "usage"}
    assert from_seed_export({"id": 5, "user_profile": "9", "account": "acme"}) == {
        "charge_id": "seed-5", "user_profile_id": "9", "account_id": "acme"}
    # an aware time is kept; a bad one is passed on for the validator to name
    assert from_seed_export({"created_at": "2024-03-01T10:00:00+02:00"})["occurred_at"] == "2024-03-01T10:00:00+02:00"
    assert from_seed_export({"created_at": "yesterday"})["occurred_at"] == "yesterday"


@pytest.mark.parametrize(("name", "given", "expected"), [
    ("a.jsonl", None, "jsonl"), ("a.NDJSON", None, "jsonl"), ("a.csv", None, "csv"), ("a.txt", "CSV", "csv"),
])
def test_detect_format(name, given, expected):
    assert detect_format(Path(name), given) == expected


@pytest.fixture
def sqlite_ledger(sqlite_url):
    ledger = Ledger.from_url(sqlite_url)
    yield ledger
    ledger.close()


def write_jsonl(path: Path, items: list) -> Path:
    path.write_text("".join((item if isinstance(item, str) else json.dumps(item)) + "\n" for item in items))
    return path


def test_import_file_accounts_for_every_line_and_reports_progress(sqlite_ledger, tmp_path):
    charge = {"account_id": "acme", "charge_type": "usage", "prompt_tokens": 3}
    path = write_jsonl(tmp_path / "c.jsonl", [charge] * 5 + ["{", {"charge_type": "usage"}] + [charge] * 3)
    seen = []
    result = import_file(sqlite_ledger, path, batch_size=3, progress=lambda done, total: seen.append((done, total)))
    assert (result.lines, result.recorded, result.duplicates, result.rejected) == (10, 8, 0, 2)
    assert seen[-1] == (path.stat().st_size, path.stat().st_size)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert sqlite_ledger.account_totals("acme").prompt_tokens == 24
    assert result.rejects_path == f"{path}.rejects.jsonl"
    assert [e["line"] for e in result.sample] == [6, 7]


def test_derived_charge_ids_make_a_reimport_a_no_op_but_an_edited_file_is_new(sqlite_ledger, tmp_path):
    charge = {"account_id": "acme", "charge_type": "usage", "prompt_tokens": 3}
    path = write_jsonl(tmp_path / "c.jsonl", [charge, charge])
    assert import_file(sqlite_ledger, path).recorded == 2
    again = import_file(sqlite_ledger, path)
    assert (again.recorded, again.duplicates) == (0, 2)
    write_jsonl(path, [charge, charge, charge])
    assert import_file(sqlite_ledger, path).recorded == 3
    assert sqlite_ledger.account_totals("acme").charges == 5


def test_same_id_different_facts_is_rejected_with_the_differences(sqlite_ledger, tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [
        {"account_id": "acme", "charge_type": "usage", "prompt_tokens": 3, "charge_id": "x"},
        {"account_id": "acme", "charge_type": "usage", "prompt_tokens": 4, "charge_id": "x"},
    ])
    result = import_file(sqlite_ledger, path)
    assert (result.recorded, result.rejected) == (1, 1)
    assert result.sample[0]["errors"] == {
        "prompt_tokens": "charge 'x' was recorded with 3, this line has 4",
        "total_tokens": "charge 'x' was recorded with 3, this line has 4",
    }


def test_a_bad_batch_size_or_missing_file_is_refused(sqlite_ledger, tmp_path):
    with pytest.raises(ImportFileError, match="batch size"):
        import_file(sqlite_ledger, tmp_path / "c.jsonl", batch_size=0)
    with pytest.raises(ImportFileError, match="no such file"):
        import_file(sqlite_ledger, tmp_path / "c.jsonl")
    path = write_jsonl(tmp_path / "c.jsonl", [{"account_id": "acme", "charge_type": "usage"}])
    with pytest.raises(ImportFileError, match="cannot write the reject file .*: no such directory"):
        import_file(sqlite_ledger, path, rejects_path=tmp_path / "nowhere" / "r.jsonl")
    with pytest.raises(UnknownAccount):  # refused before recording anything
        sqlite_ledger.account_totals("acme")
