"""Hostile input through every door: the service, the Huey task and ``ledger import``.

Each case of :mod:`hostile_corpus` (1,500 of them: wrong types, negative and
huge integers, NaN-like strings, control, surrogate and unassigned characters,
invisible and direction controls in ids, oversize strings, SQL look-alikes,
missing accounts, bad zones, naive and out-of-range times, hostile field names) is either rejected with an error naming the bad
field and nothing stored, or - when it is nasty but valid - stored verbatim.
In batches and files, the valid neighbours of every bad item are stored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from huey.exceptions import CancelExecution
from typer.testing import CliRunner

from hostile_corpus import STRING_FIELDS, Case, base, corpus
from ledger import InvalidCharge, Ledger, Settings
from ledger.charges import INPUT_FIELDS
from ledger.store.schema import charge_index

CASES = corpus()
NEIGHBOUR_OFFSET = 1_000_000


def test_the_corpus_is_large_and_mixed() -> None:
    assert len(CASES) >= 1_000
    assert sum(c.expect is None for c in CASES) >= 200  # nasty but valid: must be stored
    assert len({c.expect for c in CASES}) >= 12  # every field gets named


def named(case: Case, errors: dict[str, str]) -> bool:
    """The error names the case's bad field (any unknown name for a non-text key)."""
    if case.expect == "<unknown>":
        return any(name not in INPUT_FIELDS for name in errors)
    return case.expect in errors


def stored_rows(ledger: Ledger) -> dict[str, dict[str, Any]]:
    with ledger.recorder.transaction(commit=False) as session:
        rows = session.execute(sa.select(charge_index.c.charge_id, charge_index.c.payload)).all()
    return {row.charge_id: json.loads(row.payload) for row in rows}


def check_verbatim(case: Case, payload: dict[str, Any]) -> None:
    """A valid nasty value is stored as given (trimmed), never mangled."""
    for field in STRING_FIELDS:
        if field in case.fields and field != "charge_id":
            value = case.fields[field]
            assert payload[field] == ((str(value).strip() or None) if field != "user_id"
                                      else str(value).strip()), (case.name, field)


def event_count(ledger: Ledger) -> int:
    ledger.sequence()  # acknowledged charges still in the intake (PostgreSQL) join the log first
    table = ledger.recorder.events_record_cls.__table__
    with ledger.recorder.transaction(commit=False) as session:
        return int(session.execute(
            sa.select(sa.func.count()).select_from(table).where(table.c.topic.like("%ChargeRecorded"))
        ).scalar())


def test_each_case_alone_through_the_service(ledger: Ledger) -> None:
    accepted: dict[str, Case] = {}
    failures = []
    for case in (c for c in CASES if c.kwargs_safe):
        try:
            receipt = ledger.record_charge(**case.fields)
        except InvalidCharge as exc:
            if case.expect is None or not named(case, exc.errors):
                failures.append((case.name, case.expect, exc.errors))
            continue
        if case.expect is not None:
            failures.append((case.name, case.expect, "stored"))
        else:
            assert not receipt.duplicate, case.name
            accepted[receipt.charge_id] = case
    assert failures == []
    rows = stored_rows(ledger)
    assert set(rows) == set(accepted)  # nothing else entered the log
    assert event_count(ledger) == len(accepted)
    for charge_id, case in accepted.items():
        check_verbatim(case, rows[charge_id])


def test_batches_keep_every_valid_neighbour(ledger: Ledger) -> None:
    """Eight hostile items per batch, each between two valid neighbours."""
    expected_ids: set[str] = set()
    for start in range(0, len(CASES), 8):
        chunk = CASES[start : start + 8]
        items: list[Any] = []
        roles: list[Case | None] = []
        for offset, case in enumerate(chunk):
            neighbour = base(NEIGHBOUR_OFFSET + start + offset)
            items += [neighbour, case.fields]
            roles += [None, case]
            expected_ids.add(neighbour["charge_id"])
        outcomes = ledger.record_charges(items)
        assert [o.index for o in outcomes] == list(range(len(items)))
        for outcome, role in zip(outcomes, roles):
            if role is None:
                assert outcome.ok and not outcome.receipt.duplicate, outcome
            elif role.expect is None:
                assert outcome.ok, (role.name, outcome.error)
                expected_ids.add(outcome.receipt.charge_id)
            else:
                assert isinstance(outcome.error, InvalidCharge), (role.name, outcome)
                assert named(role, outcome.error.errors), (role.name, role.expect, outcome.error.errors)
    rows = stored_rows(ledger)
    assert set(rows) == expected_ids
    assert event_count(ledger) == len(expected_ids)


@pytest.fixture
def task_ledger(store_url, monkeypatch):
    """The jobs' per-process ledger, on this test's store."""
    from jobs.tasks import close_ledger, get_ledger

    monkeypatch.setenv("LEDGER_DATABASE_URL", store_url)
    close_ledger()
    yield get_ledger()
    close_ledger()


def test_each_case_through_the_huey_task(task_ledger: Ledger) -> None:
    """The task body as a worker runs it: a refused charge is kept, with its errors, not retried."""
    from jobs import create_charge
    from jobs.rejected import list_rejected

    expected_rejects: dict[str, Case] = {}
    recorded: set[str] = set()
    for case in (c for c in CASES if c.kwargs_safe):
        task = create_charge.s(**case.fields)
        if case.expect is None:
            task.execute()
            recorded.add(task.kwargs["charge_id"])
        else:
            with pytest.raises(CancelExecution):
                task.execute()
            assert task.retries == 0, case.name  # a refusal is final
            expected_rejects[task.id] = case
    kept = {row.task_id: row for row in list_rejected(task_ledger)}
    assert set(kept) == set(expected_rejects)
    failures = [(c.name, c.expect, kept[t].errors) for t, c in expected_rejects.items()
                if not named(c, kept[t].errors)]
    assert failures == []
    rows = stored_rows(task_ledger)
    assert set(rows) == {str(i).strip() for i in recorded}


def test_each_case_through_ledger_import(tmp_path: Path, sqlite_url: str) -> None:
    """One JSONL file: every hostile line between valid ones; rejects name line and field."""
    from ledger_service.cli import app

    lines: list[str] = []
    roles: dict[int, Case | None] = {}
    for i, case in enumerate(c for c in CASES if c.json_safe):
        neighbour = base(NEIGHBOUR_OFFSET + i)
        lines.append(json.dumps(neighbour))
        roles[len(lines)] = None
        lines.append(json.dumps(case.fields))
        roles[len(lines)] = case
    source = tmp_path / "hostile.jsonl"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["--database-url", sqlite_url, "import", str(source), "--json"])
    assert result.exit_code == 3, result.output  # some lines rejected, the rest recorded
    summary = json.loads(result.stdout)
    rejects = {}
    for text in filter(None, Path(summary["rejects_path"]).read_text(encoding="utf-8").split("\n")):
        entry = json.loads(text)
        rejects[entry["line"]] = entry["errors"]
    failures = []
    for number, role in roles.items():
        if role is None or role.expect is None:
            if number in rejects:
                failures.append((number, role.name if role else "neighbour", rejects[number]))
        elif number not in rejects or not named(role, rejects[number]):
            failures.append((number, role.name, role.expect, rejects.get(number)))
    assert failures == []
    valid = sum(1 for role in roles.values() if role is None or role.expect is None)
    assert summary["recorded"] == valid and summary["rejected"] == len(roles) - valid
    ledger = Ledger(Settings(database_url=sqlite_url))
    try:
        assert len(stored_rows(ledger)) == valid == event_count(ledger)
    finally:
        ledger.close()


HOSTILE_IDS: list[Any] = ["a\x00b", None, 10**5000, ["x"], {"a": 1}, b"x", 1.5, "y" * 10_000, "\ud800", "",
                          "   ", "'; DROP TABLE ledger_charge_ids; --", "\x1b[2J", "nope", 5, -1, True]
HOSTILE_REASONS: list[tuple[Any, bool]] = [  # (reason, storable)
    ("duplicate call", True), ("'; DROP TABLE ledger_events; --", True), ("x" * 5000, True), (None, True),
    (42, True), ("\u202eevil \U0001f642", True), ("zero\u200bwidth \ufeff", True), ("a\x00b", False),
    ("\ud800", False), ("x\udfff", False), (10**5000, False), (["list"], False), (b"bytes", False), (1.5, False),
    ("line\nbreak", False), ("tab\there", False), ("\x1b[2J", False),
]
HOSTILE_ACCOUNTS: list[Any] = ["acct-0\x00", "\ud800", "acct\u200b-0", "\u202eacct-0", 5, ["acct-0"]]


def test_hostile_reversals_are_refused_by_name_and_store_nothing(ledger: Ledger) -> None:
    """Ids that can never have been recorded are unknown (not driver errors); bad reasons are named."""
    from ledger.errors import UnknownCharge

    for n, (reason, _) in enumerate(HOSTILE_REASONS):
        ledger.record_charge(**base(n))
    before = event_count(ledger)
    for charge_id in HOSTILE_IDS:
        with pytest.raises(UnknownCharge):
            ledger.reverse_charge(charge_id, "why", account_id="acct-0")
    for account_id in HOSTILE_ACCOUNTS:
        with pytest.raises(UnknownCharge):
            ledger.reverse_charge("h-0", "why", account_id=account_id)
    reversed_count = 0
    for n, (reason, storable) in enumerate(HOSTILE_REASONS):
        account_id = base(n)["account_id"]
        if storable:
            receipt = ledger.reverse_charge(f"h-{n}", reason, account_id=account_id)
            assert receipt.charge_id == f"h-{n}"
            reversed_count += 1
        else:
            with pytest.raises(InvalidCharge) as caught:
                ledger.reverse_charge(f"h-{n}", reason, account_id=account_id)
            assert "reason" in caught.value.errors
    assert event_count(ledger) == before
    table = ledger.recorder.events_record_cls.__table__
    with ledger.recorder.transaction(commit=False) as session:
        reversals = session.execute(
            sa.select(sa.func.count()).select_from(table).where(table.c.topic.like("%ChargeReversed"))
        ).scalar()
    assert reversals == reversed_count


def csv_safe(case: Case) -> bool:
    """Cases a CSV file can carry: known columns, text or integer values UTF-8 can encode, no NUL."""
    if not all(isinstance(k, str) and k in INPUT_FIELDS for k in case.fields):
        return False
    for value in case.fields.values():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            return False
        text = value if isinstance(value, str) else ("9" * 5000 if abs(value) >= 10**4000 else str(value))
        if "\x00" in text or any(0xD800 <= ord(ch) <= 0xDFFF for ch in text):
            return False
        if not text.strip() and case.expect is not None:
            return False  # an empty cell means absent: a blank token is then no error at all
    return True


def test_each_case_through_a_csv_import(tmp_path: Path, sqlite_url: str) -> None:
    """The same through CSV: every value is text there, so the same fields must be named."""
    import csv

    from ledger_service.cli import app

    def cell(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, int) and abs(value) >= 10**4000:
            return "9" * 5000  # as long, and as refused
        return str(value)

    columns = list(INPUT_FIELDS)
    source = tmp_path / "hostile.csv"
    roles: list[Case | None] = []
    with source.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for i, case in enumerate(c for c in CASES if csv_safe(c)):
            for fields, role in ((base(NEIGHBOUR_OFFSET + i), None), (case.fields, case)):
                writer.writerow([cell(fields.get(name)) for name in columns])
                roles.append(role)
    result = CliRunner().invoke(app, ["--database-url", sqlite_url, "import", str(source), "--json"])
    assert result.exit_code == 3, result.output
    summary = json.loads(result.stdout)
    text = Path(summary["rejects_path"]).read_text("utf-8")
    rejected = [json.loads(line) for line in text.split("\n") if line]  # not splitlines(): U+2028 is data
    bad = [role for role in roles if role is not None and role.expect is not None]
    assert summary["lines"] == len(roles) and summary["rejected"] == len(rejected) == len(bad)
    failures = [(role.name, role.expect, entry["errors"]) for role, entry in zip(bad, rejected)
                if role.expect not in entry["errors"]]
    assert failures == []
    assert summary["recorded"] == len(roles) - len(bad)
