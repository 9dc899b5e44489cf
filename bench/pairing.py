"""Paired measurement: the ledger and its baseline take turns on the same store.

On a shared machine the disk's fsync latency and the CPU share drift by 2-5x
within minutes, so a baseline measured a minute earlier is a poor yardstick.
Here the sides alternate in blocks (ABBA order, so none always goes first),
in the same database file or schema, and each side's time is the sum of its
blocks: drift hits all sides alike and the ratios stay meaningful.
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


def alternate(turns: Sequence[tuple[Block, ...]]) -> tuple[float, ...]:
    """Seconds of each side summed over the turns: ABBA order for two sides.

    Each turn runs its blocks forwards, the next backwards (A B, B A, ...; for
    three sides A B C, C B A, ...), so no side always goes first or last.
    """
    totals = [0.0] * (len(turns[0]) if turns else 0)
    for index, blocks in enumerate(turns):
        order = range(len(blocks)) if index % 2 == 0 else reversed(range(len(blocks)))
        for side in order:
            totals[side] += _timed(blocks[side])
    return tuple(totals)


def blocks_of(count: int, size: int) -> list[range]:
    """Index ranges of ``size`` covering ``count`` items."""
    return [range(start, min(start + size, count)) for start in range(0, count, size)]
