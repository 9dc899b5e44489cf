"""Budgets, reservations and credits as a state machine on SQLite, checked against a plain model.

One account carries two hard budgets: a ``day`` budget in tokens and a
prepaid one (``limit="credits"``), with a price of one micro-unit per token,
so both count the same charges. Hypothesis interleaves reservations (long
and one-second ttls), captures above and below the estimate, releases,
expiries, plain charges (some dated the previous billing day), reversals,
folds and grants. After every step the budgets' statuses and the balance
must equal the model's, and every grant must have fitted under both limits.

Time is the real clock: the core reads ``ledger.budget_rules.utc_now`` and has
no clock to inject, so expiry is exercised with one-second ttls (and one
wait per example). Before each step that depends on time, the machine steps
past any hold about to expire, so the model and the ledger never disagree
about a hold expiring during the call.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from budget_support import noon_zone, tokens_charge
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from ledger import Ledger, Settings
from ledger.errors import BudgetExceeded, ReservationConflict

ACCOUNT = "acct-sm"
LIMIT_TOKENS = 2_000
FIRST_GRANT = 1_500
SHORT_TTL = 1
#: A hold expiring within this many seconds of a time-dependent step is waited out first.
GUARD = 0.25


@dataclass
class Hold:
    estimate: int
    expires_at: datetime
    short: bool
    state: str = "held"  # held, captured, released


@dataclass
class Charge:
    tokens: int
    today: bool
    reversed: bool = False


class BudgetMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="budget-sm-")
        self.ledger = Ledger(Settings(database_url=f"sqlite:///{self.directory}/ledger.db", billing_tz=noon_zone()))
        self.holds: dict[str, Hold] = {}
        self.charges: dict[str, Charge] = {}
        self.granted = 0
        self.serial = 0
        self.waited = False

    @initialize()
    def open_budgets(self) -> None:
        self.ledger.set_price(provider="openai", model="m1", prompt_micros_per_million=1_000_000,
                              completion_micros_per_million=1_000_000,
                              effective_from=datetime(2020, 1, 1, tzinfo=UTC))
        self.ledger.set_budget("tok", account_id=ACCOUNT, limit_tokens=LIMIT_TOKENS, period="day")
        self.ledger.set_budget("cred", account_id=ACCOUNT, limit="credits")
        self.ledger.grant_credits(ACCOUNT, FIRST_GRANT, grant_id="g-0")
        self.granted = FIRST_GRANT

    def teardown(self) -> None:
        self.ledger.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    # -- the model ---------------------------------------------------------------------

    def _next(self, prefix: str) -> str:
        self.serial += 1
        return f"{prefix}-{self.serial}"

    def _settle_clock(self) -> datetime:
        """Now, after any hold expiring within GUARD seconds has expired: the model's view of time."""
        now = datetime.now(UTC)
        for hold in self.holds.values():
            if hold.state == "held" and now < hold.expires_at <= now + timedelta(seconds=GUARD):
                time.sleep((hold.expires_at - now).total_seconds() + 0.01)
                return self._settle_clock()
        return now

    def _active(self, now: datetime) -> int:
        return sum(h.estimate for h in self.holds.values() if h.state == "held" and h.expires_at > now)

    def _spent(self) -> int:
        """Tokens (= micros, at one micro per token) of today's charges, net of reversals."""
        return sum(c.tokens for c in self.charges.values() if c.today and not c.reversed)

    def _credit_used(self) -> int:
        return min(self.granted, self._spent())

    def _fits(self, estimate: int, now: datetime) -> bool:
        held = self._active(now)
        return (self._spent() + held + estimate <= LIMIT_TOKENS
                and self._credit_used() + held + estimate <= self.granted)

    def _live(self) -> st.SearchStrategy[str]:
        return st.sampled_from(sorted(self.holds))

    # -- rules --------------------------------------------------------------------------

    @rule(estimate=st.integers(1, 600), short=st.booleans())
    def reserve(self, estimate: int, short: bool) -> None:
        now = self._settle_clock()
        fits = self._fits(estimate, now)
        rid = self._next("r")
        try:
            granted = self.ledger.reserve(ACCOUNT, estimate_tokens=estimate, estimate_micros=estimate,
                                          ttl_seconds=SHORT_TTL if short else 600, reservation_id=rid)
        except BudgetExceeded as refused:
            assert not fits, f"refused {estimate} with room: {refused}"
            event("reserve refused")
            return
        assert fits, f"granted {estimate} beyond a limit: spent {self._spent()}, held {self._active(now)}"
        self.holds[rid] = Hold(estimate, granted.expires_at, short)

    @rule(over=st.booleans())
    def reserve_the_room(self, over: bool) -> None:
        """Exactly the room both budgets leave must be granted; one token more must be refused."""
        now = self._settle_clock()
        held = self._active(now)
        room = min(LIMIT_TOKENS - self._spent() - held, self.granted - self._credit_used() - held)
        estimate = room + 1 if over else room
        if estimate < 1:
            return
        rid = self._next("r")
        try:
            granted = self.ledger.reserve(ACCOUNT, estimate_tokens=estimate, estimate_micros=estimate,
                                          reservation_id=rid)
        except BudgetExceeded as refused:
            assert over, f"refused exactly the room left ({estimate}): {refused}"
            event("room + 1 refused")
            return
        assert not over, f"granted {estimate}, one more than the room left"
        event("exactly the room granted")
        self.holds[rid] = Hold(estimate, granted.expires_at, short=False)

    @precondition(lambda self: any(h.state == "held" for h in self.holds.values()))
    @rule(data=st.data(), factor=st.sampled_from([0.0, 0.5, 1.0, 1.5, 3.0]))
    def capture(self, data: st.DataObject, factor: float) -> None:
        rid = data.draw(st.sampled_from(sorted(r for r, h in self.holds.items() if h.state == "held")))
        hold = self.holds[rid]
        cost = int(hold.estimate * factor)
        now = self._settle_clock()
        fields = tokens_charge(rid, cost)
        fields.pop("charge_id")
        receipt = self.ledger.capture(rid, **fields)
        assert receipt.charge_id == rid and not receipt.duplicate
        assert receipt.hold_expired == (hold.expires_at <= now)
        event(f"capture, hold {'expired' if receipt.hold_expired else 'live'}, x{factor}")
        assert receipt.cost_micros == cost
        hold.state = "captured"
        self.charges[rid] = Charge(cost, today=True)

    @precondition(lambda self: bool(self.holds))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        rid = data.draw(st.sampled_from(sorted(self.holds)))
        hold = self.holds[rid]
        if hold.state == "captured":
            with pytest.raises(ReservationConflict):
                self.ledger.release(rid)
            return
        self.ledger.release(rid)  # releasing twice, or an expired hold, is harmless
        hold.state = "released"
        event("release")

    @precondition(lambda self: not self.waited and any(h.state == "held" and h.short for h in self.holds.values()))
    @rule()
    def wait_for_expiry(self) -> None:
        """Let every short hold still held expire by itself (once per example: it costs real time)."""
        last = max(h.expires_at for h in self.holds.values() if h.state == "held" and h.short)
        time.sleep(max(0.0, (last - datetime.now(UTC)).total_seconds()) + 0.01)
        self.waited = True
        event("waited for short holds to expire")

    @rule(tokens=st.integers(1, 500), today=st.booleans())
    def record_plain(self, tokens: int, today: bool) -> None:
        """A charge without a reservation: never refused, even past the limit."""
        charge_id = self._next("c")
        occurred = datetime.now(UTC) - (timedelta(0) if today else timedelta(days=1))
        receipt = self.ledger.record_charge(**tokens_charge(charge_id, tokens, occurred_at=occurred),
                                            account_id=ACCOUNT)
        assert not receipt.duplicate and receipt.cost_micros == tokens
        self.charges[charge_id] = Charge(tokens, today)

    @precondition(lambda self: any(not c.reversed for c in self.charges.values()))
    @rule(data=st.data())
    def reverse(self, data: st.DataObject) -> None:
        charge_id = data.draw(st.sampled_from(sorted(i for i, c in self.charges.items() if not c.reversed)))
        self.ledger.reverse_charge(charge_id, "state machine", account_id=ACCOUNT)
        self.charges[charge_id].reversed = True

    @rule()
    def fold(self) -> None:
        self.ledger.fold_spend()

    @rule(amount=st.integers(1, 2_000))
    def grant(self, amount: int) -> None:
        self.ledger.grant_credits(ACCOUNT, amount, grant_id=self._next("g"))
        self.granted += amount

    # -- invariants ---------------------------------------------------------------------

    @invariant()
    def statuses_equal_the_model(self) -> None:
        now = self._settle_clock()
        held, spent = self._active(now), self._spent()
        tok = self.ledger.budget_status("tok")
        assert (tok.limit_tokens, tok.spent_tokens, tok.held_tokens) == (LIMIT_TOKENS, spent, held)
        assert tok.remaining_tokens == max(0, LIMIT_TOKENS - spent - held) >= 0
        cred = self.ledger.budget_status("cred")
        used = self._credit_used()
        assert (cred.limit_micros, cred.spent_micros, cred.held_micros) == (self.granted, used, held)
        assert cred.remaining_micros == max(0, self.granted - used - held) >= 0
        balance = self.ledger.balance(ACCOUNT)
        assert balance.granted_micros == self.granted
        assert balance.balance_micros == self.granted - used
        assert balance.overage_micros == max(0, spent - self.granted)

    @invariant()
    def reservations_never_granted_beyond_a_limit(self) -> None:
        """Each reservation's state is the model's, and the holds alone never exceed either limit.

        Plain charges and captures above the estimate may push spent past the
        limit (they describe calls that happened); holds never do: each was
        granted only if spent + held + estimate fitted, spent is never
        negative, and neither limit shrinks here.
        """
        now = self._settle_clock()
        states = {rid: self.ledger.reservation_state(rid) for rid in self.holds}
        expected = {rid: ("expired" if h.state == "held" and h.expires_at <= now else h.state)
                    for rid, h in self.holds.items()}
        assert states == expected
        held = self.ledger.budget_status("tok").held_tokens
        assert held <= LIMIT_TOKENS and held <= self.granted


BudgetMachine.TestCase.settings = settings(
    max_examples=50 * settings.default.max_examples // 100,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_budget_state_machine = pytest.mark.long(BudgetMachine.TestCase)
