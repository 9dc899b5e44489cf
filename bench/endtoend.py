"""End to end: record each charge with ``record_charge``, then project the day.

The same charges and the same accounts as the CRUD baseline's end to end
(one committed INSERT per charge, then its aggregation job).
"""

from __future__ import annotations

import time

from bench.checks import check_recorded, expect, projected_totals
from bench.context import Context
from bench.limit import CRUD_END_TO_END
from bench.recording import _open_accounts
from bench.rows import POSTGRESQL, Row, Target, missing
from bench.workload import account_ids, charges, tally_of
from ledger import Ledger

END_TO_END_TARGET = Target("faster than CRUD end to end", lambda row: row.ratio > 1, (POSTGRESQL,))  # type: ignore[operator]


def end_to_end(ctx: Context) -> list[Row]:
    name = "end to end (record_charge each + project)"
    try:
        from projections import Projector
    except ImportError:
        return [missing(name, ctx.kind, "projections")]
    accounts = account_ids(ctx.sizes.accounts)
    items = list(charges("e2e", ctx.sizes.single, accounts))
    with ctx.fresh("e2e") as url:
        expected = _open_accounts(url, accounts, "e2e")
        ledger = Ledger.from_url(url)
        try:
            for account in accounts:
                ledger.account_totals(account)
            projector = Projector(ledger)
            projector.run()  # the openings: yesterday's work
            opened = projected_totals(ledger)
            began = time.perf_counter()
            for item in items:
                ledger.record_charge(**item)
            projector.run()
            seconds = time.perf_counter() - began
            expected.merge(tally_of(items))
            expect("projected records", projected_totals(ledger), expected)
            if opened.charges != len(accounts):
                raise AssertionError("account openings were not projected")
        finally:
            ledger.close()
        check_recorded(url, accounts, expected)
    row = Row(name, ctx.kind, len(items), seconds, target=END_TO_END_TARGET)
    return [row.against(ctx.baseline(CRUD_END_TO_END))]
