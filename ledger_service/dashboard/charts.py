"""Charts as server-side SVG: no script, no network, readable without colour.

Each series has a colour from a colour-blind-safe palette *and* a fill
pattern (:mod:`ledger_service.dashboard.styles`), the same wherever it
appears and never shared within a chart; its name in the legend; every bar
segment a ``<title>`` with its date, series and value (screen readers and
tooltips). The y axis has round ticks, each label different. The data is
also in a table under each chart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from html import escape

from ledger_service.dashboard.styles import Style, pattern_def, styles

WIDTH, HEIGHT = 760, 260
LEFT, RIGHT, TOP, BOTTOM = 84, 10, 10, 40
#: The horizontal bars' one style (they compare rows of one kind, not series).
BAR_STYLE = Style(slot=1, colour="#E69F00", pattern="solid", marks="#000")
#: The y axis's most intervals.
MAX_INTERVALS = 4
#: Horizontal bars: where they start, and the room kept right of the longest for its figure.
BARS_LEFT, BARS_LABEL_ROOM = 160, 190

Show = Callable[[int], str]
#: An axis label: (value, step between ticks) -> text.
Axis = Callable[[int, int], str]


def ticks(top: int) -> list[int]:
    """Round ticks from 0 past ``top``: steps of 1, 2 or 5 x 10^k, at most 5 ticks; ``[0]`` for nothing."""
    if top <= 0:
        return [0]
    wanted = -(-top // MAX_INTERVALS)
    magnitude = 10 ** (len(str(wanted)) - 1)
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= wanted)
    return [n * step for n in range(-(-top // step) + 1)]


def _y_axis(top: int, plot_h: float, axis: Axis) -> tuple[int, list[str]]:
    """The scale's top and the grid lines with their labels."""
    marks = ticks(top)
    scale = marks[-1] or 1
    step = marks[1] - marks[0] if len(marks) > 1 else 0
    parts = []
    for value in marks:
        y = TOP + plot_h * (1 - value / scale)
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" class="axis tick">'
                     f'{escape(axis(value, step))}</text>')
    return scale, parts


def stacked_bars(
    chart_id: str,
    title: str,
    days: Sequence[str],
    series: Sequence[str],
    value: Callable[[str, str], int],
    show: Show,
    axis: Axis | None = None,
    notes: Mapping[str, str] | None = None,
    empty: str = "No usage in this period",
) -> str:
    """A stacked daily bar chart: one bar per day, one segment per series; ``notes`` follow series' names
    in the legend (a cost chart says which series are unpriced, as they draw no bar); ``empty`` is said
    when there is no bar at all."""
    look = styles(series)
    totals = [sum(max(value(day, s), 0) for s in series) for day in days]
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    scale, grid = _y_axis(max(totals, default=0), plot_h, axis or (lambda v, step: show(v)))
    step = plot_w / max(len(days), 1)
    bar_w = max(step * 0.7, 1)
    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
              f'aria-labelledby="{chart_id}-title" class="chart" id="{chart_id}">'),
             f'<title id="{chart_id}-title">{escape(title)}</title>',
             "<defs>" + "".join(pattern_def(look[s], chart_id, s) for s in series) + "</defs>", *grid]
    if not any(totals):
        parts.append(f'<text x="{LEFT + plot_w / 2:.1f}" y="{TOP + plot_h / 2:.1f}" text-anchor="middle" '
                     f'class="empty">{escape(empty)}</text>')
    label_every = max(1, len(days) // 8)
    for i, day in enumerate(days):
        x = LEFT + i * step + (step - bar_w) / 2
        y = TOP + plot_h
        for name in series:
            amount = max(value(day, name), 0)
            if not amount:
                continue
            h = plot_h * amount / scale
            y -= h
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                         f'fill="url(#{look[name].ident(chart_id)})" stroke="#333" stroke-width="0.5" '
                         f'data-series="{escape(name)}"><title>{escape(day)}, {escape(name)}: '
                         f'{escape(show(amount))}</title></rect>')
        if i % label_every == 0:
            parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" '
                         f'class="axis">{escape(day[5:])}</text>')
    parts.append("</svg>")
    return "".join(parts) + legend(chart_id, series, look, notes or {})


def legend(chart_id: str, series: Sequence[str], look: Mapping[str, Style], notes: Mapping[str, str]) -> str:
    """The series' names beside swatches showing their colour and pattern."""
    items = []
    for name in series:
        note = f' <span class="note">({escape(notes[name])})</span>' if notes.get(name) else ""
        style = look[name]
        prefix = f"{chart_id}-legend"
        items.append(f'<li data-series="{escape(name)}" data-colour="{style.colour}" data-pattern="{style.pattern}">'
                     f'<svg width="18" height="14" aria-hidden="true" focusable="false">'
                     f'<defs>{pattern_def(style, prefix, name)}</defs>'
                     f'<rect width="18" height="14" fill="url(#{style.ident(prefix)})" stroke="#333"/></svg> '
                     f'<span class="name">{escape(name)}</span>{note}</li>')
    return f'<ul class="legend" aria-label="Legend">{"".join(items)}</ul>'


def horizontal_bars(chart_id: str, title: str, rows: Sequence[Mapping[str, object]], label: str, measure: str,
                    text: Callable[[Mapping[str, object]], str]) -> str:
    """One bar per row (a user, a charge type, an account), longest first as given; ``text`` says a row's figure
    (a cost may read "unpriced", which its amount alone cannot tell)."""
    height = 24 * max(len(rows), 1) + 10
    top = max((int(r[measure]) for r in rows), default=0) or 1  # type: ignore[call-overload]
    fill = BAR_STYLE.ident(chart_id)
    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" role="img" '
              f'aria-labelledby="{chart_id}-title" class="chart bars" id="{chart_id}">'),
             f'<title id="{chart_id}-title">{escape(title)}</title>',
             "<defs>" + pattern_def(BAR_STYLE, chart_id, "") + "</defs>"]
    for i, row in enumerate(rows):
        amount = max(int(row[measure]), 0)  # type: ignore[call-overload]
        width = (WIDTH - BARS_LEFT - BARS_LABEL_ROOM) * amount / top
        name = escape(str(row[label]) if row[label] not in (None, "") else "(none)")
        y = 5 + i * 24
        parts.append(f'<text x="150" y="{y + 15}" text-anchor="end" class="axis">{name}</text>')
        parts.append(f'<rect x="{BARS_LEFT}" y="{y}" width="{width:.1f}" height="18" fill="url(#{fill})" '
                     f'stroke="#333" stroke-width="0.5"><title>{name}: {escape(text(row))}</title></rect>')
        parts.append(f'<text x="{BARS_LEFT + width + 6:.1f}" y="{y + 14}" class="axis">{escape(text(row))}</text>')
    parts.append("</svg>")
    return "".join(parts)
