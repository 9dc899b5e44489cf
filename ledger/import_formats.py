"""Reading import files: JSON Lines, a JSON array, or CSV under a header of field names.

Each reader yields ``(Line, bytes consumed so far)`` pairs, one per record:
its number, its original text, and its fields or the error that makes it
unreadable. JSON Lines and CSV are streamed line by line; a JSON array is
read whole (it has no line structure to stream by), so large files belong in
JSON Lines.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ledger.charges import INPUT_FIELDS
from ledger.errors import LedgerError

Format = Literal["jsonl", "json", "csv"]
FORMATS: dict[str, Format] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
}
#: Columns of the seed's Charge table export that carry no charge fact.
SEED_IGNORED_COLUMNS = frozenset({"updated_at", "modified_at", "deleted_at", "created"})
#: Django exports may name a foreign key by its field rather than its column.
SEED_ALIASES = {"user_profile": "user_profile_id", "account": "account_id"}
#: Columns only an export of the seed's Charge table has: a header with one of
#: them and an unknown column is likely such an export.
SEED_ONLY_COLUMNS = frozenset({"id", "created_at"}) | SEED_IGNORED_COLUMNS | set(SEED_ALIASES)


class ImportFileError(LedgerError):
    """The file as a whole cannot be imported (missing, unreadable, wrong shape)."""


@dataclass(frozen=True)
class Line:
    """One record of the file: its number, original text, and fields or a parse error.

    ``number`` is the line number for JSON Lines and CSV, the item's position
    for a JSON array (then ``first_line`` is the line it starts on).
    """

    number: int
    text: str
    fields: dict[str, Any] | None = None
    errors: dict[str, str] | None = None
    first_line: int | None = None


def detect_format(path: Path, given: str | None = None) -> Format:
    """The format named, or the one the file's extension says."""
    name = (given or "").lower()
    if name:
        if name not in ("jsonl", "json", "csv"):
            raise ImportFileError(f"unknown format {given!r}; use jsonl, json or csv")
        return name  # type: ignore[return-value]
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ImportFileError(
            f"cannot tell the format of {path.name!r} from its extension; "
            "use --format jsonl, --format json or --format csv"
        )
    return FORMATS[suffix]


def holds_array(path: Path) -> bool:
    """Whether a JSON file holds an array (else it is read as JSON Lines)."""
    with path.open("rb") as handle:
        start = handle.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return start.startswith(b"[")


def read_jsonl(handle: io.BufferedReader) -> Iterator[tuple[Line, int]]:
    """Objects one per line; blank lines skipped; (line, bytes consumed so far)."""
    consumed = 0
    for number, raw in enumerate(handle, start=1):
        consumed += len(raw)
        try:
            text = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            yield Line(number, raw.decode("utf-8", "replace").rstrip("\r\n"),
                       errors={"line": f"not UTF-8 text ({exc.reason} at byte {exc.start})"}), consumed
            continue
        if number == 1:
            text = text.removeprefix("\ufeff")
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            yield Line(number, text, errors={"line": f"not valid JSON: {exc.msg} at column {exc.colno}"}), consumed
            continue
        except ValueError as exc:  # valid JSON Python refuses, e.g. an integer of over 4300 digits
            yield Line(number, text, errors={"line": f"unreadable JSON value: {exc}"}), consumed
            continue
        except RecursionError:
            yield Line(number, text, errors={"line": "JSON nested too deeply"}), consumed
            continue
        if not isinstance(value, dict):
            yield Line(number, text, errors={"line": f"expected a JSON object, got {type(value).__name__}"}), consumed
            continue
        yield Line(number, text, fields=value), consumed


def read_json_array(handle: io.BufferedReader) -> Iterator[tuple[Line, int]]:
    """The objects of a JSON array, numbered by position; a file that is not one array is unusable."""
    raw = handle.read()
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise ImportFileError(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    decoder = json.JSONDecoder()
    position = _skip_space(text, 0)
    if not text.startswith("[", position):
        raise ImportFileError("expected a JSON array of charge objects")
    items: list[tuple[Line, int]] = []
    position = _skip_space(text, position + 1)
    if text.startswith("]", position):
        return iter(())
    while True:
        try:
            value, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as exc:
            raise ImportFileError(f"not a valid JSON array: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
        except (ValueError, RecursionError) as exc:
            raise ImportFileError(f"unreadable JSON value at line {text.count(chr(10), 0, position) + 1}: {exc}") from None
        number, first_line = len(items) + 1, text.count("\n", 0, position) + 1
        item_text = text[position:end]
        if isinstance(value, dict):
            items.append((Line(number, item_text, fields=value, first_line=first_line), end))
        else:
            items.append((Line(number, item_text, errors={"item": f"expected a JSON object, got {type(value).__name__}"},
                               first_line=first_line), end))
        position = _skip_space(text, end)
        if text.startswith(",", position):
            position = _skip_space(text, position + 1)
        elif text.startswith("]", position):
            break
        else:
            line = text.count("\n", 0, position) + 1
            raise ImportFileError(f"not a valid JSON array: expected ',' or ']' at line {line}")
    if _skip_space(text, position + 1) != len(text):
        raise ImportFileError("not a valid JSON array: text after its closing ']'")
    return iter(items)


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


def read_csv(handle: io.BufferedReader, *, seed_export: bool = False) -> Iterator[tuple[Line, int]]:
    """Rows under a header of field names; empty cells mean absent.

    A header naming no known field, or unknown columns outside seed-export
    mode, makes the whole file unusable (every row would fail the same way).
    """
    consumed = 0
    pending: list[str] = []
    state = {"line": 0}

    def lines() -> Iterator[str]:
        nonlocal consumed
        for raw in handle:
            consumed += len(raw)
            state["line"] += 1
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ImportFileError(
                    f"line {state['line']} is not UTF-8 text ({exc.reason} at byte {exc.start})"
                ) from None
            if state["line"] == 1:
                text = text.removeprefix("\ufeff")
            pending.append(text)
            yield text

    reader = csv.reader(lines())
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise ImportFileError(f"unreadable CSV header: {exc}") from None
    pending.clear()
    columns = [name.strip() for name in header]
    check_columns(columns, seed_export=seed_export)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            text = "".join(pending).rstrip("\r\n")
            pending.clear()
            yield Line(state["line"], text, errors={"line": f"unreadable CSV: {exc}"}), consumed
            continue
        first = state["line"] - max(len(pending), 1) + 1
        text = "".join(pending).rstrip("\r\n")
        pending.clear()
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(columns):
            yield Line(first, text, errors={
                "line": f"has {len(row)} cells, the header has {len(columns)}"}), consumed
            continue
        fields = {name: cell for name, cell in zip(columns, row) if cell.strip() != ""}
        yield Line(first, text, fields=fields), consumed


def check_columns(columns: list[str], *, seed_export: bool) -> None:
    known = set(INPUT_FIELDS) | (
        {"id", "created_at"} | SEED_IGNORED_COLUMNS | set(SEED_ALIASES) if seed_export else set()
    )
    if not any(name in known for name in columns):
        raise ImportFileError(
            f"the CSV header names no charge field (got {', '.join(columns[:8]) or 'nothing'}); "
            f"expected columns among {', '.join(INPUT_FIELDS)}"
        )
    unknown = [name for name in columns if name not in known]
    if unknown:
        named = ", ".join(_with_suggestion(name, known) for name in unknown)
        seed_like = not seed_export and any(name in SEED_ONLY_COLUMNS for name in columns)
        hint = " (an export of the seed's Charge table? use --seed-export)" if seed_like else ""
        raise ImportFileError(f"unknown CSV column(s): {named}{hint}")
    duplicated = sorted({name for name in columns if columns.count(name) > 1})
    if duplicated:
        raise ImportFileError(f"CSV column(s) named twice: {', '.join(duplicated)}")


def _with_suggestion(name: str, known: set[str]) -> str:
    """An unknown column, with the known one it was probably meant to be."""
    close = difflib.get_close_matches(name.lower(), sorted(known), n=1, cutoff=0.75)
    return f"{name} (did you mean {close[0]}?)" if close else name
