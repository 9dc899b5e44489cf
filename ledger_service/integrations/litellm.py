"""LiteLLM's calls as the ledger's charges: a ``CustomLogger`` for the SDK and the proxy (docs/integrations/litellm.md).

``LedgerCallback(ledger=...)`` records in this process; ``LedgerCallback(url=..., key=...)``
sends to ``ledger serve`` in batches. On the proxy its pre-call hook also
reserves each call's estimate against the account's budgets, its success
callback captures the real charge and its failure callbacks release the hold.

Importing this module imports LiteLLM (the ``[litellm]`` extra); the
``ledger_service.integrations`` package and the ``ledger`` core never do. It
sets ``LITELLM_LOCAL_MODEL_COST_MAP=True`` unless already set, so importing
LiteLLM reads its bundled price map instead of fetching one over the network:
the ledger costs every charge from its own catalogue.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from litellm.integrations.custom_logger import CustomLogger

from ledger.errors import BudgetExceeded, ReservationConflict
from ledger_service.integrations.litellm_budgets import (
    DEFAULT_ESTIMATE_MICROS,
    DEFAULT_MAX_TOKENS,
    BudgetRefused,
    CallIdReused,
    Estimate,
    Estimator,
    Hold,
    Holds,
    LedgerUnavailable,
    estimate,
)
from ledger_service.integrations.litellm_charges import (
    ACCOUNT_KEY,
    ACCOUNT_SOURCES,
    AccountFrom,
    CallIdentity,
    UserFrom,
    account_resolver,
    default_user,
    logged_call,
    logged_identity,
    request_identity,
)
from ledger_service.integrations.litellm_local import LocalLedger
from ledger_service.integrations.litellm_remote import RemoteLedger
from ledger_service.integrations.litellm_tally import Counts, Tally, log

if TYPE_CHECKING:
    from ledger import Ledger

__all__ = ["ACCOUNT_SOURCES", "BudgetRefused", "CallIdReused", "CallIdentity", "Counts", "LedgerCallback",
           "LedgerUnavailable"]


class LedgerCallback(CustomLogger):
    """Turns each successful LiteLLM call into a charge; on the proxy, holds budget before each call.

    Give ``ledger=`` (in process) or ``url=`` and ``key=`` (an ingest key of
    ``ledger serve``). ``account_from`` names where a call's account comes
    from: a callable taking a :class:`CallIdentity`, or source names tried in
    order among ``"metadata"`` (``ledger_account_id`` in the call's metadata),
    ``"key"`` (the same in the proxy key's metadata), ``"team"`` (the key's
    team id), ``"end_user"`` and ``"user"``; by default
    ``("metadata", "team", "end_user")``.
    """

    def __init__(
        self,
        ledger: Ledger | None = None,
        *,
        url: str | None = None,
        key: str | None = None,
        account_from: Sequence[str] | str | AccountFrom | None = None,
        account_key: str = ACCOUNT_KEY,
        user_from: UserFrom | None = None,
        charge_cache_hits: bool = False,
        spill_path: str | os.PathLike[str] | None = None,
        budgets: bool = True,
        hold_seconds: int = 600,
        default_max_tokens: int = DEFAULT_MAX_TOKENS,
        default_estimate_micros: int = DEFAULT_ESTIMATE_MICROS,
        estimate_micros: Estimator | None = None,
        refusal_status: Literal[402, 429] = 402,
        budget_unavailable: Literal["allow", "refuse"] = "allow",
        deadline_seconds: float | None = None,
        batch_size: int = 100,
        buffer_size: int = 10_000,
        block_seconds: float = 5.0,
        timeout_seconds: float = 10.0,
        max_backoff_seconds: float = 30.0,
    ) -> None:
        super().__init__()
        if (ledger is None) == (url is None):
            raise ValueError("LedgerCallback: give either ledger= (in process) or url= and key= (ledger serve)")
        if url is not None and not key:
            raise ValueError("LedgerCallback: key= is required with url= (an ingest key: ledger keys create --role ingest)")
        if refusal_status not in (402, 429):
            raise ValueError(f"refusal_status: 402 or 429, got {refusal_status!r}")
        if budget_unavailable not in ("allow", "refuse"):
            raise ValueError(f"budget_unavailable: 'allow' or 'refuse', got {budget_unavailable!r}")
        for name, value in (("default_estimate_micros", default_estimate_micros),
                            ("default_max_tokens", default_max_tokens), ("hold_seconds", hold_seconds)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name}: a positive integer, got {value!r}")
        self.account_of = account_resolver(account_from, account_key)
        self.tally = Tally(spill_path)
        self.destination: LocalLedger | RemoteLedger = (
            LocalLedger(ledger, self.tally, deadline_seconds=deadline_seconds) if ledger is not None else
            RemoteLedger(str(url), str(key), self.tally, batch_size=batch_size, buffer_size=buffer_size,
                         block_seconds=block_seconds, timeout_seconds=timeout_seconds,
                         max_backoff_seconds=max_backoff_seconds))
        self.user_of: UserFrom = user_from or default_user
        self.charge_cache_hits = charge_cache_hits
        self.budgets = budgets
        self.hold_seconds = hold_seconds
        self.default_max_tokens = default_max_tokens
        self.default_estimate_micros = default_estimate_micros
        self.estimate_micros = estimate_micros
        self.refusal_status = refusal_status
        self.budget_unavailable = budget_unavailable
        self.holds = Holds(hold_seconds)

    # -- what the callback has done ---------------------------------------------

    @property
    def counts(self) -> Counts:
        """How many calls ended each way (recorded, duplicates, unresolved, rejected, failed, dropped, ...)."""
        return self.tally.snapshot()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every charge handed over is acknowledged by the ledger; False if ``timeout`` came first."""
        return self.destination.flush(timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        """Flush (remote mode), then stop; what is still unacknowledged is logged, counted and spilled."""
        self.destination.close(timeout)

    # -- a call's charge ---------------------------------------------------------

    def charge_of(self, kwargs: Mapping[str, Any], response: Any, start_time: Any) -> tuple[dict[str, Any], Hold | None] | None:
        """The charge of a successful call and the hold it settles; None when it is not charged (counted)."""
        call = logged_call(kwargs, response, start_time)
        hold = self.holds.take(call.call_id)
        charge = dict(call.charge)
        if call.cache_hit:
            if not self.charge_cache_hits:
                self.tally.add("cache_hits")
                if hold is not None:
                    self._release(hold)
                return None
            if call.call_id:  # the cached response's id is the first call's: this call is another charge
                charge["charge_id"] = call.call_id
        identity = logged_identity(kwargs)
        user = self.user_of(identity)
        if user:
            charge["user_id"] = user
        account = hold.account_id if hold is not None else self.account_of(identity)
        if not account:
            self.tally.lost("unresolved", charge, "no account: set ledger_account_id in the call's metadata, "
                            "or configure account_from (docs/integrations/litellm.md)")
            return None
        charge["account_id"] = account
        return charge, hold

    def log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        try:
            found = self.charge_of(kwargs, response_obj, start_time)
            if found is not None:
                self.destination.deliver(*found)
        except Exception:  # noqa: BLE001 - never break the caller's call; say so loudly
            self.tally.add("failed")
            log.exception("ledger: the success callback failed; the call was not recorded: %s", _call_id(kwargs))

    async def async_log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        try:
            found = self.charge_of(kwargs, response_obj, start_time)
            if found is None:
                return
            remote = isinstance(self.destination, RemoteLedger)
            if not (remote and self.destination.offer(*found)):  # type: ignore[union-attr]
                await asyncio.to_thread(self.destination.deliver, *found)
        except Exception:  # noqa: BLE001
            self.tally.add("failed")
            log.exception("ledger: the success callback failed; the call was not recorded: %s", _call_id(kwargs))

    # -- failures release the hold ------------------------------------------------

    def log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        hold = self.holds.take(_call_id(kwargs))
        if hold is not None:
            self._release(hold)

    async def async_log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        hold = self.holds.take(_call_id(kwargs))
        if hold is not None:
            await asyncio.to_thread(self._release, hold)

    async def async_post_call_failure_hook(self, request_data: dict, original_exception: Exception,
                                           user_api_key_dict: Any, traceback_str: str | None = None) -> None:
        """The proxy failed the request (the model, or a later hook): release its hold, if any."""
        hold = self.holds.take(_text(request_data.get("litellm_call_id")))
        if hold is not None:
            await asyncio.to_thread(self._release, hold)

    def _release(self, hold: Hold) -> None:
        try:
            self.destination.release(hold)
            self.tally.add("released")
        except Exception as exc:  # noqa: BLE001 - the hold lapses at its expiry anyway
            log.warning("ledger: releasing reservation %s failed (%s); it lapses at its expiry",
                        hold.reservation_id, exc)

    # -- the proxy's budget gate ---------------------------------------------------

    async def async_pre_call_hook(self, user_api_key_dict: Any, cache: Any, data: dict, call_type: Any) -> None:
        """Reserve the call's estimate under its ``litellm_call_id``; refuse the call when a budget cannot hold it.

        A refusal raises :class:`BudgetRefused`, an ``HTTPException`` the proxy
        answers with ``refusal_status`` (402 by default) naming the budget. A
        call whose account cannot be resolved is not reserved (its charge is
        counted ``unresolved`` after the call).
        """
        if not self.budgets:
            return
        call_id = _text(data.get("litellm_call_id"))
        identity = request_identity(data, user_api_key_dict)
        account = self.account_of(identity)
        if call_id is None or not account:
            return
        hold = Hold(call_id, account, self.user_of(identity) or None, time.monotonic())
        try:
            guess = await asyncio.to_thread(self.estimate, data)
            reused = await asyncio.to_thread(self.destination.reserve, hold, guess.micros, guess.tokens,
                                             self.hold_seconds)
        except BudgetExceeded as refused:
            self.tally.add("refused")
            log.info("ledger: call %s refused: %s", call_id, refused)
            raise BudgetRefused(refused, self.refusal_status) from None
        except ReservationConflict:
            reused = True
        except Exception as exc:  # noqa: BLE001 - the ledger could not be asked
            if self.budget_unavailable == "refuse":
                log.error("ledger: no reservation for call %s, refusing it: %s", call_id, exc)
                raise LedgerUnavailable(str(exc)) from None
            self.tally.add("unreserved")
            log.warning("ledger: no reservation for call %s, letting it through unreserved: %s", call_id, exc)
            return
        if reused:
            self.tally.add("refused")
            raise CallIdReused(call_id)
        self.holds.add(hold)
        self.tally.add("reserved")

    def estimate(self, data: Mapping[str, Any]) -> Estimate:
        """The call's estimate: ``estimate_micros(data)`` when given, else from ``max_tokens`` and the catalogue."""
        guess = estimate(data, self.destination.prices(), default_max_tokens=self.default_max_tokens,
                         default_micros=self.default_estimate_micros)
        if self.estimate_micros is not None:
            return Estimate(max(1, int(self.estimate_micros(data))), guess.tokens)
        return guess


def _call_id(kwargs: Any) -> str | None:
    if not isinstance(kwargs, Mapping):
        return None
    logged = kwargs.get("standard_logging_object")
    found = logged.get("litellm_call_id") if isinstance(logged, Mapping) else None
    return _text(found) or _text(kwargs.get("litellm_call_id"))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
