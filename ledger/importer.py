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

A ``.json`` file may hold a JSON array of charge objects instead (read
whole, numbered by position: "item 3"); see :mod:`ledger.import_formats`.

``seed_export=True`` reads an export of the replaced system's ``Charge`` table:
``id`` becomes the charge id ``seed-<id>``, ``created_at`` the time of the call
(UTC when it carries no zone), other bookkeeping columns are ignored.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ledger.errors import ChargeConflict, LedgerError
from ledger.import_formats import (
    FORMATS,
    SEED_ALIASES,
    SEED_IGNORED_COLUMNS,
    Format,
    ImportFileError,
    Line,
    check_columns,
    detect_format,
    holds_array,
    read_csv,
    read_json_array,
    read_jsonl,
)

if TYPE_CHECKING:
    from ledger.application import Ledger

__all__ = [
    "FORMATS", "Format", "ImportFileError", "ImportInterrupted", "ImportResult", "Line", "check_columns",
    "default_rejects_path", "detect_format", "file_digest", "from_seed_export", "import_file", "read_csv",
    "read_json_array", "read_jsonl",
]

DEFAULT_BATCH_SIZE = 1_000
#: ``progress(bytes_read, total_bytes)`` after each batch.
Progress = Callable[[int, int], None]


class ImportInterrupted(LedgerError):
    """The store failed mid-import; lines before ``line`` are stored."""

    def __init__(self, line: int, cause: Exception) -> None:
        self.line = line
        self.cause = cause
        super().__init__(
            f"import stopped at line {line}: {cause}; every line before it is stored, and "
            "importing the same file again records each line once"
        )


@dataclass
class ImportResult:
    """Every line counted once: ``recorded + duplicates + rejected == lines``.

    For a JSON array, ``lines`` counts its items (see :attr:`noun`).
    """

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

    @property
    def noun(self) -> str:
        """What the file's records are called: items of a JSON array, otherwise lines."""
        return "item" if self.format == "json" else "line"

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


def default_rejects_path(path: Path) -> Path:
    return path.with_name(path.name + ".rejects.jsonl")


def file_digest(path: Path) -> str:
    """SHA-256 of the file, streamed: the stem of derived charge ids."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
        moment = moment.replace(tzinfo=UTC)
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
        entry: dict[str, Any] = {"line": line.number, "errors": errors, "text": line.text}
        if line.first_line is not None:  # an item of a JSON array, on the line it starts on
            entry = {"item": line.number, "line": line.first_line, "errors": errors, "text": line.text}
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
    ledger: Ledger,
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
    if not path.exists():
        raise ImportFileError(f"no such file: {path}")
    if path.is_dir():
        raise ImportFileError(f"{path} is a directory, not a file")
    kind = detect_format(path, format)
    if kind == "json" and not holds_array(path):
        kind = "jsonl"  # a .json file of one object per line
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
            reader = _reader(kind, handle, seed_export)
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


def _reader(kind: Format, handle: io.BufferedReader, seed_export: bool) -> Iterator[tuple[Line, int]]:
    if kind == "csv":
        return read_csv(handle, seed_export=seed_export)
    return read_json_array(handle) if kind == "json" else read_jsonl(handle)


def _shaped(line: Line, stem: str, seed_export: bool) -> Line:
    fields = from_seed_export(line.fields or {}) if seed_export else dict(line.fields or {})
    if fields.get("charge_id") in (None, ""):
        fields["charge_id"] = f"{stem}-{line.number}"
    return Line(line.number, line.text, fields=fields, first_line=line.first_line)


def _record(ledger: Ledger, batch: list[Line], result: ImportResult, rejects: _Rejects) -> None:
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
