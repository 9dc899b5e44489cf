"""An account page's budget panels: each budget's spent and held against its limit, the credit
balance, and the threshold alerts sent.

Figures come from the ledger as the API gives them (``Ledger.budgets``,
``Ledger.balance``, ``Ledger.budget_alerts``), read when the page loads:
budgets are about now, not the page's chosen period. Each bar is server-side
SVG (no script, no inline style, so the dashboard's CSP holds) with its
figures also written beside it as text and in its accessible name; a budget
past its limit says so in words and is outlined, not just drawn full.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from typing import TYPE_CHECKING

from markupsafe import Markup

from ledger_service.dashboard.display import Display
from ledger_service.dashboard.styles import Style, pattern_def

if TYPE_CHECKING:
    from ledger import Ledger
    from ledger.budget_rules import BudgetStatus
    from ledger.credits import Balance

#: The most alerts a page lists (the newest); the API and CLI give the rest.
ALERTS_SHOWN = 50
#: A bar's drawing box; CSS scales it to the column.
BAR_WIDTH, BAR_HEIGHT = 400, 28
#: Spent and held: Okabe-Ito colours of the charts' palette, held also hatched so it never relies on colour.
SPENT_STYLE = Style(slot=0, colour="#0072B2", pattern="solid", marks="#fff")
HELD_STYLE = Style(slot=12, colour="#56B4E9", pattern="diagonal", marks="#000")
#: What marks a budget past its limit (the palette's vermillion).
OVER_COLOUR = "#D55E00"


@dataclass(frozen=True)
class BarGeometry:
    """Where a bar's parts fall, in drawing units: spent and held side by side, the limit as a line.

    The scale is the larger of the limit and spent + held, so a budget past
    its limit draws past the limit line instead of stopping at a full bar.
    """

    spent: float
    held: float
    limit: float


def geometry(limit: int, spent: int, held: int, width: float = BAR_WIDTH) -> BarGeometry:
    """Widths of the spent and held segments and the limit line's position, for a bar ``width`` long."""
    spent, held, limit = max(spent, 0), max(held, 0), max(limit, 0)
    scale = max(limit, spent + held)
    if scale == 0:
        return BarGeometry(0.0, 0.0, 0.0)
    return BarGeometry(width * spent / scale, width * held / scale, width * limit / scale)


@dataclass(frozen=True)
class BudgetView:
    """One budget as its panel shows it: definition, figures as text, and the bar."""

    number: int
    budget_id: str
    scope: str
    period: str
    #: The current period's first billing date, or "all time" for a ``total`` budget.
    period_start: str
    mode: str
    unit: str
    limit_value: int
    spent_value: int
    held_value: int
    remaining_value: int
    limit: str
    spent: str
    held: str
    remaining: str
    #: 'over' (spent past the limit), 'full' (no room left) or '' (room left).
    state: str
    state_text: str
    titles: dict[str, str]
    bar: Markup

    @property
    def ident(self) -> str:
        """An id unique on the page (budget ids may hold any character, so they are not used)."""
        return f"budget-{self.number}"


@dataclass(frozen=True)
class AlertView:
    """One alert sent: which threshold of which budget, in which period, and when."""

    threshold: int
    budget_id: str
    period: str
    occurred_at: datetime

    @property
    def when(self) -> str:
        return self.occurred_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True)
class Panels:
    """What an account page shows below its usage: budgets, the balance (None without grants), alerts."""

    budgets: list[BudgetView]
    balance: Balance | None
    alerts: list[AlertView]
    #: Whether more alerts were sent than are listed.
    more_alerts: bool


def panels(ledger: Ledger, account_id: str, shown: Display) -> Panels:
    """The panels of ``account_id``'s page: only that account's budgets, balance and alerts."""
    statuses = [s for s in ledger.budgets(account_id) if s.account_id == account_id]
    balance = ledger.balance(account_id)
    sent = ledger.budget_alerts(account_id=account_id, limit=ALERTS_SHOWN + 1)
    alerts = [AlertView(a.threshold, a.budget_id, a.period_key or "all time", a.occurred_at)
              for a in sent[:ALERTS_SHOWN] if a.account_id == account_id]
    return Panels(budgets=[budget_view(n, s, shown) for n, s in enumerate(statuses, 1)],
                  balance=balance if balance.grants else None, alerts=alerts, more_alerts=len(sent) > ALERTS_SHOWN)


def amount(status: BudgetStatus, value: int, shown: Display) -> str:
    """A figure in the budget's unit: money as the dashboard writes micro-units, tokens as a count."""
    return f"{value:,} tokens" if status.unit == "tokens" else shown.money(value)


def exact(status: BudgetStatus, value: int, shown: Display) -> str:
    """The exact figure for a title: ``1.000000 USD`` for money, '' for tokens (shown exactly already)."""
    return "" if status.unit == "tokens" else shown.title("cost_micros", {"cost_micros": value})


#: How a page names each budget period.
PERIOD_NAMES = {"day": "Day", "month": "Month", "total": "All time"}


def state_of(status: BudgetStatus, shown: Display) -> tuple[str, str]:
    """'over' with how far past, 'full' when nothing is left to reserve, or '' with no words."""
    if status.spent > status.limit:
        return "over", f"Over the limit by {amount(status, status.spent - status.limit, shown)}"
    if status.remaining == 0:
        refused = " (reservations are refused)" if status.mode == "hard" else ""
        return "full", f"No room left{refused}"
    return "", ""


def budget_view(number: int, status: BudgetStatus, shown: Display) -> BudgetView:
    state, state_text = state_of(status, shown)
    figures = {"limit": status.limit, "spent": status.spent, "held": status.held, "remaining": status.remaining}
    text = {name: amount(status, value, shown) for name, value in figures.items()}
    ident = f"budget-{number}"
    summary = (f"{status.budget_id}: spent {text['spent']} and held {text['held']} of a limit of "
               f"{text['limit']}; {text['remaining']} remaining" + (f". {state_text}" if state_text else ""))
    unit = "credits" if status.credits else ("tokens" if status.unit == "tokens" else "cost")
    return BudgetView(
        number=number, budget_id=status.budget_id,
        scope=f"User {status.user_id}" if status.user_id is not None else "Whole account",
        period=PERIOD_NAMES.get(status.period, status.period),
        period_start="all time" if status.period_start is None else status.period_start.isoformat(),
        mode=status.mode, unit=unit,
        limit_value=status.limit, spent_value=status.spent, held_value=status.held, remaining_value=status.remaining,
        limit=text["limit"], spent=text["spent"], held=text["held"], remaining=text["remaining"],
        state=state, state_text=state_text,
        titles={name: exact(status, value, shown) for name, value in figures.items()},
        bar=Markup(bar(ident, summary, geometry(status.limit, status.spent, status.held), over=state == "over",
                       past=status.spent + status.held > status.limit)),
    )


def bar(ident: str, summary: str, parts: BarGeometry, *, over: bool, past: bool) -> str:
    """One bar: the track, spent then held, the limit line, and a vermillion outline round what lies past it.

    ``over``: spent alone is past the limit (``data-over``); ``past``: spent
    and held together are, so part of the bar is drawn beyond the limit line.
    Its accessible name is ``summary`` (every figure in words); the parts carry
    ``data-part`` so what is drawn can be checked against the figures.
    """
    y, h = 4, BAR_HEIGHT - 8
    spent_fill, held_fill = SPENT_STYLE.ident(ident), HELD_STYLE.ident(ident)
    parts_drawn = [
        (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {BAR_WIDTH} {BAR_HEIGHT}" role="img" '
         f'aria-labelledby="{ident}-bar-title" class="budget-bar" id="{ident}-bar" data-over="{str(over).lower()}">'),
        f'<title id="{ident}-bar-title">{escape(summary)}</title>',
        f"<defs>{pattern_def(SPENT_STYLE, ident, 'spent')}{pattern_def(HELD_STYLE, ident, 'held')}</defs>",
        (f'<rect x="0" y="{y}" width="{BAR_WIDTH}" height="{h}" fill="#fff" stroke="#333" stroke-width="1" '
         'data-part="track"/>'),
        f'<rect x="0" y="{y}" width="{parts.spent:.1f}" height="{h}" fill="url(#{spent_fill})" data-part="spent"/>',
        (f'<rect x="{parts.spent:.1f}" y="{y}" width="{parts.held:.1f}" height="{h}" fill="url(#{held_fill})" '
         'stroke="#333" stroke-width="0.5" data-part="held"/>'),
    ]
    if past:
        beyond = parts.spent + parts.held - parts.limit
        parts_drawn.append(f'<rect x="{parts.limit:.1f}" y="1" width="{beyond:.1f}" height="{BAR_HEIGHT - 2}" '
                           f'fill="none" stroke="{OVER_COLOUR}" stroke-width="2" data-part="over"/>')
    parts_drawn.append(f'<line x1="{parts.limit:.1f}" x2="{parts.limit:.1f}" y1="0" y2="{BAR_HEIGHT}" '
                       f'stroke="#000" stroke-width="3" data-part="limit"/>')
    parts_drawn.append("</svg>")
    return "".join(parts_drawn)


def legend() -> Markup:
    """What a bar's parts mean: swatches for spent and held (colour and hatching), the limit's line."""
    items = []
    for name, style in (("Spent", SPENT_STYLE), ("Held by reservations", HELD_STYLE)):
        prefix = f"budgets-legend-{name.split()[0].lower()}"
        items.append(f'<li data-part="{name.split()[0].lower()}"><svg width="18" height="14" aria-hidden="true" '
                     f'focusable="false"><defs>{pattern_def(style, prefix, name)}</defs><rect width="18" height="14" '
                     f'fill="url(#{style.ident(prefix)})" stroke="#333"/></svg> {escape(name)}</li>')
    items.append('<li data-part="limit"><svg width="18" height="14" aria-hidden="true" focusable="false">'
                 '<line x1="9" x2="9" y1="0" y2="14" stroke="#000" stroke-width="3"/></svg> Limit</li>')
    items.append(f'<li data-part="over"><svg width="18" height="14" aria-hidden="true" focusable="false">'
                 f'<rect x="1" y="1" width="16" height="12" fill="none" stroke="{OVER_COLOUR}" stroke-width="2"/>'
                 f'</svg> Past the limit</li>')
    return Markup(f'<ul class="budget-legend" aria-label="What the bars show">{"".join(items)}</ul>')
