"""Waiting before a retry: full jitter, capped, so racing writers spread out and one wins quickly;
and longer, growing pauses while the database fails over."""

from __future__ import annotations

import random
import time


def backoff(attempt: int) -> None:
    """Sleep a random time below 1 ms * 2**attempt, at most 50 ms."""
    time.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))


#: Waits between attempts while the database fails over: from 50 ms, doubling, at most this.
FAILOVER_PAUSE_MAX = 1.0


def failover_pause(attempt: int, left: float) -> None:
    """Sleep before attempt ``attempt + 1`` through a failover: jittered, growing to a second, within ``left``.

    Short at first (a dropped connection usually reconnects at once), then
    about a second, so writers waiting for a promotion do not hammer the hosts.
    """
    ceiling = min(FAILOVER_PAUSE_MAX, 0.05 * 2**attempt)
    time.sleep(max(0.0, min(left, random.uniform(ceiling / 2, ceiling))))
