"""Many writer processes at once on PostgreSQL, against the database's own limit.

Every row here is compared with the raw limit of the same run: as many
processes, each committing one plain INSERT at a time (PostgreSQL flushes
concurrent commits together, so this is several times the one-process
rate). Against it: the replaced CRUD design under the same load, the ledger
over many accounts, the ledger with every writer on one account, the
previous release's append under the log lock (the rejected design) on both,
and how far a projector running alongside falls behind.

The kinds take turns twice in mirrored order (ABC…CBA; once with
``--quick`` or ``turns=1``), so a machine that slows down during the run weighs on all of
them alike. SQLite has one writer
by nature: the scenario reports nothing there.
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import Sequence

from bench import baselines, writers
from bench.checks import check_recorded
from bench.limit import expect_rows
from bench.recording import open_accounts
from bench.context import Context
from bench.rows import POSTGRESQL, Inconsistent, Row, Target, at_least, summed
from bench.stores import engine_for
from bench.workload import account_ids, charges, raw_event_rows, tally_of
from ledger import Ledger

RAW_PROCESSES = "raw-processes"

MANY_TARGET = at_least(0.60, "≥ 60% of raw, same processes")
HOT_TARGET = at_least(0.50, "≥ 50% of raw, same processes")
LAG_TARGET = Target(
    "projector lag < 1 s", lambda row: row.extra["lag_max_s"] < 1.0, (POSTGRESQL,)
)

#: A projector's pause between runs when it found nothing to do, as a follower would poll.
PROJECTOR_POLL = 0.05


def scaling(ctx: Context) -> list[Row]:
    """Raw, CRUD, the ledger on many accounts and on one, from N processes each; then lag."""
    if ctx.kind != POSTGRESQL:
        return []  # one writer at a time by nature: the single and batch rows say it all
    sizes = ctx.sizes
    n = sizes.writers
    many, hot = account_ids(sizes.accounts), account_ids(1)
    per = sizes.scaling_per_writer
    kinds = ["raw", "crud", "many", "hot", "locked-many", "locked-hot"]
    done: dict[str, list[tuple[int, float]]] = {kind: [] for kind in kinds}
    cpu = {kind: writers.CpuUse() for kind in kinds}
    orders = ctx.turns(kinds)
    for turn, order in enumerate(orders):
        for kind in order:
            ctx.log(f"{n} {kind} writer processes (turn {turn + 1})")
            if kind in ("raw", "crud"):
                done[kind].append(_inserts(ctx, kind, n * per, many, f"{kind}{turn}", cpu[kind]))
            else:
                accounts = hot if kind.endswith("hot") else many
                writer = "locked" if kind.startswith("locked") else "ledger"
                done[kind].append(_ledger(ctx, n, per, accounts, f"{kind}{turn}", writer, cpu[kind]))
    rejected = "rejected design, for comparison"
    raw = Row(f"raw INSERT, 1 row/commit, {n} processes", ctx.kind, *summed(done["raw"]), "rows", key=RAW_PROCESSES,
              note=cpu["raw"].note("row"))
    rows = [
        raw,
        Row(f"CRUD insert, 1 charge/commit, {n} processes", ctx.kind, *summed(done["crud"]),
            note=cpu["crud"].note("charge")).against(raw),
        Row(f"record_charge, {n} processes, {len(many)} accounts", ctx.kind, *summed(done["many"]),
            target=MANY_TARGET, note=cpu["many"].note("charge")).against(raw),
        Row(f"record_charge, {n} processes, 1 account", ctx.kind, *summed(done["hot"]),
            target=HOT_TARGET, note=cpu["hot"].note("charge")).against(raw),
        Row(f"previous release (append under the log lock), {n} processes, {len(many)} accounts", ctx.kind,
            *summed(done["locked-many"]), note=f"{rejected}; {cpu['locked-many'].note('charge')}").against(raw),
        Row(f"previous release (append under the log lock), {n} processes, 1 account", ctx.kind,
            *summed(done["locked-hot"]), note=f"{rejected}; {cpu['locked-hot'].note('charge')}").against(raw),
    ]
    rows.append(_lag(ctx, n, per, many).against(raw))
    return rows


def _inserts(
    ctx: Context, kind: str, count: int, accounts: Sequence[str], name: str, cpu: writers.CpuUse | None = None
) -> tuple[int, float]:
    """Plain INSERT-per-commit writers: raw event rows, or the replaced design's charge rows."""
    items = list(charges(name, count, accounts))
    data = raw_event_rows(items) if kind == "raw" else items
    with ctx.fresh(name) as url:
        engine = engine_for(url)
        try:
            baselines.create_tables(engine)
            written, seconds = writers.in_processes(url, writers.split(data, ctx.sizes.writers), kind=kind, cpu=cpu)
            expect_rows(engine, count, baselines.raw_events if kind == "raw" else baselines.crud_charge)
        finally:
            engine.dispose()
    if written != count:
        raise Inconsistent(f"{kind}: {written} written, {count} sent")
    return written, seconds


def _ledger(
    ctx: Context, n: int, per: int, accounts: Sequence[str], name: str, writer: str = "ledger",
    cpu: writers.CpuUse | None = None,
) -> tuple[int, float]:
    """``record_charge`` from ``n`` processes; the result is checked through a fresh ledger."""
    items = list(charges(name, n * per, accounts))
    with ctx.fresh(name) as url:
        expected = open_accounts(url, accounts, name)
        written, seconds = writers.in_processes(url, writers.split(items, n), kind=writer, cpu=cpu)
        expected.merge(tally_of(items))
        check_recorded(url, accounts, expected)
    return written, seconds


class _Follower:
    """A projector running beside the writers, as ``ledger project`` in a loop would.

    Each run first sequences every charge acknowledged before it began, then
    projects the log to its end. So a charge acknowledged after run i-1 began
    is projected once run i ends: ``end(i) - start(i-1)`` bounds the lag of
    every charge acknowledged in between. The bound is what is reported.
    """

    def __init__(self, ledger: Ledger) -> None:
        from projections import Projector

        self.projector = Projector(ledger)
        self.projector.prepare()
        self.runs: list[tuple[float, float, int]] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="bench-follower", daemon=True)

    def _loop(self) -> None:
        while not self.stopping.is_set():
            began = time.monotonic()
            applied = self.projector.run()
            self.runs.append((began, time.monotonic(), applied))
            if not applied:
                self.stopping.wait(PROJECTOR_POLL)

    def lag_bounds(self, since: float, until: float) -> list[float]:
        """Per run that ended while the writers ran: the bound on its charges' lag."""
        bounds = []
        for previous, current in zip(self.runs, self.runs[1:]):
            if since <= current[1] <= until:
                bounds.append(current[1] - previous[0])
        return bounds


def _lag(ctx: Context, n: int, per: int, accounts: Sequence[str]) -> Row:
    """The ledger on many accounts again, with a projector following it in this process."""
    items = list(charges("lag", n * per, accounts))
    with ctx.fresh("lag") as url:
        expected = open_accounts(url, accounts, "lag")
        ledger = Ledger.from_url(url)
        try:
            follower = _Follower(ledger)
            follower.thread.start()
            began = time.monotonic()
            written, seconds = writers.in_processes(url, writers.split(items, n))
            ended = time.monotonic()
            follower.stopping.set()
            follower.thread.join()
            follower.projector.run()
            bounds = follower.lag_bounds(began, ended)
        finally:
            ledger.close()
        expected.merge(tally_of(items))
        check_recorded(url, accounts, expected)
    bounds = bounds or [float("nan")]
    p50, worst = statistics.median(bounds), max(bounds)
    return Row(
        f"projector lag, {n} writer processes at full speed", ctx.kind, written, seconds,
        target=LAG_TARGET, extra={"lag_p50_s": p50, "lag_max_s": worst},
        note=f"lag ≤ {p50 * 1000:.0f} ms (median of {len(bounds)} runs), ≤ {worst * 1000:.0f} ms (worst)",
    )
