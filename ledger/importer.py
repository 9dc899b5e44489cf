"""Streaming import of charges from JSONL or CSV files, batched through the service.

A file is read line by line (never whole), cut into batches handed to
``Ledger.record_charges``, and every line gets exactly one fate: recorded, a
duplicate of a charge already recorded, or rejected with its errors. Rejected
lines go to a reject file (one JSON object per line: the line number, the
errors by field and the original text), so nothing valid is dropped with a bad
neighbour and nothing bad is silently lost.

Lines without a ``charge_id`` get one derived from the file's SHA-256 and the
line number: importing the same file again (say after an interruption) finds
every line already recorded instead of charging twice.

``seed_export=True`` reads an export of the replaced system's ``Charge`` table:
``id`` becomes the charge id ``seed-<id>``, ``created_at`` the time of the call
(UTC when it carries no zone), other bookkeeping columns are ignored.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

from ledger.charges import INPUT_FIELDS
from ledger.errors import ChargeConflict, LedgerError

Format = Literal["jsonl", "csv"]
FORMATS: dict[str, Format] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
}
DEFAULT_BATCH_SIZE = 1_000
#: Columns of the seed's Charge table export that carry no charge fact.
SEED_IGNORED_COLUMNS = frozenset({"updated_at", "modified_at", "deleted_at", "created"})
#: Django exports may name a foreign key by its field rather than its column.
SEED_ALIASES = {"user_profile": "user_profile_id", "account": "account_id"}
#: ``progress(bytes_read, total_bytes)`` after each batch.
Progress = Callable[[int, int], None]


class ImportFileError(LedgerError):
    """The file as a whole cannot be imported (missing, unreadable, wrong shape)."""


class ImportInterrupted(LedgerError):
    """The store failed mid-import; lines before ``line`` are stored."""

    def __init__(self, line: int, cause: Exception) -> None:
        self.line = line
        self.cause = cause
        super().__init__(
            f"import stopped at line {line}: {cause}; every line before it is stored, and "
            "importing the same file again records each line once"
        )


@dataclass(frozen=True)
class Line:
    """One record of the file: its line number, original text, and fields or a parse error."""

    number: int
    text: str
    fields: dict[str, Any] | None = None
    errors: dict[str, str] | None = None


@dataclass
class ImportResult:
    """Every line counted once: ``recorded + duplicates + rejected == lines``."""

    path: str
    format: Format
    lines: int = 0
    recorded: int = 0
    duplicates: int = 0
    rejected: int = 0
    rejects_path: str | None = None
    #: The first few rejected lines, for a summary (all of them are in the reject file).
    sample: list[dict[str, Any]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.rejected == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "lines": self.lines,
            "recorded": self.recorded,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "rejects_path": self.rejects_path,
        }


def detect_format(path: Path, given: str | None = None) -> Format:
    """The format named, or the one the file's extension says."""
    name = (given or "").lower()
    if name:
        if name not in ("jsonl", "csv"):
            raise ImportFileError(f"unknown format {given!r}; use jsonl or csv")
        return name  # type: ignore[return-value]
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ImportFileError(
            f"cannot tell the format of {path.name!r} from its extension; "
            "use --format jsonl or --format csv"
        )
    return FORMATS[suffix]


def default_rejects_path(path: Path) -> Path:
    return path.with_name(path.name + ".rejects.jsonl")


def file_digest(path: Path) -> str:
    """SHA-256 of the file, streamed: the stem of derived charge ids."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# -- reading -------------------------------------------------------------------


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
        hint = "" if seed_export else " (an export of the seed's Charge table? use --seed-export)"
        raise ImportFileError(f"unknown CSV column(s): {', '.join(unknown)}{hint}")
    duplicated = sorted({name for name in columns if columns.count(name) > 1})
    if duplicated:
        raise ImportFileError(f"CSV column(s) named twice: {', '.join(duplicated)}")


# -- shaping -------------------------------------------------------------------


def from_seed_export(row: dict[str, Any]) -> dict[str, Any]:
    """A row of the seed's Charge table as the ledger's charge fields.

    ``id`` -> ``charge_id`` "seed-<id>", ``created_at`` -> ``occurred_at``
    (naive times are the seed server's UTC), ``user_profile`` -> ``user_profile_id``,
    ``account`` -> ``account_id``, bookkeeping columns dropped.
    """
    fields = {SEED_ALIASES.get(k, k): v for k, v in row.items() if k not in SEED_IGNORED_COLUMNS}
    seed_id = fields.pop("id", None)
    if seed_id is not None and "charge_id" not in fields:
        fields["charge_id"] = f"seed-{str(seed_id).strip()}"
    created = fields.pop("created_at", None)
    if created is not None and "occurred_at" not in fields:
        fields["occurred_at"] = _assume_utc(created)
    return fields


def _assume_utc(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    text = value.strip()
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        return value  # the validator names it
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.isoformat()


def conflict_errors(exc: LedgerError) -> dict[str, str]:
    """A batch error as field -> message, like an invalid charge's."""
    if isinstance(exc, ChargeConflict):
        return {
            name: f"charge {exc.charge_id!r} was recorded with {old!r}, this line has {new!r}"
            for name, (old, new) in sorted(exc.differences.items())
        }
    errors = getattr(exc, "errors", None)
    if isinstance(errors, dict):
        return {str(k): str(v) for k, v in errors.items()}
    return {"charge": str(exc)}


# -- importing -----------------------------------------------------------------


class _Rejects:
    """The reject file, opened on the first rejected line (replacing an older one)."""

    def __init__(self, path: Path, result: ImportResult, sample_size: int) -> None:
        self.path = path
        self.result = result
        self.sample_size = sample_size
        self.handle: io.TextIOWrapper | None = None

    def add(self, line: Line, errors: dict[str, str]) -> None:
        entry = {"line": line.number, "errors": errors, "text": line.text}
        if self.handle is None:
            self.handle = self.path.open("w", encoding="utf-8")
            self.result.rejects_path = str(self.path)
        self.handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self.result.rejected += 1
        if len(self.result.sample) < self.sample_size:
            self.result.sample.append(entry)

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()


def import_file(
    ledger: Any,
    path: str | Path,
    *,
    format: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed_export: bool = False,
    rejects_path: str | Path | None = None,
    progress: Progress | None = None,
    sample_size: int = 10,
) -> ImportResult:
    """Record every valid line of ``path``; write the others to the reject file.

    Raises :class:`ImportFileError` when the file cannot be read as a whole
    (nothing is recorded for a bad header), and :class:`ImportInterrupted`
    when the store fails mid-way (lines before the batch that failed are stored).
    """
    path = Path(path)
    if batch_size < 1:
        raise ImportFileError("the batch size must be at least 1")
    kind = detect_format(path, format)
    if not path.exists():
        raise ImportFileError(f"no such file: {path}")
    if path.is_dir():
        raise ImportFileError(f"{path} is a directory, not a file")
    total = path.stat().st_size
    stem = f"import-{file_digest(path)[:16]}"
    result = ImportResult(path=str(path), format=kind)
    reject_file = Path(rejects_path) if rejects_path else default_rejects_path(path)
    if not reject_file.parent.is_dir():
        raise ImportFileError(f"cannot write the reject file {reject_file}: no such directory")
    rejects = _Rejects(reject_file, result, sample_size)
    batch: list[Line] = []
    try:
        with path.open("rb") as handle:
            reader = read_jsonl(handle) if kind == "jsonl" else read_csv(handle, seed_export=seed_export)
            consumed = 0
            for line, consumed in reader:
                result.lines += 1
                batch.append(line if line.errors else _shaped(line, stem, seed_export))
                if len(batch) >= batch_size:
                    _record(ledger, batch, result, rejects)
                    batch = []
                    if progress:
                        progress(consumed, total)
            if batch:
                _record(ledger, batch, result, rejects)
            if progress:
                progress(total, total)
    finally:
        rejects.close()
    return result


def _shaped(line: Line, stem: str, seed_export: bool) -> Line:
    fields = from_seed_export(line.fields or {}) if seed_export else dict(line.fields or {})
    if fields.get("charge_id") in (None, ""):
        fields["charge_id"] = f"{stem}-{line.number}"
    return Line(line.number, line.text, fields=fields)


def _record(ledger: Any, batch: list[Line], result: ImportResult, rejects: _Rejects) -> None:
    """Record a batch's parsed lines; write its rejects in line order."""
    valid = [line for line in batch if not line.errors]
    try:
        outcomes = ledger.record_charges([line.fields for line in valid]) if valid else []
    except Exception as exc:  # the store failed: the batch is not stored, earlier ones are
        raise ImportInterrupted(batch[0].number, exc) from exc
    errors: dict[int, dict[str, str]] = {line.number: line.errors for line in batch if line.errors}
    for line, outcome in zip(valid, outcomes):
        if outcome.error is not None:
            errors[line.number] = conflict_errors(outcome.error)
        elif outcome.receipt is not None and outcome.receipt.duplicate:
            result.duplicates += 1
        else:
            result.recorded += 1
    for line in batch:
        if line.number in errors:
            rejects.add(line, errors[line.number])
