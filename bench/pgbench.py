"""PostgreSQL's own ``pgbench`` as the physical limit, and the bare psycopg2 loop beside it.

The raw baseline in :mod:`bench.limit` goes through SQLAlchemy, which is
slower than the database is. Here the same charge-sized row (the raw
baseline's table, a ``ChargeRecorded``-shaped state of the same size) is
inserted one row per transaction by ``pgbench`` itself (a custom script,
``bench/pgbench_raw_insert.sql``, prepared statements), and by the leanest
Python client: psycopg2 in autocommit mode, one INSERT per transaction. Both at 1 client and
at ``writers`` clients (8), taking turns in mirrored order (once with
``--quick`` or ``turns=1``), each on an empty store. The runner then gives every write row
of the run its ratio against both (``bench.runner.compare_with_limits``).

``pgbench`` is looked for in ``LEDGER_BENCH_PGBENCH``, on ``PATH`` and in
``/usr/lib/postgresql/*/bin``; where it is missing, the run stops before it
starts with one line (:class:`PgbenchMissing`).
"""

from __future__ import annotations

import glob
import os
import re
import resource
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping, Sequence

import sqlalchemy as sa

from bench import baselines, writers
from bench.context import Context
from bench.limit import expect_rows
from bench.rows import POSTGRESQL, Inconsistent, Row, summed
from bench.stores import engine_for
from bench.workload import (
    CHARGE_TOPIC,
    account_ids,
    charge,
    charges,
    event_state,
    raw_event_rows,
)

#: Keys of the four limits (the runner compares every write row with them).
PGBENCH_ONE = "pgbench-1"
PGBENCH_MANY = "pgbench-n"
PSYCOPG_ONE = "psycopg-1"
PSYCOPG_MANY = "psycopg-n"

#: The scenarios that run pgbench (checked for before a PostgreSQL run starts).
NEEDS_PGBENCH = ("pgbench", "intake-sql", "wal")

#: A charge id of the same length as the ones the scripts make: "pgb-" and 16 digits.
SAMPLE_CHARGE_ID = "pgb-1000000000000000"
#: pgbench variables the scripts set (names no JSON text can contain after a colon).
CHARGE_ID_EXPR = "('pgb-' || :bench_cid::text)"
ACCOUNT_EXPR = "('acct-' || lpad(:bench_acct::text, 4, '0'))"
HERE = Path(__file__).resolve().parent
RAW_SCRIPT = HERE / "pgbench_raw_insert.sql"


class PgbenchMissing(ValueError):
    """pgbench is not installed (a set-up error: the bench exits 2 with this one line)."""

    def __init__(self) -> None:
        super().__init__(
            "pgbench not found (looked in LEDGER_BENCH_PGBENCH, PATH and /usr/lib/postgresql/*/bin): "
            "install PostgreSQL's server package (Debian: postgresql-15), point LEDGER_BENCH_PGBENCH at it, "
            "or pick scenarios with --only other than " + ", ".join(NEEDS_PGBENCH)
        )


def find_pgbench() -> str | None:
    """The pgbench executable, or None."""
    given = os.environ.get("LEDGER_BENCH_PGBENCH")
    if given is not None:
        return given if os.path.isfile(given) and os.access(given, os.X_OK) else None
    found = shutil.which("pgbench")
    if found:
        return found
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pgbench"), key=_version_key)
    return candidates[-1] if candidates else None


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path))


def require_pgbench() -> str:
    path = find_pgbench()
    if path is None:
        raise PgbenchMissing()
    return path


# -- scripts -----------------------------------------------------------------


def literal(text: str) -> str:
    """A SQL text literal pgbench leaves alone.

    pgbench reads ``:name`` as a variable even inside quotes (JSON and
    timestamps are full of colons), so text holding a colon goes as its UTF-8
    bytes in hex, decoded by the server.
    """
    if ":" not in text and "\\" not in text:
        return "'" + text.replace("'", "''") + "'"
    return f"convert_from('\\x{text.encode().hex()}'::bytea, 'UTF8')"


def text_expression(template: str, substitutions: Mapping[str, str]) -> str:
    """SQL for ``template`` with each key (a sample value) replaced by its SQL expression."""
    if not substitutions:
        return literal(template)
    pattern = "|".join(re.escape(key) for key in sorted(substitutions, key=len, reverse=True))
    parts: list[str] = []
    position = 0
    for match in re.finditer(pattern, template):
        if match.start() > position:
            parts.append(literal(template[position : match.start()]))
        parts.append(substitutions[match.group(0)])
        position = match.end()
    if position < len(template):
        parts.append(literal(template[position:]))
    return "(" + " || ".join(parts) + ")"


def uuid_choice(uuids: Sequence[uuid.UUID]) -> str:
    """SQL picking the stream of account ``:bench_acct`` from a constant array."""
    return "('{" + ",".join(str(u) for u in uuids) + "}'::uuid[])[:bench_acct1::integer]"


def render(path: Path, **values: str) -> str:
    """A script file with its ``@NAME@`` placeholders filled."""
    text = path.read_text()
    for name, value in values.items():
        text = text.replace(f"@{name}@", value)
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise ValueError(f"{path.name}: unfilled placeholders {left}")
    return text


def raw_insert_script(accounts: Sequence[str]) -> str:
    """One raw event row per transaction, its state a charge's (its id and account varying)."""
    item = charge("pgb", 0, account_ids(1), occurred_at=datetime.now(timezone.utc))
    item["charge_id"] = SAMPLE_CHARGE_ID
    state = event_state(item, datetime.now(timezone.utc)).decode()
    (row,) = raw_event_rows([item])
    assert len(state) == len(row["state"])
    return render(
        RAW_SCRIPT,
        LAST_ACCOUNT=str(len(accounts) - 1),
        ORIGINATOR=uuid_choice([uuid.uuid5(uuid.NAMESPACE_URL, f"bench:{a}") for a in accounts]),
        TOPIC=literal(CHARGE_TOPIC),
        STATE=text_expression(state, {SAMPLE_CHARGE_ID: CHARGE_ID_EXPR, item["account_id"]: ACCOUNT_EXPR}),
    )


# -- running -----------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    """One pgbench run: transactions done, their seconds (tps excludes connecting), wall time, and CPU.

    ``client_cpu`` is pgbench's own CPU seconds, ``machine_cpu`` every CPU's
    busy seconds over the run (None where the machine does not say).
    """

    transactions: int
    seconds: float
    wall: float
    clients: int
    client_cpu: float = 0.0
    machine_cpu: float | None = None

    def charge_cpu(self, cpu: writers.CpuUse | None) -> None:
        """Add this run's CPU to ``cpu`` (pgbench in the writers' place)."""
        if cpu is not None:
            cpu.add(self.transactions, self.client_cpu, self.machine_cpu)

    @property
    def rate(self) -> float:
        return self.transactions / self.seconds


def connection_arguments(url: str) -> tuple[list[str], dict[str, str]]:
    """pgbench's connection options for a SQLAlchemy URL (the password through the environment)."""
    parsed = sa.engine.make_url(url)
    args: list[str] = []
    if parsed.host:
        args += ["-h", parsed.host]
    if parsed.port:
        args += ["-p", str(parsed.port)]
    if parsed.username:
        args += ["-U", parsed.username]
    env = dict(os.environ)
    if parsed.password is not None:
        env["PGPASSWORD"] = str(parsed.password)
    host = parsed.query.get("host")
    if host and not parsed.host:
        args += ["-h", host if isinstance(host, str) else host[0]]
    return [*args, parsed.database or "postgres"], env


def run_script(url: str, script: str, *, clients: int, per_client: int, name: str = "script") -> Result:
    """Run ``script`` with ``clients`` clients, ``per_client`` transactions each, prepared statements."""
    pgbench = require_pgbench()
    connection, env = connection_arguments(url)
    threads = max(1, min(clients, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory(prefix="ledger-bench-pgbench-") as folder:
        path = Path(folder) / f"{name}.sql"
        path.write_text(script)
        command = [pgbench, "-n", "-M", "prepared", "-f", str(path), "-c", str(clients), "-j", str(threads),
                   "-t", str(per_client), *connection]
        busy, children = writers.machine_busy(), writers.cpu_seconds(resource.RUSAGE_CHILDREN)
        began = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=3600)
        wall = time.perf_counter() - began
        machine = writers.machine_busy_since(busy)
        client = writers.cpu_seconds(resource.RUSAGE_CHILDREN) - children  # pgbench, now it has exited
    output = done.stdout + done.stderr
    if done.returncode != 0:
        last = [line for line in output.splitlines() if line.strip()][-3:]
        raise RuntimeError(f"pgbench {name} exited {done.returncode}: " + " | ".join(last))
    processed = re.search(r"number of transactions actually processed: (\d+)", output)
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", output)
    failed = re.search(r"number of failed transactions: (\d+)", output)
    if processed is None or tps is None:
        raise RuntimeError(f"pgbench {name}: unexpected output: {output[-300:]!r}")
    count = int(processed.group(1))
    if count != clients * per_client or (failed and int(failed.group(1))):
        raise Inconsistent(f"pgbench {name}: {count} of {clients * per_client} transactions done: {output[-300:]!r}")
    return Result(count, count / float(tps.group(1)), wall, clients, client, machine)


# -- the scenario --------------------------------------------------------------


def pgbench_limit(ctx: Context) -> list[Row]:
    """pgbench and psycopg2, one row per transaction, at 1 client and at ``writers`` clients."""
    if ctx.kind != POSTGRESQL:
        return []
    require_pgbench()
    sizes = ctx.sizes
    n = sizes.writers
    plan = {"pgbench-1": (1, sizes.single), "psycopg-1": (1, sizes.single),
            "pgbench-n": (n, sizes.scaling_per_writer), "psycopg-n": (n, sizes.scaling_per_writer)}
    kinds = list(plan)
    orders = ctx.turns(kinds)
    done: dict[str, list[tuple[int, float]]] = {kind: [] for kind in kinds}
    cpu = {kind: writers.CpuUse() for kind in kinds}
    for turn, order in enumerate(orders):
        for kind in order:
            clients, per = plan[kind]
            ctx.log(f"{kind}: {clients} client(s) x {per:,} rows (turn {turn + 1})")
            tool = pgbench_raw if kind.startswith("pgbench") else psycopg_raw
            done[kind].append(tool(ctx, clients, per, f"{kind}{turn}", cpu[kind]))
    one = Row("pgbench: 1-row INSERT per transaction, 1 client", ctx.kind, *summed(done["pgbench-1"]), "rows",
              key=PGBENCH_ONE, note=_limit_note(cpu["pgbench-1"]))
    many = Row(f"pgbench: 1-row INSERT per transaction, {n} clients", ctx.kind, *summed(done["pgbench-n"]), "rows",
               key=PGBENCH_MANY, note=_limit_note(cpu["pgbench-n"]))
    return [
        one,
        Row("psycopg2: 1-row INSERT per transaction (autocommit), 1 process", ctx.kind, *summed(done["psycopg-1"]), "rows",
            key=PSYCOPG_ONE, note=cpu["psycopg-1"].note("row")).against(one),
        many,
        Row(f"psycopg2: 1-row INSERT per transaction (autocommit), {n} processes", ctx.kind, *summed(done["psycopg-n"]), "rows",
            key=PSYCOPG_MANY, note=cpu["psycopg-n"].note("row")).against(many),
    ]


def _limit_note(cpu: writers.CpuUse) -> str:
    return "; ".join(filter(None, ["the database's limit (custom script, prepared)", cpu.note("row", "pgbench")]))


def pgbench_raw(
    ctx: Context, clients: int, per: int, name: str, cpu: writers.CpuUse | None = None
) -> tuple[int, float]:
    """(rows, seconds): the raw-insert script through pgbench on an empty store; the rows are counted."""
    script = raw_insert_script(account_ids(ctx.sizes.accounts))
    with ctx.fresh(name) as url:
        engine = engine_for(url)
        try:
            baselines.create_tables(engine)
            result = run_script(url, script, clients=clients, per_client=per, name=name)
            expect_rows(engine, result.transactions)
            result.charge_cpu(cpu)
        finally:
            engine.dispose()
    return result.transactions, result.seconds


def psycopg_raw(
    ctx: Context, clients: int, per: int, name: str, cpu: writers.CpuUse | None = None
) -> tuple[int, float]:
    """(rows, seconds): psycopg2 1-row INSERT transactions (autocommit) from ``clients`` processes, on an empty store."""
    rows = raw_event_rows(list(charges(name, clients * per, account_ids(ctx.sizes.accounts))))
    with ctx.fresh(name) as url:
        engine = engine_for(url)
        try:
            baselines.create_tables(engine)
            written, seconds = writers.in_processes(url, writers.split(rows, clients), kind="psycopg", cpu=cpu)
            expect_rows(engine, len(rows))
        finally:
            engine.dispose()
    if written != len(rows):
        raise Inconsistent(f"psycopg2: {written} written, {len(rows)} sent")
    return written, seconds
