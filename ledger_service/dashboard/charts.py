"""Charts as server-side SVG: no script, no network, readable without colour.

Each series has a colour from a colour-blind-safe palette *and* a fill
pattern of its own, its name in the legend, and every bar segment a
``<title>`` with its date, series and value (screen readers and tooltips).
The data is also in a table under each chart.
"""

from __future__ import annotations

from html import escape
from typing import Callable, Mapping, Sequence

#: Okabe-Ito colours, distinguishable with the common colour-vision deficiencies.
COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
#: Pattern drawn over each colour (index by series), so no series relies on colour alone.
PATTERNS = ("solid", "diagonal", "dots", "horizontal", "cross", "vertical", "backslash", "grid")

WIDTH, HEIGHT = 760, 260
LEFT, RIGHT, TOP, BOTTOM = 70, 10, 10, 40


def _pattern(index: int, prefix: str) -> str:
    colour, kind = COLOURS[index % len(COLOURS)], PATTERNS[index % len(PATTERNS)]
    ident = f"{prefix}-p{index}"
    marks = {
        "solid": "",
        "diagonal": '<path d="M0,8 L8,0" stroke="#fff" stroke-width="2"/>',
        "backslash": '<path d="M0,0 L8,8" stroke="#fff" stroke-width="2"/>',
        "dots": '<circle cx="4" cy="4" r="1.6" fill="#fff"/>',
        "horizontal": '<path d="M0,4 L8,4" stroke="#fff" stroke-width="2"/>',
        "vertical": '<path d="M4,0 L4,8" stroke="#fff" stroke-width="2"/>',
        "cross": '<path d="M0,8 L8,0 M0,0 L8,8" stroke="#fff" stroke-width="1.5"/>',
        "grid": '<path d="M0,4 L8,4 M4,0 L4,8" stroke="#fff" stroke-width="1.5"/>',
    }[kind]
    return (f'<pattern id="{ident}" width="8" height="8" patternUnits="userSpaceOnUse">'
            f'<rect width="8" height="8" fill="{colour}"/>{marks}</pattern>')


def stacked_bars(
    chart_id: str,
    title: str,
    days: Sequence[str],
    series: Sequence[str],
    value: Callable[[str, str], int],
    show: Callable[[int], str],
) -> str:
    """A stacked daily bar chart: one bar per day, one segment per series."""
    totals = [sum(max(value(day, s), 0) for s in series) for day in days]
    top = max(totals, default=0) or 1
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = plot_w / max(len(days), 1)
    bar_w = max(step * 0.7, 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
             f'aria-labelledby="{chart_id}-title" class="chart" id="{chart_id}">',
             f'<title id="{chart_id}-title">{escape(title)}</title>',
             "<defs>" + "".join(_pattern(i, chart_id) for i in range(len(series))) + "</defs>"]
    for fraction in (0, 0.5, 1):
        y = TOP + plot_h * (1 - fraction)
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" class="axis">'
                     f'{escape(show(int(top * fraction)))}</text>')
    label_every = max(1, len(days) // 8)
    for i, day in enumerate(days):
        x = LEFT + i * step + (step - bar_w) / 2
        y = TOP + plot_h
        for index, name in enumerate(series):
            amount = max(value(day, name), 0)
            if not amount:
                continue
            h = plot_h * amount / top
            y -= h
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                         f'fill="url(#{chart_id}-p{index})" stroke="#333" stroke-width="0.5">'
                         f'<title>{escape(day)}, {escape(name)}: {escape(show(amount))}</title></rect>')
        if i % label_every == 0:
            parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" '
                         f'class="axis">{escape(day[5:])}</text>')
    parts.append("</svg>")
    return "".join(parts) + legend(chart_id, series)


def legend(chart_id: str, series: Sequence[str]) -> str:
    """The series' names beside swatches showing their colour and pattern."""
    items = []
    for index, name in enumerate(series):
        items.append(f'<li><svg width="18" height="14" aria-hidden="true" focusable="false">'
                     f'<defs>{_pattern(index, chart_id + "-legend")}</defs>'
                     f'<rect width="18" height="14" fill="url(#{chart_id}-legend-p{index})" stroke="#333"/></svg> '
                     f'{escape(name)}</li>')
    return f'<ul class="legend" aria-label="Legend">{"".join(items)}</ul>'


def horizontal_bars(chart_id: str, title: str, rows: Sequence[Mapping[str, object]], label: str, measure: str,
                    show: Callable[[int], str]) -> str:
    """One bar per row (a user, a charge type, an account), longest first as given."""
    height = 24 * max(len(rows), 1) + 10
    top = max((int(r[measure]) for r in rows), default=0) or 1  # type: ignore[call-overload]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" role="img" '
             f'aria-labelledby="{chart_id}-title" class="chart bars" id="{chart_id}">',
             f'<title id="{chart_id}-title">{escape(title)}</title>', "<defs>" + _pattern(1, chart_id) + "</defs>"]
    for i, row in enumerate(rows):
        amount = max(int(row[measure]), 0)  # type: ignore[call-overload]
        width = (WIDTH - 260) * amount / top
        name = escape(str(row[label]) if row[label] not in (None, "") else "(none)")
        y = 5 + i * 24
        parts.append(f'<text x="150" y="{y + 15}" text-anchor="end" class="axis">{name}</text>')
        parts.append(f'<rect x="160" y="{y}" width="{width:.1f}" height="18" fill="url(#{chart_id}-p1)" '
                     f'stroke="#333" stroke-width="0.5"><title>{name}: {escape(show(amount))}</title></rect>')
        parts.append(f'<text x="{160 + width + 6:.1f}" y="{y + 14}" class="axis">{escape(show(amount))}</text>')
    parts.append("</svg>")
    return "".join(parts)
