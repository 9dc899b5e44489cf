"""Money as people read it on the dashboard: ``$13.41``, with the exact figure kept beside it.

Figures stay integers of micro-units (10^-6 of the ledger's currency) up to
this point; a page shows them rounded to the currency's minor unit, and keeps
the exact amount (``13.412562 USD``) in a ``title`` attribute and in its CSV.
A cost whose charges all have no price reads "unpriced", never ``$0.00``.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal

from ledger.money import MICROS, format_micros

#: Symbols people know; any other currency is written with its ISO code.
SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "CNY": "¥", "INR": "₹", "KRW": "₩",
           "AUD": "A$", "CAD": "C$", "NZD": "NZ$", "BRL": "R$", "CHF": "CHF "}
#: Currencies without minor units; every other is shown to two decimals.
NO_MINOR_UNITS = frozenset({"JPY", "KRW", "ISK", "CLP", "VND"})
UNPRICED, PARTLY_UNPRICED = "unpriced", "partly unpriced"


def decimals_of(currency: str) -> int:
    return 0 if currency in NO_MINOR_UNITS else 2


def money(micros: int, currency: str, decimals: int | None = None) -> str:
    """``13412562`` -> ``$13.41``; an amount too small to show as a cent reads ``<$0.01``, not free."""
    places = decimals_of(currency) if decimals is None else decimals
    amount = Decimal(micros) / MICROS
    smallest = Decimal(1).scaleb(-places)
    rounded = abs(amount).quantize(smallest, rounding=ROUND_HALF_UP)
    if micros and not rounded:
        least = _with_unit(f"{smallest:,.{places}f}", currency)
        return f"<{least}" if micros > 0 else f">-{least}"
    return ("-" if micros < 0 else "") + _with_unit(f"{rounded:,.{places}f}", currency)


def _with_unit(number: str, currency: str) -> str:
    symbol = SYMBOLS.get(currency)
    return f"{symbol}{number}" if symbol else f"{number} {currency}"


def exact(micros: int, currency: str) -> str:
    """The exact amount, for a title attribute: ``13.412562 USD``."""
    return format_micros(micros, currency)


def pricing(figures: Mapping[str, int]) -> str:
    """'unpriced' when every charge of a row has no price, 'partly unpriced' when some have none, else ''."""
    charges, unpriced = figures.get("charges", 0), figures.get("unpriced_charges", 0)
    if unpriced <= 0:
        return ""
    return UNPRICED if unpriced >= charges and not figures.get("cost_micros", 0) else PARTLY_UNPRICED


def cost_text(figures: Mapping[str, int], currency: str) -> str:
    """A row's cost as shown: ``$1.20``, ``unpriced``, or ``$1.20 (partly unpriced)``."""
    marked = pricing(figures)
    if marked == UNPRICED:
        return UNPRICED
    shown = money(figures.get("cost_micros", 0), currency)
    return f"{shown} ({marked})" if marked else shown


def axis_money(micros: int, step: int, currency: str) -> str:
    """An axis label: enough decimals that ticks ``step`` micro-units apart read differently."""
    places = decimals_of(currency)
    while places < 6 and step % (MICROS // 10 ** places):
        places += 1
    return money(micros, currency, places)
