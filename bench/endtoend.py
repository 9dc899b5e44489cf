"""End to end: record each charge with ``record_charge``, then project the day.

Paired with the CRUD design on the same store and the same charges: blocks of
``record_charge`` calls take turns with blocks of committed CRUD INSERTs (see
:mod:`bench.pairing`); then the projector and the CRUD aggregation job each
run once. Each side's total is its recording plus its aggregation.
"""

from __future__ import annotations

import time
from functools import partial

from bench import baselines
from bench.checks import check_recorded, expect, projected_totals
from bench.context import Context
from bench.recording import open_accounts, paired_single_calls
from bench.rows import POSTGRESQL, Row, Target, missing
from bench.stores import engine_for
from bench.workload import account_ids, charges, tally_of
from ledger import Ledger

END_TO_END_TARGET = Target("faster than CRUD end to end", lambda row: row.ratio > 1, (POSTGRESQL,))  # type: ignore[operator]


def end_to_end(ctx: Context) -> list[Row]:
    name = "end to end (record_charge each + project)"
    try:
        from projections import Projector
    except ImportError:
        return [missing(name, ctx.kind, "projections")]
    n = ctx.sizes.single
    accounts = account_ids(ctx.sizes.accounts)
    items = list(charges("e2e", n, accounts))
    with ctx.fresh("e2e") as url:
        expected = open_accounts(url, accounts, "e2e")
        engine = engine_for(url)
        ledger = Ledger.from_url(url)
        try:
            baselines.create_tables(engine)
            for account in accounts:
                ledger.account_totals(account)
            projector = Projector(ledger)
            projector.run()  # the openings: yesterday's work

            ledger_seconds, crud_seconds = paired_single_calls(
                ledger, items, partial(baselines.crud_insert_one_per_call, engine), items
            )
            began = time.perf_counter()
            projector.run()
            project_seconds = time.perf_counter() - began
            aggregate_seconds = baselines.crud_aggregate(engine)
            expected.merge(tally_of(items))
            expect("projected records", projected_totals(ledger), expected)
            baselines.check_crud(engine, tally_of(items))
        finally:
            ledger.close()
            engine.dispose()
        check_recorded(url, accounts, expected)
    crud = Row("CRUD end to end, interleaved (insert each + aggregate)", ctx.kind, n, crud_seconds + aggregate_seconds,
               note=f"aggregation {aggregate_seconds:.3f} s", key="crud-e2e-paired")
    row = Row(name, ctx.kind, n, ledger_seconds + project_seconds, target=END_TO_END_TARGET,
              note=f"projection {project_seconds:.3f} s")
    return [crud, row.against(crud)]
