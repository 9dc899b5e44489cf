"""The database side of a charge: the ledger's intake function through ``pgbench``.

``record_charge`` on PostgreSQL is one call of ``ledger_intake_account_charges``
(the charge-id index row and the intake row, in one transaction) and, later, a
sequencing transaction that moves the intake rows into the log. Here that
call runs without Python: a real ``record_charge`` is made once and the
appender's call captured (its prepared statement, every parameter), then
``pgbench`` repeats it from ``writers`` clients (8), each charge with a new
id on one of the opened accounts, while a ledger in this process sequences
the intake as the ledger's own sequencer does (``drain()`` every
``sequence_interval_ms``). Against it, taking turns in mirrored order, the
raw-INSERT script of :mod:`bench.pgbench` at the same clients.

Everything taken in must arrive: after the run the intake is drained, and a
fresh ledger must show every charge in the accounts' totals and the index.
"""

from __future__ import annotations

import importlib
import re
import threading
from datetime import datetime, timezone
from typing import Any, Sequence

from bench import pgbench
from bench.checks import check_recorded
from bench.context import Context
from bench.recording import open_accounts
from bench.rows import POSTGRESQL, Inconsistent, Row, at_least, summed
from bench.stores import engine_for
from bench.workload import Tally, account_ids, charge
from bench.writers import CpuUse
from ledger import Ledger
from ledger.domain import account_uuid

INTAKE_SCRIPT = pgbench.HERE / "pgbench_intake.sql"
RAW_PAIRED = "pgbench-raw-paired"
INTAKE_SQL = "intake-sql"

INTAKE_TARGET = at_least(0.60, "≥ 0.6x pgbench raw INSERT, same clients (issue 25)")
#: The price the sample charge is costed with, so its payload carries a cost (as priced traffic does).
PRICE = {"provider": "openai", "model": "gpt-4o", "prompt_micros_per_million": 2_500_000,
         "completion_micros_per_million": 10_000_000,
         "effective_from": datetime(2020, 1, 1, tzinfo=timezone.utc)}


class Prepared:
    """An opened, priced ledger store and the intake call of one real charge, as a pgbench script."""

    def __init__(self, url: str, accounts: Sequence[str], name: str) -> None:
        ledger = Ledger.from_url(url)
        try:
            ledger.set_price(**PRICE)
        finally:
            ledger.close()
        self.expected = open_accounts(url, accounts, name)
        self.accounts = list(accounts)
        self.sample = charge(name, 0, accounts[:1], occurred_at=datetime.now(timezone.utc))
        self.sample["charge_id"] = pgbench.SAMPLE_CHARGE_ID
        self.script = self._capture(url)
        self.expected.add(self.sample)

    def _capture(self, url: str) -> str:
        ledger = Ledger.from_url(url)
        try:
            owner, method = _call_site(ledger)
            calls: list[tuple[str, tuple[Any, ...]]] = []
            original = getattr(owner, method)

            def capture(sql: str, params: Sequence[Any]) -> Any:
                calls.append((sql, tuple(params)))
                return original(sql, params)

            setattr(owner, method, capture)
            try:
                ledger.record_charge(**self.sample)
            finally:
                delattr(owner, method)
            originators = [account_uuid(a) for a in self.accounts]
        finally:
            ledger.close()
        if len(calls) != 1:
            raise RuntimeError(f"record_charge made {len(calls)} intake calls, expected 1")
        sql, params = calls[0]
        return intake_script(prepared_statement(sql), params, self.sample, self.accounts, originators)

    def expect(self, charges: int) -> Tally:
        """The accounts' totals after ``charges`` more charges like the sample."""
        tally = Tally()
        tally.merge(self.expected)
        for _ in range(charges):
            tally.add(self.sample)
        return tally


#: Where the write path's one round trip to PostgreSQL is made: (the ledger's attribute, its method),
#: the store's own first (ledger/store/postgres.py), then the appender's (earlier layout).
CALL_SITES = (("store", "_call"), ("appender", "_call_postgres"))
#: Modules that define the write path's statements (``Statements`` objects), newest layout first.
STATEMENT_MODULES = ("ledger.store.pg_calls", "ledger.appender")


def _call_site(ledger: Ledger) -> tuple[Any, str]:
    """The object and method name through which the ledger sends its intake call to PostgreSQL."""
    for holder, method in CALL_SITES:
        owner = getattr(ledger, holder, None)
        if callable(getattr(owner, method, None)):
            return owner, method
    raise RuntimeError("cannot find the ledger's PostgreSQL call (looked for "
                       + ", ".join(f"ledger.{h}.{m}" for h, m in CALL_SITES) + ")")


def prepared_statement(sql: str) -> str:
    """The ``PREPARE … AS …`` text of the statement the ledger executed (``EXECUTE name (…)``)."""
    for name in STATEMENT_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        for value in vars(module).values():
            if getattr(value, "execute_one", None) == sql:
                return str(value.prepare[0])
    raise RuntimeError(f"record_charge did not go through the intake's single-charge statement: {sql[:80]!r}")


def intake_script(
    prepare: str, params: Sequence[Any], sample: dict[str, Any], accounts: Sequence[str], originators: Sequence[Any]
) -> str:
    """The pgbench script: the prepared statement's body, each ``$n`` the captured value made to vary."""
    match = re.fullmatch(r"PREPARE \w+ \(([^)]*)\) AS (.*)", prepare, re.S)
    if match is None:
        raise RuntimeError(f"unexpected PREPARE text: {prepare[:80]!r}")
    types = [t.strip() for t in match.group(1).split(",")]
    body = match.group(2)
    if len(types) != len(params):
        raise RuntimeError(f"{len(types)} parameter types, {len(params)} parameters captured")
    varying = {
        pgbench.SAMPLE_CHARGE_ID: pgbench.CHARGE_ID_EXPR,
        sample["account_id"]: pgbench.ACCOUNT_EXPR,
        str(originators[0]): pgbench.uuid_choice(originators) + "::text",
    }
    for number in range(len(params), 0, -1):
        value, kind = params[number - 1], types[number - 1]
        if value is None:
            sql = "NULL"
        elif isinstance(value, datetime):
            sql = "now()"  # the recorded_at of each call (its text inside the state stays the sample's)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            sql = repr(value)
        else:
            sql = pgbench.text_expression(str(value), varying)
        body = re.sub(rf"\${number}(?!\d)", lambda _m, s=f"({sql})::{kind}": s, body)
    return pgbench.render(INTAKE_SCRIPT, LAST_ACCOUNT=str(len(accounts) - 1), CALL=body)


class Sequencing:
    """A ledger in this process moving the intake into the log as the ledger's sequencer does."""

    def __init__(self, url: str) -> None:
        self.ledger = Ledger.from_url(url)
        self.interval = self.ledger.settings.sequence_interval_ms / 1000
        self.moved = 0
        self.turns = 0
        self.stopping = threading.Event()
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, name="bench-sequencer", daemon=True)

    def _loop(self) -> None:
        try:
            while not self.stopping.wait(self.interval):
                moved = self.ledger.store.drain(False)
                if moved > 0:
                    self.moved += moved
                    self.turns += 1
        except BaseException as exc:  # noqa: BLE001 - reported by __exit__
            self.failure = exc

    def __enter__(self) -> "Sequencing":
        self.thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stopping.set()
        self.thread.join()
        try:
            moved = self.ledger.store.drain(True)
            self.moved += moved
            self.turns += moved > 0
        finally:
            self.ledger.close()
        if self.failure is not None and exc_info[0] is None:
            raise RuntimeError(f"sequencing failed: {self.failure!r}") from self.failure


def pending(url: str) -> int:
    """Rows still in the intake."""
    engine = engine_for(url)
    try:
        with engine.connect() as connection:
            return int(connection.exec_driver_sql("SELECT count(*) FROM ledger_intake").scalar_one())
    finally:
        engine.dispose()


def run_intake(
    ctx: Context, clients: int, per: int, name: str, cpu: CpuUse | None = None
) -> tuple[int, float, str]:
    """(charges, seconds, note): the intake script through pgbench on an empty store, then checked.

    The sequencer runs in this process, so its CPU falls in the machine's share, not pgbench's.
    """
    accounts = account_ids(ctx.sizes.accounts)
    with ctx.fresh(name) as url:
        prepared = Prepared(url, accounts, name)
        with Sequencing(url) as sequencing:
            result = pgbench.run_script(url, prepared.script, clients=clients, per_client=per, name=name)
        result.charge_cpu(cpu)
        left = pending(url)
        if left:
            raise Inconsistent(f"{left} charges still in the intake after the final drain")
        check_recorded(url, accounts, prepared.expect(result.transactions))
    note = f"{sequencing.turns} sequencing transactions moved {sequencing.moved:,} charges"
    return result.transactions, result.seconds, note


def intake_sql(ctx: Context) -> list[Row]:
    """The intake function and the raw INSERT, both through pgbench at ``writers`` clients, mirrored turns."""
    if ctx.kind != POSTGRESQL:
        return []
    pgbench.require_pgbench()
    n, per = ctx.sizes.writers, ctx.sizes.scaling_per_writer
    kinds = ["raw", "intake"]
    orders = ctx.turns(kinds)
    done: dict[str, list[tuple[int, float]]] = {kind: [] for kind in kinds}
    notes: list[str] = []
    cpu = {kind: CpuUse() for kind in kinds}
    for turn, order in enumerate(orders):
        for kind in order:
            ctx.log(f"pgbench {kind}: {n} clients x {per:,} (turn {turn + 1})")
            if kind == "raw":
                done[kind].append(pgbench.pgbench_raw(ctx, n, per, f"intake-raw{turn}", cpu[kind]))
            else:
                count, seconds, note = run_intake(ctx, n, per, f"intake{turn}", cpu[kind])
                done[kind].append((count, seconds))
                notes.append(note)
    raw = Row(f"pgbench: raw INSERT script, {n} clients, paired with the intake", ctx.kind,
              *summed(done["raw"]), "rows", key=RAW_PAIRED, note=cpu["raw"].note("row", "pgbench"))
    intake = Row(f"pgbench: ledger_intake_account_charges, one charge a call, {n} clients, sequencer running",
                 ctx.kind, *summed(done["intake"]), target=INTAKE_TARGET, key=INTAKE_SQL,
                 note="; ".join([*notes, "then every charge checked in the accounts' totals and the index",
                                 *filter(None, [cpu["intake"].note("charge", "pgbench")])]))
    return [raw, intake.against(raw)]
