"""What a charge, a reversal or a rollup group counts: the figures summed per day.

One place turns a stored event's state into its figures, so the projector,
compaction, the audit and repricing cannot disagree on them. A charge
recorded without a price (or before prices existed) counts as unpriced and
adds no cost; a reversal takes back exactly what its charge added.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: The figures of a daily billing record, in column order.
MEASURES = (
    "charges",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost_micros",
    "unpriced_charges",
)
Figures = tuple[int, int, int, int, int, int]
ZERO: Figures = (0, 0, 0, 0, 0, 0)


def charge_figures(state: Mapping[str, Any]) -> Figures:
    """What a charge adds (its reversal takes the same away); the projector's hot path."""
    cost = state.get("cost_micros")
    if cost is None:
        return (1, state["prompt_tokens"], state["completion_tokens"], state["total_tokens"], 0, 1)
    return (1, state["prompt_tokens"], state["completion_tokens"], state["total_tokens"], cost, 0)


def event_figures(state: Mapping[str, Any], sign: int) -> Figures:
    """A charge's figures (``sign`` 1) or its reversal's (``sign`` -1)."""
    figures = charge_figures(state)
    return figures if sign > 0 else tuple(-value for value in figures)  # type: ignore[return-value]


def group_figures(group: Mapping[str, Any]) -> Figures:
    """A rollup group's figures; groups written before costs existed were all unpriced."""
    priced = "cost_micros" in group
    return (
        group["charges"],
        group["prompt_tokens"],
        group["completion_tokens"],
        group["total_tokens"],
        group["cost_micros"] if priced else 0,
        group["unpriced_charges"] if priced else group["charges"],
    )


def add(into: list[int], figures: Figures) -> None:
    """Accumulate ``figures`` into a running list of the same shape."""
    for i, value in enumerate(figures):
        into[i] += value
