"""Start a consumer from code: what ``ledger worker`` runs.

The defaults differ from ``huey_consumer``'s where the ledger needs it:

* two worker threads and the periodic schedule on;
* SIGTERM (what systemd, Docker and Kubernetes send) is the *graceful*
  signal: running tasks finish; if they take longer than
  ``shutdown_timeout`` seconds they are interrupted and put back on the
  queue (so is any task interrupted by SIGINT);
* stale locks are flushed at start (the aggregation lock also expires one
  lease after a killed holder stopped renewing it);
* a warning at start when the queue's Redis keeps nothing on disk (see
  :mod:`jobs.broker`).

The caller may hand over the process's settings (``ledger worker`` does:
its options and the environment); they are installed (:mod:`jobs.runtime`)
before the queue is opened. Otherwise the environment's are read on first use.
"""

from __future__ import annotations

import logging
import sys
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from huey.api import Huey

from jobs import runtime
from jobs.aggregation import AGGREGATE_SCHEDULE
from jobs.broker import durability_warning
from jobs.queue import describe, huey

if TYPE_CHECKING:
    from ledger.settings import ProcessSettings

LOG_FORMAT = "[%(asctime)s] %(levelname)s %(process)d %(threadName)s %(name)s: %(message)s"


def configure_logging(verbose: bool = False) -> None:
    """Log the consumer's and the tasks' messages to stderr (once)."""
    level = logging.DEBUG if verbose else logging.INFO
    for name in ("huey", "jobs"):
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if not logger.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter(LOG_FORMAT))
            logger.addHandler(handler)
            logger.propagate = False


def banner(instance: Huey | None = None, periodic: bool = True) -> str:
    """Where the queue lives and when the daily job runs next, for the operator."""
    instance = instance or huey
    lines = [f"queue: {describe(instance)}"]
    if periodic:
        now = datetime.now(timezone.utc)
        upcoming = AGGREGATE_SCHEDULE.next_runs(now, count=1)
        when = (
            f"next {upcoming[0].astimezone(AGGREGATE_SCHEDULE.zone).isoformat()}"
            if upcoming
            else "never (the crontab matches no date)"
        )
        lines.append(
            f"daily aggregation: {AGGREGATE_SCHEDULE.expression!r} in "
            f"{AGGREGATE_SCHEDULE.zone.key}, {when}"
        )
    else:
        lines.append("periodic tasks: off (another consumer must run them)")
    return "\n".join(lines)


def run_worker(
    workers: int = 2,
    periodic: bool = True,
    *,
    worker_type: str = "thread",
    flush_locks: bool = True,
    graceful_signal: str = "TERM",
    shutdown_timeout: float | None = 20.0,
    verbose: bool = False,
    instance: Huey | None = None,
    settings: ProcessSettings | None = None,
    **consumer_options: Any,
) -> None:
    """Run a consumer in this process until it is told to stop (blocks).

    Must be called from the main thread (it installs signal handlers). The
    caller shows :func:`banner` if it wants to (``ledger worker`` does).
    ``settings``, when given, are installed first (:func:`jobs.runtime.install`).
    ``consumer_options`` go to :class:`huey.consumer.Consumer` as they are.
    """
    if settings is not None:
        runtime.install(settings)
    instance = instance or huey
    configure_logging(verbose)
    warning = durability_warning(instance)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    consumer = instance.create_consumer(
        workers=workers,
        periodic=periodic,
        worker_type=worker_type,
        flush_locks=flush_locks,
        graceful_signal=graceful_signal,
        shutdown_timeout=shutdown_timeout,
        **consumer_options,
    )
    consumer.run()


if __name__ == "__main__":
    print(banner(), flush=True)
    run_worker()
