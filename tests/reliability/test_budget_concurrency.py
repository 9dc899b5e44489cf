"""Eight processes on one hard budget (PostgreSQL): no overspend, no false refusal, spent exact.

The budget is a ``day`` budget in tokens on one account. Each process loops:
reserve a random estimate, "call the model" (a short sleep), then capture
(cost below or above the estimate), release, or abandon the hold to its
short ttl; in the mixed phase it also records plain charges and captures some
holds after they expired. A third of the charges are dated the previous or
the next billing day: they must count in their own day's records and never
in today's budget. That is how the test crosses a period boundary honestly:
the real clock cannot be moved, so the billing zone is chosen with midnight
at least ten hours away (see ``budget_support.noon_zone``), and charges fall
on both sides of both of today's boundaries.

Nothing here takes the ledger's word for its own figures. Every process logs
each call with the wall-clock instants it began and returned (one clock: the
processes share a machine), and the checks rebuild from those facts alone:

- a grant is wrong if what was surely counted throughout its call (holds
  granted before it began and not settled or expired before it returned,
  charges acknowledged before it began) plus its estimate exceeds the limit;
- a refusal is wrong if everything that *could* have been counted at any
  moment of its call, plus its estimate, still fits under the limit;
- with only reservations and captures within their estimate, what was surely
  counted at any instant never exceeds the limit, and neither does any
  ``budget_status`` a ninth process samples meanwhile (while folding spend);
- when every hold is settled, a reserve of exactly the room left succeeds
  (eight processes at once, each an equal share) and one token more fails;
- at the end, spent is exactly the sum of the receipts' tokens dated today,
  and the daily billing records (after projecting) equal the receipts day by
  day, also after reversing some of them.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from budget_support import billing_tokens, noon_zone, tokens_charge

from ledger import Ledger, Settings
from ledger.errors import BudgetExceeded
from projections import Projector

pytestmark = [pytest.mark.slow, pytest.mark.postgres]  # long and in the "heavy" group: tests/conftest.py

PROCESSES = 8
ACCOUNT = "acct-hot"
BUDGET = "day-tokens"
#: Seconds each random phase runs (reservations only, then mixed): short by default, long in the long profile.
SECONDS = float(os.environ.get("REL_BUDGET_SECONDS") or (15 if os.environ.get("LEDGER_TEST_PROFILE") == "long" else 2.5))
#: Limits grow with the trial, so a longer one still spends a while below them before refusals take over.
LIMIT_A = int(600 * SECONDS)
ROOM_B = int(1_200 * SECONDS)
FORK = mp.get_context("fork")
INF = float("inf")


@dataclass
class Hold:
    """A granted reservation and how it ended, in wall-clock seconds."""

    rid: str
    estimate: int
    began: float
    granted: float
    expires: float
    end: str = "abandoned"  # captured, released, abandoned
    settle_began: float = INF
    settle_ended: float = INF
    cost: int = 0
    today: bool = True


@dataclass
class Plain:
    charge_id: str
    tokens: int
    today: bool
    began: float
    ended: float


@dataclass
class Refusal:
    estimate: int
    began: float
    ended: float


# -- the processes ------------------------------------------------------------------------


def _ledger(url: str, zone: str) -> Ledger:
    return Ledger(Settings(database_url=url, billing_tz=zone))


def _occurred(rng: random.Random, zone: ZoneInfo, mixed_days: bool) -> tuple[datetime, bool]:
    """Now (today), or the same local hour of the previous or next billing day."""
    now = datetime.now(UTC)
    if not mixed_days or rng.random() < 0.67:
        return now, True
    return now + timedelta(days=rng.choice([-1, 1])), False


def _worker(url: str, zone: str, phase: str, seed: int, start: Any, deadline: Any, out: Any) -> None:
    """Reserve / call / capture-release-abandon in a loop until the deadline; put the log on ``out``."""
    rng = random.Random(seed)
    ledger = _ledger(url, zone)
    holds: list[Hold] = []
    plains: list[Plain] = []
    refusals: list[Refusal] = []
    expired_captures: list[tuple[bool, bool]] = []  # (began after expiry, said hold_expired)
    try:
        out.put(("ready", seed))
        start.wait(60)
        n, until = 0, deadline.value
        while time.time() < until:
            n += 1
            if phase == "mixed" and rng.random() < 0.25:
                occurred, today = _occurred(rng, ZoneInfo(zone), True)
                tokens = rng.randint(1, 60)
                began = time.time()
                receipt = ledger.record_charge(**tokens_charge(f"p-{seed}-{n}", tokens, occurred_at=occurred),
                                               account_id=ACCOUNT)
                plains.append(Plain(receipt.charge_id, tokens, today, began, time.time()))
                assert not receipt.duplicate
                continue
            estimate = rng.randint(1, 300)
            late = phase == "mixed" and (not expired_captures or rng.random() < 0.1)  # one at least per process
            ttl = 1 if late else rng.choice([1, 2, 600])
            rid = f"r-{phase}-{seed}-{n}"
            began = time.time()
            try:
                granted = ledger.reserve(ACCOUNT, estimate_tokens=estimate, ttl_seconds=ttl, reservation_id=rid)
            except BudgetExceeded:
                refusals.append(Refusal(estimate, began, time.time()))
                continue
            hold = Hold(rid, estimate, began, time.time(), granted.expires_at.timestamp())
            holds.append(hold)
            time.sleep(rng.uniform(0.0, 0.03))  # the model call
            choice = rng.random()
            if late:  # the call outlived its hold: captured after expiry, recorded all the same
                time.sleep(max(0.0, hold.expires - time.time()) + 0.01)
                said = _capture(ledger, rng, hold, ZoneInfo(zone), phase)
                expired_captures.append((hold.settle_began > hold.expires, said))
            elif ttl < 600 and choice < 0.3:
                pass  # abandoned: the hold expires by itself
            elif choice < 0.55:
                hold.end, hold.settle_began = "released", time.time()
                ledger.release(rid)
                hold.settle_ended = time.time()
            elif _capture(ledger, rng, hold, ZoneInfo(zone), phase) and hold.settle_ended < hold.expires:
                raise AssertionError(f"{rid}: captured before its expiry, but the receipt says hold_expired")
        out.put(("done", seed, holds, plains, refusals, expired_captures))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the test
        out.put(("error", seed, f"{type(exc).__name__}: {exc}"))
    finally:
        ledger.close()


def _capture(ledger: Ledger, rng: random.Random, hold: Hold, zone: ZoneInfo, phase: str) -> bool:
    """Capture ``hold``: at most the estimate with reservations only, up to twice it when mixed."""
    top = hold.estimate * (2 if phase == "mixed" else 1)
    cost = rng.randint(0, top)
    occurred, today = _occurred(rng, zone, True)
    fields = tokens_charge(hold.rid, cost, occurred_at=occurred)
    fields.pop("charge_id")
    hold.end, hold.cost, hold.today, hold.settle_began = "captured", cost, today, time.time()
    receipt = ledger.capture(hold.rid, **fields)
    hold.settle_ended = time.time()
    assert receipt.charge_id == hold.rid and not receipt.duplicate
    return receipt.hold_expired


def _sampler(url: str, zone: str, start: Any, deadline: Any, out: Any) -> None:
    """The ninth process: budget statuses as often as it can, folding spend now and then."""
    ledger = _ledger(url, zone)
    samples: list[tuple[int, int, int]] = []
    folded = 0
    try:
        out.put(("ready", -1))
        start.wait(60)
        until = deadline.value
        while time.time() < until:
            status = ledger.budget_status(BUDGET)
            samples.append((status.limit_tokens, status.spent_tokens, status.held_tokens))
            if len(samples) % 10 == 0:
                folded += ledger.fold_spend(ACCOUNT)
        out.put(("sampled", samples, folded))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the test
        out.put(("error", -1, f"sampler {type(exc).__name__}: {exc}"))
    finally:
        ledger.close()


@dataclass
class Phase:
    holds: list[Hold]
    plains: list[Plain]
    refusals: list[Refusal]
    expired_captures: list[tuple[bool, bool]]
    samples: list[tuple[int, int, int]]
    folded: int


def run_phase(url: str, zone: str, phase: str, seed: int) -> Phase:
    out, start = FORK.Queue(), FORK.Event()
    deadline = FORK.Value("d", 0.0)  # set once every process is ready, just before the start
    processes = [
        FORK.Process(target=_worker, args=(url, zone, phase, seed * 100 + w, start, deadline, out))
        for w in range(PROCESSES)
    ] + [FORK.Process(target=_sampler, args=(url, zone, start, deadline, out))]
    for process in processes:
        process.start()
    try:
        for _ in processes:
            message = out.get(timeout=120)
            assert message[0] == "ready", message
        deadline.value = time.time() + SECONDS
        start.set()
        results = [out.get(timeout=120 + SECONDS) for _ in processes]
    finally:
        start.set()
        for process in processes:
            process.join(timeout=60)
    errors = [r for r in results if r[0] == "error"]
    assert not errors, errors
    done = [r for r in results if r[0] == "done"]
    sampled = next(r for r in results if r[0] == "sampled")
    return Phase(
        holds=[h for r in done for h in r[2]],
        plains=[p for r in done for p in r[3]],
        refusals=[f for r in done for f in r[4]],
        expired_captures=[e for r in done for e in r[5]],
        samples=sampled[1],
        folded=sampled[2],
    )


# -- what the logs prove ------------------------------------------------------------------


def surely_counted(holds: Iterable[Hold], plains: Iterable[Plain], began: float, ended: float,
                   skip: str = "") -> int:
    """Tokens every snapshot taken within [began, ended] must have counted as spent or held today."""
    total = 0
    for h in holds:
        if h.rid == skip:
            continue
        if h.granted < began and ended < min(h.expires, h.settle_began):
            total += h.estimate
        elif h.end == "captured" and h.today and h.settle_ended < began:
            total += h.cost
    return total + sum(p.tokens for p in plains if p.today and p.ended < began)


def possibly_counted(holds: Iterable[Hold], plains: Iterable[Plain], began: float, ended: float) -> int:
    """Tokens a snapshot taken within [began, ended] could at most have counted: a hold or its charge, not both."""
    total = 0
    for h in holds:
        hold = h.estimate if h.began < ended and began < min(h.expires, h.settle_ended) else 0
        charge = h.cost if h.end == "captured" and h.today and h.settle_began < ended else 0
        total += max(hold, charge)
    return total + sum(p.tokens for p in plains if p.today and p.began < ended)


def check_decisions(phase: Phase, limit: int) -> None:
    """Every grant fitted what was surely counted; every refusal was forced by what could have been."""
    for h in phase.holds:
        surely = surely_counted(phase.holds, phase.plains, h.began, h.granted, skip=h.rid)
        assert surely + h.estimate <= limit, f"granted {h.estimate} over {surely} surely counted, limit {limit}"
    for r in phase.refusals:
        could = possibly_counted(phase.holds, phase.plains, r.began, r.ended)
        assert could + r.estimate > limit, f"refused {r.estimate} though at most {could} was counted, limit {limit}"


def today_tokens(holds: Iterable[Hold], plains: Iterable[Plain]) -> int:
    return sum(h.cost for h in holds if h.end == "captured" and h.today) + sum(p.tokens for p in plains if p.today)


def other_days_tokens(holds: Iterable[Hold], plains: Iterable[Plain]) -> int:
    return (sum(h.cost for h in holds if h.end == "captured" and not h.today)
            + sum(p.tokens for p in plains if not p.today))


def wait_out(holds: Iterable[Hold]) -> None:
    """Sleep until every abandoned hold has expired."""
    last = max((h.expires for h in holds if h.end == "abandoned"), default=0.0)
    time.sleep(max(0.0, last - time.time()) + 0.05)


# -- the exact phase ----------------------------------------------------------------------


def _share(url: str, zone: str, rid: str, amount: int, start: Any, out: Any) -> None:
    ledger = _ledger(url, zone)
    try:
        out.put("ready")
        start.wait(60)
        try:
            ledger.reserve(ACCOUNT, estimate_tokens=amount, reservation_id=rid)
            out.put(("granted", rid))
        except BudgetExceeded as exc:
            out.put(("refused", rid, str(exc)))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the test
        out.put(("error", rid, f"{type(exc).__name__}: {exc}"))
    finally:
        ledger.close()


def exact_room(url: str, zone: str, ledger: Ledger, spent: int, rng: random.Random) -> None:
    """With no hold active: eight equal shares of exactly the room all fit at once; then not one token more."""
    share = rng.randint(20, 200)
    ledger.set_budget(BUDGET, account_id=ACCOUNT, limit_tokens=spent + PROCESSES * share, period="day")
    out, start = FORK.Queue(), FORK.Event()
    rids = [f"exact-{w}" for w in range(PROCESSES)]
    processes = [FORK.Process(target=_share, args=(url, zone, rid, share, start, out)) for rid in rids]
    for process in processes:
        process.start()
    try:
        assert [out.get(timeout=120) for _ in processes] == ["ready"] * PROCESSES
        start.set()
        answers = [out.get(timeout=120) for _ in processes]
    finally:
        start.set()
        for process in processes:
            process.join(timeout=60)
    assert sorted(answers) == sorted(("granted", rid) for rid in rids), answers  # no false refusal
    with pytest.raises(BudgetExceeded):
        ledger.reserve(ACCOUNT, estimate_tokens=1)
    for rid in rids:
        ledger.release(rid)
    room = PROCESSES * share
    with pytest.raises(BudgetExceeded):
        ledger.reserve(ACCOUNT, estimate_tokens=room + 1)
    ledger.release(ledger.reserve(ACCOUNT, estimate_tokens=room, reservation_id="exact-all").reservation_id)
    status = ledger.budget_status(BUDGET)
    assert (status.spent_tokens, status.held_tokens, status.remaining_tokens) == (spent, 0, room)


# -- the trial ----------------------------------------------------------------------------


def test_eight_processes_on_one_hard_budget(postgres_url: str) -> None:
    seed = int(os.environ.get("REL_BUDGET_SEED") or random.SystemRandom().randrange(2**32))
    print(f"budget concurrency seed: REL_BUDGET_SEED={seed}")
    rng = random.Random(seed)
    zone = noon_zone()
    ledger = _ledger(postgres_url, zone)
    try:
        ledger.set_budget(BUDGET, account_id=ACCOUNT, limit_tokens=LIMIT_A, period="day")
        today = datetime.now(UTC).astimezone(ZoneInfo(zone)).date()
        assert ledger.budget_status(BUDGET).period_start == today

        # Phase A: reservations only, captures within their estimate.
        a = run_phase(postgres_url, zone, "reservations", rng.randrange(2**20))
        print(f"reservations: {len(a.holds)} granted, {len(a.refusals)} refused, "
              f"{len(a.samples)} samples, {a.folded} folded")
        assert a.holds and a.refusals and len(a.samples) > 5
        check_decisions(a, LIMIT_A)
        assert all(limit == LIMIT_A and spent + held <= LIMIT_A for limit, spent, held in a.samples)
        instants = sorted({h.granted for h in a.holds} | {h.settle_ended for h in a.holds if h.settle_ended < INF})
        for t in instants:
            assert surely_counted(a.holds, [], t, t) <= LIMIT_A, t
        wait_out(a.holds)
        spent = today_tokens(a.holds, [])
        assert spent <= LIMIT_A
        status = ledger.budget_status(BUDGET)
        assert (status.spent_tokens, status.held_tokens) == (spent, 0)

        # Every hold settled: exactly the room left is granted, under concurrency, and no more.
        exact_room(postgres_url, zone, ledger, spent, rng)

        # Phase B: plain charges, captures above the estimate and after expiry, on a fresh limit.
        limit_b = spent + ROOM_B
        ledger.set_budget(BUDGET, account_id=ACCOUNT, limit_tokens=limit_b, period="day")
        b = run_phase(postgres_url, zone, "mixed", rng.randrange(2**20))
        print(f"mixed: {len(b.holds)} granted, {len(b.refusals)} refused, {len(b.plains)} plain, "
              f"{len(b.expired_captures)} late captures")
        assert b.holds and b.plains
        before_b = Phase(a.holds, [], [], [], [], 0)
        check_decisions(_with_history(b, before_b), limit_b)
        assert b.expired_captures and all(after and said for after, said in b.expired_captures)
        assert all(limit == limit_b for limit, _, _ in b.samples)
        wait_out(b.holds)

        holds, plains = a.holds + b.holds, b.plains
        assert_exact(ledger, zone, today, holds, plains)

        # Reversals: some of today's charges and some of the other days', then the same checks.
        charged = [h for h in holds if h.end == "captured"]
        reversed_holds = rng.sample(charged, min(len(charged), 12))
        reversed_plains = rng.sample(plains, min(len(plains), 6))
        for h in reversed_holds:
            ledger.reverse_charge(h.rid, "concurrency test", account_id=ACCOUNT)
        for p in reversed_plains:
            ledger.reverse_charge(p.charge_id, "concurrency test", account_id=ACCOUNT)
        kept_holds = [h for h in holds if h not in reversed_holds]
        kept_plains = [p for p in plains if p not in reversed_plains]
        assert_exact(ledger, zone, today, kept_holds, kept_plains)
        ledger.fold_spend()
        assert_exact(ledger, zone, today, kept_holds, kept_plains)
    finally:
        ledger.close()


def _with_history(phase: Phase, earlier: Phase) -> Phase:
    """Phase B's decisions also saw phase A's charges (and its holds, all settled or expired by then)."""
    return Phase(earlier.holds + phase.holds, phase.plains, phase.refusals, phase.expired_captures,
                 phase.samples, phase.folded)


def assert_exact(ledger: Ledger, zone: str, today: date, holds: list[Hold], plains: list[Plain]) -> None:
    """Spent is the receipts dated today; the billing records hold every receipt on its own day."""
    spent = today_tokens(holds, plains)
    status = ledger.budget_status(BUDGET)
    assert (status.period_start, status.spent_tokens, status.held_tokens) == (today, spent, 0)
    Projector(ledger).run()
    records = billing_tokens(ledger, ACCOUNT)
    assert records.get(today, 0) == spent
    assert sum(v for d, v in records.items() if d != today) == other_days_tokens(holds, plains)
    assert set(records) <= {today - timedelta(days=1), today, today + timedelta(days=1)}
