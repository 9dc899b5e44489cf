"""CSV that a spreadsheet opens as data, never as formulas (OWASP's CSV injection rule).

Account, user, model and provider names come from callers. A cell such as
``=HYPERLINK("http://x")`` or ``+cmd|' /C calc'!A0`` would run as a formula
when the file is opened in a spreadsheet, so every text cell that starts with
``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading ``'``,
which spreadsheets read as "this is text". Numbers are written as they are
(a negative figure stays a number), and a missing value is an empty cell.
Every CSV the project writes goes through :func:`write_csv`.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import IO, Any

#: First characters that make a spreadsheet treat a cell as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
#: Numbers pass through unchanged (``bool`` is not a figure: it is written as text).
NUMBERS = (int, float, Decimal)


def safe_cell(value: Any) -> Any:
    """``value`` as a cell: numbers as they are, None as empty, text neutralised."""
    if value is None:
        return ""
    if isinstance(value, NUMBERS) and not isinstance(value, bool):
        return value
    text = value if isinstance(value, str) else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def safe_row(values: Iterable[Any]) -> list[Any]:
    return [safe_cell(value) for value in values]


def write_csv(stream: IO[str], header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """The header, then each row, every cell through :func:`safe_cell`; ``\\n`` line ends."""
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(safe_row(header))
    for row in rows:
        writer.writerow(safe_row(row))
