"""Waiting before a retry: full jitter, capped, so racing writers spread out and one wins quickly."""

from __future__ import annotations

import random
import time


def backoff(attempt: int) -> None:
    """Sleep a random time below 1 ms * 2**attempt, at most 50 ms."""
    time.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))
