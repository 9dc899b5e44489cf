"""How a page writes its figures: counts with separators, money as people read it, the exact amount
in a ``title``, and a cost whose charges have no price marked as such rather than shown as free."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

from ledger.measures import MEASURES
from ledger_service.dashboard.money import axis_money, cost_text, exact, money, pricing

COST = "cost_micros"


@dataclass(frozen=True)
class Display:
    """Figures written for one ledger's currency."""

    currency: str

    def text(self, name: str, figures: Mapping[str, int]) -> str:
        """The figure ``name`` of a row: ``1,234``, ``$13.41``, ``unpriced`` or ``$1.20 (partly unpriced)``."""
        if name == COST:
            return cost_text(figures, self.currency)
        return f"{figures.get(name, 0):,}"

    def title(self, name: str, figures: Mapping[str, int]) -> str:
        """The exact amount behind a cost (``13.412562 USD``); '' for counts, which are shown exactly."""
        return exact(figures.get(COST, 0), self.currency) if name == COST else ""

    def td(self, name: str, figures: Mapping[str, int]) -> Markup:
        """A table cell: the figure, with the exact amount as its title and ``data-value`` in micro-units."""
        title = self.title(name, figures)
        attributes = f' title="{escape(title)}"' if title else ""
        marked = pricing(figures) if name == COST else ""
        if marked:
            attributes += f' data-pricing="{escape(marked)}"'
        return Markup(f'<td data-value="{figures.get(name, 0)}"{attributes}>{escape(self.text(name, figures))}</td>')

    def money(self, micros: int) -> str:
        return money(micros, self.currency)

    def axis(self, micros: int, step: int) -> str:
        return axis_money(micros, step, self.currency)

    def amount(self, name: str, value: int) -> str:
        """A bare figure (a chart's value): money for a cost, a count otherwise."""
        return self.money(value) if name == COST else f"{value:,}"


def summed(rows: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """The measures of ``rows`` added up (a day's total across series)."""
    total = dict.fromkeys(MEASURES, 0)
    for row in rows:
        for name in MEASURES:
            total[name] += row.get(name, 0)
    return total
