"""Handing a blocking ledger call from the event loop to a worker thread, and back, cheaply.

Starlette's ``run_in_threadpool`` goes through anyio's capacity limiter,
run variables and cancellation scopes: about half a millisecond of the
event loop's time per request on the busiest path, where the loop's time is
what bounds a server's rate. The busiest handlers hand over here instead:
a plain executor, each call in a copy of the caller's context (as anyio
does, so nothing a call sets in a context variable leaks into the next
call on the same thread).
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

#: As many threads as anyio's default limiter allows: enough for every
#: request a group commit can gather at once.
WORKERS = 40

_executor: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        with _lock:
            if _executor is None:
                _executor = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="ledger-http")
    return _executor


async def in_worker(call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``call(*args, **kwargs)`` on a worker thread, awaited without blocking the loop."""
    context = contextvars.copy_context()
    if kwargs:
        return await asyncio.get_running_loop().run_in_executor(
            _pool(), lambda: context.run(call, *args, **kwargs))
    return await asyncio.get_running_loop().run_in_executor(_pool(), context.run, call, *args)
