"""Money at the edge: integer micro-units inside, decimal text only when shown.

Costs are summed as integers of micro-units (10^-6 of the currency), so no
total ever drifts; this module only turns one into text for a person.
"""

from __future__ import annotations

MICROS = 1_000_000


def format_micros(micros: int | None, currency: str | None = None) -> str:
    """``1234567`` -> ``"1.234567"`` (exact, six decimals; None -> ``"-"``)."""
    if micros is None:
        return "-"
    sign = "-" if micros < 0 else ""
    whole, fraction = divmod(abs(micros), MICROS)
    text = f"{sign}{whole:,}.{fraction:06d}"
    return f"{text} {currency}" if currency else text
