"""``POST /v1/charges`` driven by ``wrk``, the lightest HTTP client there is, against in-process ``record_charge``.

On a 2-core machine the client shares the cores with the server and the
database: the Python client of :mod:`bench.http` costs about 0.2 ms of CPU
per request, more than an in-process ``record_charge`` itself, and that
time is taken from the server. ``wrk`` (C, Debian's package) costs a tenth
of it, so this row measures the server as a gateway on another machine would
see it. Both rows are reported; neither replaces the other.

Turns alternate (in process, then ``wrk``, then ``wrk``, then in process, ...):
the in-process side records a fixed count from 8 threads; ``wrk`` posts from
8 keep-alive connections for a fixed time, each connection its own share of
pre-made charges (:file:`wrk_post.lua`). Consistency: every charge ``wrk``
had answered is recorded, nothing it did not generate is, and the account
totals equal what both sides recorded.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.checks import check_recorded, index_ids
from bench.context import Context
from bench.http import HTTP_TARGET, _as_json, _concurrently, _latency, _serving
from bench.recording import open_accounts
from bench.rows import Inconsistent, Row
from bench.workload import account_ids, charges, tally_of
from ledger import Ledger

SCRIPT = Path(__file__).with_name("wrk_post.lua")
#: Turns and seconds of each wrk turn (fewer and shorter for the small sizes of a smoke test), and
#: the charges made ready per second of a turn (more than any server here takes).
TURNS, SMOKE_TURNS = 4, 2
WRK_SECONDS, SMOKE_WRK_SECONDS = 2, 1
SMOKE_BELOW = 100
WRK_CHARGES_PER_SECOND = 6_000
PREFIX = "wrk"


def http_api_wrk(ctx: Context) -> list[Row]:
    clients = ctx.sizes.writers
    name = f"POST /v1/charges, {clients} wrk connections (ledger serve)"
    wrk = shutil.which("wrk")
    if wrk is None:
        return [Row(name, ctx.kind, note="n/a: wrk is not installed (Debian: apt-get install wrk)")]
    accounts = account_ids(ctx.sizes.accounts)
    smoke = ctx.sizes.concurrent_per_writer < SMOKE_BELOW
    turns, seconds_each = (SMOKE_TURNS, SMOKE_WRK_SECONDS) if smoke else (TURNS, WRK_SECONDS)
    seconds_each = min(seconds_each, ctx.sizes.wrk_seconds)
    per_turn = max(1, clients * ctx.sizes.concurrent_per_writer // turns)
    ready = WRK_CHARGES_PER_SECOND * math.ceil(seconds_each)
    with (ctx.fresh("http-wrk") as url, _serving(url, fork=ctx.sizes.fork_starts) as server,
          tempfile.TemporaryDirectory() as scratch):
        expected = open_accounts(url, accounts, "http-wrk")
        ledger = Ledger.from_url(url)
        made: dict[str, dict[str, Any]] = {}
        local_seconds, local_count, local_latency = 0.0, 0, []
        wrk_seconds, answered, wrk_latency = 0.0, 0, []
        try:
            from ledger_service.keys import create_key

            key = create_key(ledger, "admin", name="benchmark")[1]
            base_url = server.url()
            for turn in range(turns):
                items = list(charges(f"inproc{turn}", per_turn, accounts))
                bodies = [_as_json(item) for item in charges(f"{PREFIX}{turn}", ready, accounts)]
                made.update((body["charge_id"], body) for body in bodies)
                sides = ["local", "wrk"] if turn % 2 == 0 else ["wrk", "local"]
                for side in sides:
                    if side == "local":
                        local_seconds += _concurrently(lambda item: ledger.record_charge(**item), items,
                                                       range(len(items)), clients, local_latency)
                        local_count += len(items)
                        expected.merge(tally_of(items))
                    else:
                        seconds, done, latency = _run_wrk(wrk, base_url, key, bodies, clients, seconds_each,
                                                          Path(scratch))
                        wrk_seconds += seconds
                        answered += done
                        wrk_latency.append(latency)
            server.close()  # a graceful stop: whatever wrk left in flight is recorded before the ids are read
            recorded = index_ids(ledger, PREFIX)
        finally:
            ledger.close()
        unknown = recorded - made.keys()
        if unknown:
            raise Inconsistent(f"{len(unknown)} charges recorded that wrk never generated")
        if len(recorded) < answered:
            raise Inconsistent(f"wrk had {answered} answers but only {len(recorded)} of its charges are recorded")
        expected.merge(tally_of([made[charge_id] for charge_id in recorded]))
        check_recorded(url, accounts, expected)
    local = Row(f"record_charge in process, {clients} threads (turns with wrk)", ctx.kind, local_count,
                local_seconds, note=_latency(local_latency), key="http-wrk-inprocess")
    p50 = max(latency[0] for latency in wrk_latency)
    p99 = max(latency[1] for latency in wrk_latency)
    served = Row(name, ctx.kind, answered, wrk_seconds, target=HTTP_TARGET,
                 note=f"p50 {p50 / 1000:.1f} ms, p99 {p99 / 1000:.1f} ms (worst turn)")
    return [local, served.against(local)]


def _run_wrk(wrk: str, base_url: str, key: str, bodies: Sequence[dict[str, Any]], clients: int,
             seconds_each: float, scratch: Path) -> tuple[float, int, tuple[int, int]]:
    """(seconds, answered requests, (p50 µs, p99 µs)) of one wrk turn; every answer a 2xx."""
    path = scratch / "bodies.jsonl"
    path.write_text("".join(json.dumps(body, separators=(",", ":")) + "\n" for body in bodies))
    env = {**os.environ, "WRK_BODIES": str(path), "WRK_KEY": key, "WRK_THREADS": str(clients)}
    command = [wrk, f"-t{clients}", f"-c{clients}", f"-d{math.ceil(seconds_each)}s", "--latency", "-s", str(SCRIPT),
               base_url]
    returncode, stdout, stderr = _wrk_for(command, env, seconds_each)
    if returncode != 0:
        raise RuntimeError(f"wrk failed ({returncode}): {stderr.strip()[-300:]}")
    done = re.search(r"(\d+) requests in ([\d.]+)(m?s)", stdout)
    if done is None:
        raise RuntimeError(f"wrk's summary not found: {stdout[-300:]}")
    failed = re.search(r"Non-2xx or 3xx responses: (\d+)", stdout)
    if failed is not None:
        raise Inconsistent(f"wrk got {failed.group(1)} answers other than 2xx")
    errors = re.search(r"Socket errors: (.*)", stdout)
    if errors is not None and "timeout 0" not in errors.group(1):
        raise Inconsistent(f"wrk socket errors: {errors.group(1)}")
    report = json.loads(stdout.strip().splitlines()[-1])
    share = -(-len(bodies) // clients)
    if max(report["generated"]) >= share:
        raise Inconsistent("wrk ran out of charges: raise WRK_CHARGES_PER_SECOND")
    seconds = float(done.group(2)) / (1000 if done.group(3) == "ms" else 1)
    return seconds, int(done.group(1)), (report["p50_us"], report["p99_us"])



def _wrk_for(command: list[str], env: dict[str, str], seconds: float) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of wrk run for ``seconds``.

    ``-d`` counts whole seconds, so a shorter turn is ended by SIGINT, which wrk
    takes as "stop now and report" (its summary then gives the time it really ran).
    A SIGINT that comes before wrk listens for it is ignored: the turn runs its whole second.
    """
    limit = math.ceil(seconds) * 10 + 30
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        if seconds < math.ceil(seconds):
            try:
                process.wait(timeout=seconds)
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGINT)
        try:
            stdout, stderr = process.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    return process.returncode, stdout, stderr
