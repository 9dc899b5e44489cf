"""Paired measurement: the ledger and its baseline take turns on the same store.

On a shared machine the disk's fsync latency and the CPU share drift by 2-5x
within minutes, so a baseline measured a minute earlier is a poor yardstick.
Here the two alternate in blocks (ABBA order, so neither always goes first),
in the same database file or schema, and each side's time is the sum of its
blocks: drift hits both sides alike and the ratio stays meaningful.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

Block = Callable[[], float | None]


def _timed(block: Block) -> float:
    """Seconds a block took: what it reports, or wall time around it."""
    began = time.perf_counter()
    reported = block()
    return reported if reported is not None else time.perf_counter() - began


def alternate(pairs: Sequence[tuple[Block, Block]]) -> tuple[float, float]:
    """(seconds of all first blocks, seconds of all second blocks), run in ABBA order."""
    first_total = second_total = 0.0
    for index, (first, second) in enumerate(pairs):
        if index % 2 == 0:
            first_total += _timed(first)
            second_total += _timed(second)
        else:
            second_total += _timed(second)
            first_total += _timed(first)
    return first_total, second_total


def blocks_of(count: int, size: int) -> list[range]:
    """Index ranges of ``size`` covering ``count`` items."""
    return [range(start, min(start + size, count)) for start in range(0, count, size)]
