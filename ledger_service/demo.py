"""The demo: a synthetic month on a fresh ledger, end to end.

:func:`synthetic_month` makes a realistic month of charges (accounts of
different sizes, users, providers and models, every charge type, office-hour
peaks, seed-style calls by user profile). :func:`run_demo` records it through
the service in batches, replays some of it as client retries, sends a
conflicting retry and an invalid charge, reverses a charge, projects, compacts
the closed days, records late charges for a compacted day, compacts again,
audits, and gathers a short report. Like the command line it sits on top of
the write side and imports projections when it runs.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

from ledger.domain import Totals
from ledger.errors import BudgetExceeded, ChargeConflict, InvalidCharge
from ledger.measures import MEASURES
from ledger_service.wording import plural

if TYPE_CHECKING:
    from ledger import Ledger
    from projections import AuditResult, Projector

ACCOUNT_NAMES = (
    "acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "wonka",
    "cyberdyne", "tyrell", "soylent", "aperture",
)
USER_NAMES = ("ada", "grace", "linus", "barbara", "ken", "margaret", "dennis", "radia", "guido", "frances")
#: provider -> [(model, weight, mean prompt tokens, mean completion tokens)]
MODELS = {
    "openai": [("gpt-4o", 5, 1_800, 420), ("gpt-4o-mini", 9, 900, 260), ("o3-mini", 2, 2_400, 1_600)],
    "anthropic": [("claude-sonnet-4", 5, 2_600, 520), ("claude-haiku-3.5", 4, 700, 180)],
    "google": [("gemini-1.5-pro", 2, 3_200, 400), ("gemini-1.5-flash", 3, 1_100, 210)],
    "meta": [("llama-3.1-70b", 1, 1_500, 350)],
}
#: The demo's catalogue: (provider, model) -> (prompt, completion) micro-USD per
#: million tokens. llama is left unpriced on purpose; gpt-4o gets cheaper mid-month.
PRICES = {
    ("openai", "gpt-4o"): (2_500_000, 10_000_000),
    ("openai", "gpt-4o-mini"): (150_000, 600_000),
    ("openai", "o3-mini"): (1_100_000, 4_400_000),
    ("anthropic", "claude-sonnet-4"): (3_000_000, 15_000_000),
    ("anthropic", "claude-haiku-3.5"): (800_000, 4_000_000),
    ("google", "gemini-1.5-pro"): (1_250_000, 5_000_000),
    ("google", "gemini-1.5-flash"): (75_000, 300_000),
}
#: charge type -> weight (subscriptions are added once per account, not drawn)
CHARGE_TYPES = {"completion": 82, "tool": 7, "plugin": 4, "usage": 7}
#: Relative traffic per hour of the day in the billing time zone: office hours peak.
HOURLY = (1, 1, 1, 1, 1, 2, 3, 6, 10, 12, 12, 11, 9, 11, 12, 12, 11, 9, 6, 4, 3, 2, 2, 1)

Update = Callable[[int, int], None]


class Reporter(Protocol):
    """How the demo tells its story: a step with progress, then a line saying what it did."""

    def step(self, title: str, total: int | None = None) -> AbstractContextManager[Update]: ...

    def done(self, message: str) -> None: ...


class SilentReporter:
    def step(self, title: str, total: int | None = None) -> AbstractContextManager[Update]:
        return nullcontext(lambda done, total=None: None)  # type: ignore[arg-type,return-value]

    def done(self, message: str) -> None:
        pass


@dataclass(frozen=True)
class DemoConfig:
    accounts: int = 8
    days: int = 30
    charges: int = 20_000
    seed: int = 42
    batch_size: int = 2_000

    def __post_init__(self) -> None:
        if self.accounts < 1 or self.days < 2 or self.charges < 100 or self.batch_size < 1:
            raise ValueError("the demo needs at least 1 account, 2 days and 100 charges")


@dataclass
class DemoResult:
    """What the demo did and what the ledger says afterwards."""

    charges: int = 0
    recorded: int = 0
    duplicates: int = 0
    refused: list[str] = field(default_factory=list)
    reversed_charge: str | None = None
    late: int = 0
    #: The gateway under a budget: calls reserved and captured, refused, and the budget's status after.
    budget: dict[str, Any] = field(default_factory=dict)
    events_projected: int = 0
    events_pruned: int = 0
    rollups: int = 0
    events_before_compaction: int = 0
    events_after: int = 0
    audit_clean: bool = False
    audit: AuditResult | None = None
    top_accounts: list[dict[str, Any]] = field(default_factory=list)
    by_model: list[dict[str, Any]] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)
    account_totals: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "charges": self.charges,
            "recorded": self.recorded,
            "duplicates": self.duplicates,
            "refused": self.refused,
            "reversed_charge": self.reversed_charge,
            "late": self.late,
            "budget": self.budget,
            "events_projected": self.events_projected,
            "events_before_compaction": self.events_before_compaction,
            "events_pruned": self.events_pruned,
            "events_after": self.events_after,
            "rollups": self.rollups,
            "audit_clean": self.audit_clean,
            "top_accounts": self.top_accounts,
            "by_model": self.by_model,
            "totals": self.totals,
            "account_totals": self.account_totals,
            "seconds": self.seconds,
        }


# -- the synthetic month -------------------------------------------------------


@dataclass(frozen=True)
class _Account:
    name: str
    weight: float
    users: tuple[str, ...]
    profile: int
    providers: tuple[str, ...]


def _accounts(rnd: random.Random, count: int) -> list[_Account]:
    made = []
    for i in range(count):
        name = ACCOUNT_NAMES[i] if i < len(ACCOUNT_NAMES) else f"account-{i + 1}"
        users = tuple(rnd.sample(USER_NAMES, rnd.randint(1, 6)))
        providers = tuple(rnd.sample(sorted(MODELS), rnd.randint(1, 3)))
        made.append(_Account(name, 1 / (i + 1) ** 0.8, users, 1000 + i, providers))
    return made


def synthetic_month(config: DemoConfig, *, end: date, zone: ZoneInfo) -> list[dict[str, Any]]:
    """``config.charges`` charges over the ``config.days`` days before ``end``, in time order.

    Usage charges come seed-style (``user_profile_id``, no provider or model);
    each account also pays one subscription on the first day.
    """
    rnd = random.Random(config.seed)
    accounts = _accounts(rnd, config.accounts)
    first = end - timedelta(days=config.days)
    items: list[tuple[datetime, dict[str, Any]]] = []
    for account in accounts:
        at = datetime.combine(first, clock(0, 5), zone)
        items.append((at, {"account_id": account.name, "user_id": account.users[0],
                           "charge_type": "subscription", "total_tokens": 0}))
    weights = [a.weight for a in accounts]
    types, type_weights = zip(*CHARGE_TYPES.items())
    for _ in range(config.charges - len(items)):
        account = rnd.choices(accounts, weights)[0]
        day = first + timedelta(days=rnd.randrange(config.days))
        hour = rnd.choices(range(24), HOURLY)[0]
        at = datetime.combine(day, clock(hour, rnd.randrange(60), rnd.randrange(60),
                                         rnd.randrange(1_000_000)), zone)
        charge_type = rnd.choices(types, type_weights)[0]
        if charge_type == "usage":
            item = {"user_profile_id": account.profile, "charge_type": "usage",
                    "prompt_tokens": rnd.randint(10, 400), "completion_tokens": rnd.randint(5, 120),
                    "session_key": f"sess-{rnd.getrandbits(48):012x}"}
        else:
            provider = rnd.choice(account.providers)
            models = MODELS[provider]
            model, _, prompt, completion = rnd.choices(models, [m[1] for m in models])[0]
            item = {"account_id": account.name, "user_id": rnd.choice(account.users),
                    "charge_type": charge_type, "provider": provider, "model": model,
                    "prompt_tokens": max(1, int(rnd.lognormvariate(0, 0.8) * prompt)),
                    "completion_tokens": int(rnd.lognormvariate(0, 0.9) * completion),
                    "reference": f"req_{rnd.getrandbits(64):016x}"}
        items.append((at, item))
    items.sort(key=lambda pair: pair[0])
    month = []
    for n, (at, item) in enumerate(items, start=1):
        item["charge_id"] = f"ch_{config.seed}_{n:07d}"
        item["occurred_at"] = at.astimezone(UTC).isoformat()
        month.append(item)
    return month


def _catalogue(start: date, zone: ZoneInfo) -> list[dict[str, Any]]:
    """List prices from before the month, a mid-month cut, and a rate for seed-style usage."""
    opened = datetime.combine(start, datetime.min.time(), zone).isoformat()
    entries = [
        {"provider": provider, "model": model, "prompt_micros_per_million": prompt,
         "completion_micros_per_million": completion, "effective_from": opened, "note": "list price"}
        for (provider, model), (prompt, completion) in PRICES.items()
    ]
    cut = datetime.combine(start + timedelta(days=16), datetime.min.time(), zone).isoformat()
    entries.append({"provider": "openai", "model": "gpt-4o", "prompt_micros_per_million": 2_000_000,
                    "completion_micros_per_million": 8_000_000, "effective_from": cut, "note": "price cut"})
    entries.append({"charge_type": "usage", "prompt_micros_per_million": 500_000,
                    "completion_micros_per_million": 1_500_000, "effective_from": opened,
                    "note": "metered usage without a model"})
    return entries


def _late_arrivals(month: list[dict[str, Any]], rnd: random.Random, share: float = 0.01) -> list[dict[str, Any]]:
    """Move a few charges later in the stream: calls reported after the fact."""
    picked = set(rnd.sample(range(len(month)), max(1, int(len(month) * share))))
    on_time = [item for i, item in enumerate(month) if i not in picked]
    late = [month[i] for i in sorted(picked)]
    for item in late:
        on_time.insert(rnd.randint(len(on_time) // 2, len(on_time)), item)
    return on_time


# -- the flow ------------------------------------------------------------------


def run_demo(ledger: Ledger, config: DemoConfig = DemoConfig(), reporter: Reporter | None = None,
             *, now: datetime | None = None) -> DemoResult:
    """Record, retry, refuse, reverse, project, compact, record late, audit, report."""
    from ledger.compaction import compact
    from ledger_service.audits import record_audit
    from projections import Projector, audit
    from projections.reports import account_summaries, records

    say = reporter or SilentReporter()
    zone = ledger.settings.zone
    now = now or datetime.now(UTC)
    today = now.astimezone(zone).date()
    rnd = random.Random(config.seed + 1)
    result = DemoResult()
    clock_start = time.perf_counter()

    month = _late_arrivals(synthetic_month(config, end=today, zone=zone), rnd)
    result.charges = len(month)
    with say.step("setting the price catalogue"):
        prices = ledger.set_prices(_catalogue(today - timedelta(days=config.days + 1), zone))
    say.done(f"set {len(prices)} prices (micro-USD per million tokens; llama-3.1-70b left unpriced, "
             "gpt-4o 20% cheaper from mid-month)")
    with say.step(f"recording {len(month):,} charges in batches of {config.batch_size:,}", len(month)) as update:
        started = time.perf_counter()
        accounts_recorded: set[str] = set()  # profiles resolve to accounts of their own
        for start in range(0, len(month), config.batch_size):
            for outcome in ledger.record_charges(month[start:start + config.batch_size]):
                if outcome.error is not None:
                    raise outcome.error
                result.recorded += 1
                accounts_recorded.add(outcome.receipt.account_id)
            update(min(start + config.batch_size, len(month)), len(month))
        result.seconds["record"] = time.perf_counter() - started
    say.done(f"recorded {plural(result.recorded, 'charge')} over {config.days} days for "
             f"{plural(len(accounts_recorded), 'account')} ({config.accounts} named, the rest profile accounts "
             "of seed-style calls) "
             f"in {result.seconds['record']:.1f} s ({result.recorded / result.seconds['record']:,.0f} charges/s)")

    retries = rnd.sample(month, max(1, len(month) // 50))
    conflicting = dict(month[len(month) // 3])
    conflicting["prompt_tokens"] = int(conflicting.get("prompt_tokens") or 0) + 1_000
    conflicting.pop("total_tokens", None)
    invalid = {"account_id": "acme", "charge_type": "refund", "prompt_tokens": -5, "charge_id": "ch_bad"}
    with say.step("replaying client retries, a conflicting retry and a bad charge"):
        outcomes = ledger.record_charges([*retries, conflicting, invalid])
    for outcome in outcomes:
        if outcome.error is None:
            result.duplicates += int(outcome.receipt.duplicate)
        elif isinstance(outcome.error, (ChargeConflict, InvalidCharge)):
            result.refused.append(str(outcome.error))
    say.done(f"{plural(result.duplicates, 'client retry', 'client retries')} recognised by charge id, "
             "none counted twice")
    for reason in result.refused:
        say.done(f"refused, nothing stored: {reason}")

    victim = next(item for item in month[len(month) // 2:] if item["charge_type"] == "completion")
    ledger.reverse_charge(victim["charge_id"], "customer disputed a failed call", account_id=victim["account_id"])
    result.reversed_charge = victim["charge_id"]
    say.done(f"reversed charge {victim['charge_id']} ({victim['account_id']}, {victim['model']}): "
             "a new event; the original stays in the log")

    projector = Projector(ledger)
    result.events_projected += _project(projector, ledger, say, "projecting daily billing records")
    result.events_before_compaction = _event_count(ledger)

    grace = timedelta(0)  # the demo is the only writer: no stale aggregate can exist
    with say.step("compacting closed days (rollup + snapshot + prune)") as update:
        compacted = compact(ledger, before=today, projected_position=projector.position(), grace=grace,
                            progress=lambda done, total: update(done, total))
    result.events_pruned += compacted.events_pruned
    result.rollups += compacted.rollups_written
    result.events_projected += _project(projector, ledger, SilentReporter(), "")  # the rollups
    say.done(f"compacted {plural(compacted.days, 'closed account-day')}: "
             f"{plural(compacted.events_pruned, 'raw event')} pruned (~{compacted.bytes_pruned / 1e6:.1f} MB), "
             f"{plural(compacted.rollups_written, 'rollup')} written")

    late_day = today - timedelta(days=3)
    late = [
        {"account_id": "acme", "user_id": "ada", "charge_type": "completion", "provider": "openai",
         "model": "gpt-4o-mini", "prompt_tokens": 300 + i, "completion_tokens": 40,
         "occurred_at": datetime.combine(late_day, clock(15, i % 60), zone).astimezone(UTC).isoformat(),
         "charge_id": f"late_{config.seed}_{i}"}
        for i in range(25)
    ]
    for outcome in ledger.record_charges(late):
        if outcome.error is not None:
            raise outcome.error
    result.late = len(late)
    say.done(f"recorded {len(late)} late charges for {late_day}, a day already compacted")
    result.events_projected += _project(projector, ledger, say, "projecting the late charges")
    with say.step("compacting again: the late day is rolled up anew"):
        again = compact(ledger, before=today, projected_position=projector.position(), grace=grace)
    result.events_pruned += again.events_pruned
    result.rollups += again.rollups_written
    result.events_projected += _project(projector, ledger, SilentReporter(), "")
    result.events_after = _event_count(ledger)
    say.done(f"re-rolled {plural(again.days, 'account-day')}, superseding {plural(again.rollups_superseded, 'rollup')}; "
             f"the log went from {result.events_before_compaction:,} to {result.events_after:,} events")

    result.budget = _gateway_under_a_budget(ledger, say)
    result.events_projected += _project(projector, ledger, SilentReporter(), "")  # the captured calls

    with say.step("auditing: replay from position 0, diff, conservation, rollup digests"):
        started = time.perf_counter()
        checked = audit(ledger)
        record_audit(ledger, checked)
        result.seconds["audit"] = time.perf_counter() - started
    result.audit = checked
    result.audit_clean = checked.clean

    summaries = sorted(account_summaries(ledger), key=lambda s: -s["total_tokens"])
    result.top_accounts = summaries[:5]
    result.by_model = sorted(records(ledger, group_by=("provider", "model")), key=lambda r: -r["total_tokens"])
    result.totals = {k: sum(s[k] for s in summaries) for k in MEASURES}
    account_totals = sum((ledger.account_totals(s["account_id"]) for s in summaries), Totals())
    result.account_totals = dict(zip(MEASURES, account_totals.figures))
    result.seconds["total"] = time.perf_counter() - clock_start
    return result


#: The demo gateway's calls: each reserves this estimate, then captures its real charge (about 291 micros).
GATEWAY_CALLS = 20
GATEWAY_ESTIMATE_MICROS = 400


def _gateway_under_a_budget(ledger: Ledger, say: Reporter) -> dict[str, Any]:
    """A gateway's calls under a hard budget with room for about ten: reserve, call, capture; then refusals."""
    from ledger.budget_rules import current_period, utc_now
    from projections.reports import records

    month = current_period("month", ledger.settings.zone, utc_now())
    billed = records(ledger, account_id="acme", start=month.start, group_by=["account_id"])  # all projected
    limit = sum(row["cost_micros"] for row in billed) + 10 * GATEWAY_ESTIMATE_MICROS
    ledger.set_budget("acme-monthly", account_id="acme", limit_micros=limit, thresholds=(80, 100))
    captured = refused = 0
    with say.step(f"a gateway under a budget: {GATEWAY_CALLS} calls, each reserved before and captured after"):
        for i in range(GATEWAY_CALLS):
            try:
                with ledger.reservation("acme", user_id="ada", estimate_micros=GATEWAY_ESTIMATE_MICROS,
                                        ttl_seconds=60) as call:
                    call.capture(charge_type="completion", provider="openai", model="gpt-4o-mini",
                                 prompt_tokens=900 + i, completion_tokens=260)
                    captured += 1
            except BudgetExceeded:
                refused += 1
    status = ledger.budget_status("acme-monthly")
    say.done(f"budget acme-monthly: {plural(captured, 'call')} reserved and captured, {refused} refused "
             f"before the call once it could not hold {GATEWAY_ESTIMATE_MICROS} more micros; spent "
             f"{status.spent:,} of {status.limit:,} micros, {plural(len(ledger.budget_alerts(account_id='acme')), 'threshold alert')} fired")
    return {"captured": captured, "refused": refused, **status.to_dict()}


def _project(projector: Projector, ledger: Ledger, say: Reporter, title: str) -> int:
    head = ledger.log_position()
    start = projector.position()
    applied = 0
    with say.step(title, max(head - start, 0)) as update:
        started = time.perf_counter()
        while True:
            count = projector.run(max_events=projector.batch_size)
            applied += count
            update(applied, max(head - start, applied))
            if count < projector.batch_size:
                break
        seconds = time.perf_counter() - started
    say.done(f"projected {plural(applied, 'event')} in {seconds:.1f} s")
    return applied


def _event_count(ledger: Ledger) -> int:
    """The events the log holds now (compaction deletes the raw ones it rolls up)."""
    from ledger.store.event_log import count_up_to, max_position

    return count_up_to(ledger.store, max_position(ledger.store))
