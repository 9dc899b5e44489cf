"""Each series' look (colour and fill pattern): the same on every page, never shared within a chart.

A series' key (``"openai / gpt-4o"``) is hashed (SHA-256, so the same in
every process and release) into one of the 64 slots of palette x patterns;
the key's digest also gives the order in which it tries the other slots
should its own be taken. Within one chart the series claim slots in the
order of their keys, each taking the first free slot of its own order, so
two series never share a fill, and a series keeps its home slot, and so its
look, unless a series sorting before it in the same chart hashed to the
same slot. Colours index fastest: series whose slots differ in colour differ
most. Beyond 64 series in one chart, looks repeat.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from html import escape

#: Okabe-Ito colours, distinguishable with the common colour-vision deficiencies, each with the
#: colour its pattern is drawn in (white on the dark ones, black on the light ones).
COLOURS = (("#0072B2", "#fff"), ("#E69F00", "#000"), ("#009E73", "#fff"), ("#CC79A7", "#000"),
           ("#56B4E9", "#000"), ("#D55E00", "#fff"), ("#F0E442", "#000"), ("#000000", "#fff"))
#: Patterns drawn over each colour, so no series relies on colour alone.
PATTERNS = ("solid", "diagonal", "dots", "horizontal", "cross", "vertical", "backslash", "checker")
SLOTS = len(COLOURS) * len(PATTERNS)
_MARKS = {
    "solid": "",
    "diagonal": '<path d="M0,8 L8,0" stroke="{c}" stroke-width="2"/>',
    "backslash": '<path d="M0,0 L8,8" stroke="{c}" stroke-width="2"/>',
    "dots": '<circle cx="4" cy="4" r="1.6" fill="{c}"/>',
    "horizontal": '<path d="M0,4 L8,4" stroke="{c}" stroke-width="2"/>',
    "vertical": '<path d="M4,0 L4,8" stroke="{c}" stroke-width="2"/>',
    "cross": '<path d="M0,8 L8,0 M0,0 L8,8" stroke="{c}" stroke-width="1.5"/>',
    "checker": '<path d="M0,0 H4 V4 H0 Z M4,4 H8 V8 H4 Z" fill="{c}"/>',
}


@dataclass(frozen=True)
class Style:
    slot: int
    colour: str
    pattern: str
    marks: str

    def ident(self, prefix: str) -> str:
        """The id of this style's ``<pattern>`` under ``prefix`` (a chart's id): unique on a page."""
        return f"{prefix}-s{self.slot}"


def style_of(slot: int) -> Style:
    colour, marks = COLOURS[slot % len(COLOURS)]
    return Style(slot, colour, PATTERNS[slot // len(COLOURS) % len(PATTERNS)], marks)


def probes(key: str) -> Iterator[int]:
    """The slots ``key`` tries, in order: its home slot first, then every other slot once."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
    home = int.from_bytes(digest[:8], "big") % SLOTS
    stride = 2 * (int.from_bytes(digest[8:16], "big") % (SLOTS // 2)) + 1  # odd: visits all 64
    return ((home + n * stride) % SLOTS for n in range(SLOTS))


def home_style(key: str) -> Style:
    return style_of(next(probes(key)))


def styles(series: Sequence[str]) -> dict[str, Style]:
    """Each series' style in one chart: its home slot unless an earlier key took it, never shared."""
    taken: set[int] = set()
    chosen: dict[str, Style] = {}
    for key in sorted(set(series)):
        slot = next((s for s in probes(key) if s not in taken), next(probes(key)))
        taken.add(slot)
        chosen[key] = style_of(slot)
    return chosen


def pattern_def(style: Style, prefix: str, series: str) -> str:
    """The ``<pattern>`` filling a series' shapes: its colour, with its pattern's marks over it."""
    marks = _MARKS[style.pattern].format(c=style.marks)
    return (f'<pattern id="{style.ident(prefix)}" width="8" height="8" patternUnits="userSpaceOnUse" '
            f'data-series="{escape(series)}" data-colour="{style.colour}" data-pattern="{style.pattern}">'
            f'<rect width="8" height="8" fill="{style.colour}"/>{marks}</pattern>')
