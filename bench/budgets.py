"""Budgets: what a reservation costs, and what budgets cost a writer that does not reserve.

Three ratios, each against a baseline measured in the same run, on the same
kind of store and load (issue 23):

- one process: a ``reserve`` + ``capture`` pair on an account with a hard
  budget, against one plain ``record_charge`` on an account without one
  (they take turns in blocks, ABBA, on one store; target ≥ 0.5x);
- ``writers`` processes reserving and capturing on one account with one hard
  budget (every reservation locks that budget's row), against as many
  processes recording on that account with no budget (target ≥ 0.5x);
- ``writers`` processes recording without reservations on an account with
  three budgets (account and user, tokens and cost, hard and soft), against
  the same account without budgets (target ≥ 0.8x): recording takes no lock
  a budget holds, so budgets must not slow it.

The multi-process kinds take turns twice in mirrored order (once with
``--quick`` or ``turns=1``, or with fewer than ``MIRROR_FROM`` items per writer), each on a
fresh store. Afterwards every store must show exactly
the charges sent, and a budget's spent exactly their tokens with nothing
held: a scenario that loses or double-counts a charge is inconsistent, not slow.
SQLite has one writer by nature: only the one-process pair runs there.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from bench import writers
from bench.checks import check_recorded
from bench.context import Context
from bench.pairing import alternate, blocks_of
from bench.recording import SINGLE_BLOCK, open_accounts
from bench.rows import POSTGRESQL, Inconsistent, Row, at_least, summed
from bench.workload import Tally, account_ids, charges, tally_of
from ledger import Ledger

PAIR_TARGET = at_least(0.50, "≥ 0.5x plain record_charge", stores=(POSTGRESQL,))
HOT_PAIR_TARGET = at_least(0.50, "≥ 0.5x recording on the account without a budget")
THREE_BUDGETS_TARGET = at_least(0.80, "≥ 0.8x the same account without budgets")

PLAIN_ONE = "budgets-plain-1"
#: The hard budget the reservations go through: large enough never to refuse, all time so spent is every charge.
HOT_BUDGET = "bench-hot"
LIMIT_TOKENS = 10**14
#: Per-writer counts from which the kinds take a second, mirrored turn: shorter turns leave the machine no time to drift.
MIRROR_FROM = 100


def budgets(ctx: Context) -> list[Row]:
    """The three ratios (only the first on SQLite)."""
    rows = _one_process(ctx)
    if ctx.kind == POSTGRESQL:
        rows += _many_processes(ctx)
    return rows


# -- one process ------------------------------------------------------------------------


def reserve_and_capture(ledger: Ledger, item: Mapping[str, Any]) -> None:
    """What a gateway does around one call: hold an estimate, then record the real charge under the reservation."""
    fields = dict(item)
    rid = fields.pop("charge_id")
    estimate = int(fields["prompt_tokens"]) + int(fields["completion_tokens"]) + 100
    ledger.reserve(fields["account_id"], estimate_tokens=estimate, reservation_id=rid)
    ledger.capture(rid, **fields)


def set_hot_budget(url: str, account: str) -> None:
    ledger = Ledger.from_url(url)
    try:
        ledger.set_budget(HOT_BUDGET, account_id=account, limit_tokens=LIMIT_TOKENS, period="total")
    finally:
        ledger.close()


def _one_process(ctx: Context) -> list[Row]:
    n = ctx.sizes.single
    plain_account, budget_account = account_ids(1, "plain"), account_ids(1, "budgeted")
    plain = list(charges("bplain", n, plain_account))
    pairs = list(charges("bpair", n, budget_account))
    with ctx.fresh("budgets-one") as url:
        expected = open_accounts(url, plain_account, "budgets-one-plain")
        budgeted = open_accounts(url, budget_account, "budgets-one-budgeted")
        set_hot_budget(url, budget_account[0])
        ledger = Ledger.from_url(url)
        try:
            def record(block: range) -> None:
                for i in block:
                    ledger.record_charge(**plain[i])

            def reserve(block: range) -> None:
                for i in block:
                    reserve_and_capture(ledger, pairs[i])

            plain_s, pair_s = alternate(
                [(partial(record, b), partial(reserve, b)) for b in blocks_of(n, SINGLE_BLOCK)]
            )
        finally:
            ledger.close()
        expected.merge(tally_of(plain))
        budgeted.merge(tally_of(pairs))
        _check_budget(url, HOT_BUDGET, budgeted)
        expected.merge(budgeted)
        check_recorded(url, plain_account + budget_account, expected)
    base = Row("record_charge, 1 process, account without a budget", ctx.kind, n, plain_s, key=PLAIN_ONE)
    pair = Row("reserve + capture, 1 process, hard budget", ctx.kind, n, pair_s, unit="pairs",
               target=PAIR_TARGET).against(base)
    return [base, pair]


# -- many processes ---------------------------------------------------------------------


def _many_processes(ctx: Context) -> list[Row]:
    n, per = ctx.sizes.writers, ctx.sizes.concurrent_per_writer
    hot = account_ids(1, "hot")
    kinds = ["plain", "pairs", "three-budgets"]
    done: dict[str, list[tuple[int, float]]] = {kind: [] for kind in kinds}
    cpu = {kind: writers.CpuUse() for kind in kinds}
    orders = ctx.turns(kinds)
    for turn, order in enumerate(orders[:1] if per < MIRROR_FROM else orders):
        for kind in order:
            ctx.log(f"{n} processes, {kind} (turn {turn + 1})")
            done[kind].append(_run(ctx, kind, n, per, hot, f"b{kind}{turn}", cpu[kind]))
    plain = Row(f"record_charge, {n} processes, 1 account, no budget", ctx.kind, *summed(done["plain"]),
                note=cpu["plain"].note("charge"))
    return [
        plain,
        Row(f"reserve + capture, {n} processes, 1 hard budget on 1 account", ctx.kind, *summed(done["pairs"]),
            unit="pairs", target=HOT_PAIR_TARGET, note=cpu["pairs"].note("pair")).against(plain),
        Row(f"record_charge, {n} processes, 1 account with 3 budgets", ctx.kind, *summed(done["three-budgets"]),
            target=THREE_BUDGETS_TARGET, note=cpu["three-budgets"].note("charge")).against(plain),
    ]


def _run(
    ctx: Context, kind: str, n: int, per: int, accounts: list[str], name: str, cpu: writers.CpuUse | None = None
) -> tuple[int, float]:
    """One turn of ``kind`` from ``n`` processes on a fresh store, checked afterwards."""
    items = list(charges(name, n * per, accounts))
    with ctx.fresh(name) as url:
        expected = open_accounts(url, accounts, name)
        if kind == "pairs":
            set_hot_budget(url, accounts[0])
            written, seconds = pairs_in_processes(url, writers.split(items, n), cpu)
        else:
            if kind == "three-budgets":
                _three_budgets(url, accounts[0])
            written, seconds = writers.in_processes(url, writers.split(items, n), cpu=cpu)
        expected.merge(tally_of(items))
        check_recorded(url, accounts, expected)
        if kind != "plain":
            _check_budget(url, HOT_BUDGET, expected)
    if written != len(items):
        raise Inconsistent(f"budgets {kind}: {written} done, {len(items)} sent")
    return written, seconds


def _three_budgets(url: str, account: str) -> None:
    """An account's usual set: a hard all-time token budget, a soft monthly cost budget, one user's daily tokens."""
    ledger = Ledger.from_url(url)
    try:
        ledger.set_budget(HOT_BUDGET, account_id=account, limit_tokens=LIMIT_TOKENS, period="total")
        ledger.set_budget("bench-month-cost", account_id=account, limit_micros=10**12, period="month", mode="soft")
        ledger.set_budget("bench-user-day", account_id=account, user_id="user-0", limit_tokens=LIMIT_TOKENS,
                          period="day")
    finally:
        ledger.close()


def _check_budget(url: str, budget_id: str, expected: Tally) -> None:
    """The budget's spent is every charge's tokens; nothing is left held."""
    ledger = Ledger.from_url(url)
    try:
        status = ledger.budget_status(budget_id)
    finally:
        ledger.close()
    if (status.spent_tokens, status.held_tokens) != (expected.total_tokens, 0):
        raise Inconsistent(
            f"budget {budget_id}: spent {status.spent_tokens}, held {status.held_tokens}; "
            f"expected spent {expected.total_tokens}, held 0"
        )


# -- reserving processes (the bench's writer machinery, with a pair per item) ----------------


def _pair_process(url: str, items: list[dict[str, Any]], ready: Any, start: Any, results: Any) -> None:
    try:
        ledger = Ledger.from_url(url)
        ledger.budget_status(HOT_BUDGET)  # connections open before the clock starts
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises
        results.put(("error", traceback.format_exc()))
        return
    ready.put(True)
    start.wait(writers.TIMEOUT)
    try:
        results.put(writers.done(lambda: _pairs(ledger, items)))
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises
        results.put(("error", traceback.format_exc()))
    finally:
        ledger.close()


def _pairs(ledger: Ledger, items: list[dict[str, Any]]) -> tuple[int, float, float]:
    """(pairs, began, ended): a reservation and its capture per item."""
    began = time.monotonic()
    for item in items:
        reserve_and_capture(ledger, item)
    return len(items), began, time.monotonic()


def pairs_in_processes(
    url: str, shares: Sequence[list[dict[str, Any]]], cpu: writers.CpuUse | None = None
) -> tuple[int, float]:
    """(pairs done, seconds) with one process per share, started together as ``writers.in_processes`` does."""
    return writers.run_together("bench.budgets", _pair_process, [(url, share) for share in shares], cpu)
