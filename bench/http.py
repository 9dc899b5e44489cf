"""The HTTP API: ``POST /v1/charges`` from N concurrent clients against a real ``ledger serve``.

The yardstick is in-process ``record_charge`` from N threads sharing one
Ledger, on the same store in the same run: the two take turns in blocks
(see :mod:`bench.pairing`) so drift hits both alike. The server is a
``ledger serve`` subprocess (one uvicorn worker) on a free loopback port;
each client is a thread with its own keep-alive connection, waiting for
each answer (a receipt means durable) before its next charge. Latency is
per call on both sides: p50 and p99.

Bounded: the count comes from the sizes, every request has a timeout,
and the server is stopped whatever happens.
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

from bench.checks import check_recorded
from bench.context import Context
from bench.pairing import alternate, blocks_of
from bench.processes import Forked, Process, hang_up, run_cli, stop
from bench.recording import open_accounts
from bench.rows import POSTGRESQL, SQLITE, Inconsistent, Row, at_least, missing
from bench.workload import account_ids, charges, tally_of
from ledger import Ledger

HTTP_TARGET = at_least(0.5, ">= 0.5x in-process record_charge", (POSTGRESQL, SQLITE))
#: Seconds the server may take to start, and one request to be answered.
STARTUP_SECONDS = 60.0
REQUEST_SECONDS = 30.0
#: Seconds between two looks at a starting server's /healthz.
READY_POLL = 0.02
TURNS = 4


def http_api(ctx: Context) -> list[Row]:
    clients = ctx.sizes.writers
    name = f"POST /v1/charges, {clients} HTTP clients (ledger serve)"
    try:
        import httpx  # noqa: F401

        from ledger_service.keys import create_key
    except ImportError as exc:
        return [missing(name, ctx.kind, exc.name or "ledger_service")]
    accounts = account_ids(ctx.sizes.accounts)
    count = clients * ctx.sizes.concurrent_per_writer
    over_http = [_as_json(item) for item in charges("http", count, accounts)]
    in_process = list(charges("inproc", count, accounts))
    with ctx.fresh("http") as url, _serving(url, fork=ctx.sizes.fork_starts) as server:
        expected = open_accounts(url, accounts, "http")
        ledger = Ledger.from_url(url)
        try:
            key = create_key(ledger, "admin", name="benchmark")[1]
            for account in accounts:
                ledger.account_totals(account)
            http_latency: list[float] = []
            local_latency: list[float] = []
            post = _poster(server.url(), key)
            blocks = list(zip(blocks_of(count, _block(count)), blocks_of(count, _block(count))))
            http_seconds, local_seconds = alternate([
                (partial(_concurrently, post, over_http, b1, clients, http_latency),
                 partial(_concurrently, lambda item: ledger.record_charge(**item), in_process, b2, clients,
                         local_latency))
                for b1, b2 in blocks
            ])
            server.hang_up()  # every request was answered: it stops while the results are checked
        finally:
            ledger.close()
        expected.merge(tally_of(over_http))
        expected.merge(tally_of(in_process))
        check_recorded(url, accounts, expected)
    local = Row(f"record_charge in process, {clients} threads", ctx.kind, count, local_seconds,
                note=_latency(local_latency), key="http-inprocess")
    served = Row(name, ctx.kind, count, http_seconds, target=HTTP_TARGET, note=_latency(http_latency))
    return [local, served.against(local)]


def _block(count: int) -> int:
    return max(1, -(-count // TURNS))


def _as_json(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in item.items()}


def _concurrently(call: Callable[[dict[str, Any]], Any], items: Sequence[dict[str, Any]], block: range,
                  clients: int, latencies: list[float]) -> float:
    """Seconds for ``clients`` threads to make ``call`` on the block's items, dealt round-robin."""
    shares = [list(block)[i::clients] for i in range(clients)]
    barrier = threading.Barrier(len(shares) + 1)
    failures: queue.Queue[BaseException] = queue.Queue()

    def run(share: list[int]) -> None:
        barrier.wait()
        try:
            for index in share:
                began = time.perf_counter()
                call(items[index])
                latencies.append(time.perf_counter() - began)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            failures.put(exc)

    threads = [threading.Thread(target=run, args=(share,), daemon=True) for share in shares]
    for thread in threads:
        thread.start()
    barrier.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - began
    if not failures.empty():
        raise failures.get()
    return seconds


def _poster(base_url: str, key: str) -> Callable[[dict[str, Any]], None]:
    """POST one charge on this thread's own keep-alive connection; anything but 201 is inconsistent.

    The standard library's client: the lightest there is, so the figures are the server's.
    """
    host, port = base_url.removeprefix("http://").split(":")
    local = threading.local()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def post(item: dict[str, Any]) -> None:
        connection = getattr(local, "connection", None)
        if connection is None:
            connection = local.connection = http.client.HTTPConnection(host, int(port), timeout=REQUEST_SECONDS)
        connection.request("POST", "/v1/charges", body=json.dumps(item), headers=headers)
        answer = connection.getresponse()
        body = answer.read()
        if answer.status != 201:
            raise Inconsistent(f"POST /v1/charges answered {answer.status}: {body[:200]!r}")

    return post


class Serving:
    """A ``ledger serve`` subprocess on a free loopback port, started at once.

    Its start-up (a new interpreter importing the service) runs while the
    scenario sets up; :meth:`url` waits until it answers ``/healthz``.
    ``fork``: the same command in a child of the bench's fork server, which
    imported the service once (``Sizes.fork_starts``).
    """

    def __init__(self, database_url: str, *, fork: bool = False) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.log = tempfile.NamedTemporaryFile(mode="w+", prefix="ledger-bench-serve-", suffix=".log")
        arguments = ["--database-url", database_url, "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        self.process: Process
        if fork:  # the same command, from the fork server that imported the service already
            self.process = Forked(run_cli, (arguments, {**os.environ}, self.log.name))
        else:
            self.process = subprocess.Popen([sys.executable, "-m", "ledger_service.cli", *arguments],
                                            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ}, text=True)
        self.deadline = time.monotonic() + STARTUP_SECONDS
        self.ready = False

    def url(self) -> str:
        """The server's base URL, once it answers."""
        while not self.ready:
            if self.process.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"ledger serve exited: {self.log.read()[-500:]}")
            self.ready = _healthy(self.port)
            if not self.ready and time.monotonic() > self.deadline:
                raise TimeoutError("ledger serve did not answer /healthz")
            if not self.ready:
                time.sleep(READY_POLL)
        return f"http://127.0.0.1:{self.port}"

    def hang_up(self) -> None:
        """Tell it to stop (a graceful stop) and go on; :meth:`close` waits until it has."""
        hang_up(self.process)

    def close(self) -> None:
        """Stop it (a graceful stop: every request it took is answered first); again does nothing."""
        if not self.log.closed:
            stop(self.process)
            self.log.close()


@contextmanager
def _serving(database_url: str, *, fork: bool = False) -> Iterator[Serving]:
    """``ledger serve`` starting now (forked: see :class:`Serving`), stopped when the block ends."""
    server = Serving(database_url, fork=fork)
    try:
        yield server
    finally:
        server.close()


def _healthy(port: int) -> bool:
    """Whether the server on ``port`` answers ``/healthz`` with 200 (a refused connection: not yet)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", "/healthz")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def _latency(seconds: list[float]) -> str:
    if not seconds:
        return ""
    ordered = sorted(seconds)
    p50 = ordered[len(ordered) // 2]
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"
