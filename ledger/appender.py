"""The append path for charges: validated charges become the log's events, without loading accounts.

Recording a charge needs no account state to decide (validation is done, and
any valid charge may be appended), only the charge-id index and, in the log,
the account's next version; the store checks the first and numbers the
second in the append's own transaction (:meth:`ledger.store.base.Store.append`).
So the hot path does not load the aggregate. Events are encoded here exactly
as the application's mapper would, so aggregates, projections and audits
read them like any other; each charge is costed with the price catalogue
the store confirms is still the latest.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

import orjson
from eventsourcing.persistence import JSONTranscoder, Mapper

from ledger.charge_fields import RECORDED_EVENT_FIELDS
from ledger.charges import Charge
from ledger.domain import Account, account_uuid
from ledger.errors import BusyAccount
from ledger.store._moved import moved
from ledger.store.base import Appended, ChargeBatch, StaleCatalogue

if TYPE_CHECKING:
    from ledger.pricing import PriceTable
    from ledger.store.base import Store

__all__ = ["Appended", "Appender", "Cost", "StaleCatalogue", "recorded_facts"]

#: (cost_micros, price_version) of one charge; (None, None) when unpriced.
Cost = tuple["int | None", "int | None"]

#: Re-costing attempts when prices change under a batch (each a price set).
STALE_CATALOGUE_RETRIES = 20

#: Cached per appender: an account's stream id and Opened state never change.
_CACHE_LIMIT = 100_000


class PriceSource(Protocol):
    """The price catalogue as last read, or read again (``Ledger.price_table``)."""

    def __call__(self, *, refresh: bool = False) -> PriceTable: ...


class Appender:
    """Encodes and costs validated charges, and appends them through the store."""

    def __init__(self, store: Store, mapper: Mapper, prices: PriceSource) -> None:
        self.store = store
        self.mapper = mapper
        self.prices = prices
        self._opened_state_cache: dict[str, bytes] = {}
        self._originator_cache: dict[str, UUID] = {}
        self._direct = (
            isinstance(mapper.transcoder, JSONTranscoder) and mapper.cipher is None and mapper.compressor is None
        )

    # -- encoding ------------------------------------------------------------

    def charge_state(
        self, charge: Charge, originator_id: UUID, recorded_at: datetime, cost: Cost = (None, None)
    ) -> bytes:
        """The stored state of a ChargeRecorded event, as ``Application.save`` writes it.

        With the plain JSON transcoder (no cipher, no compressor) the state is
        built directly, byte for byte what the mapper writes (a test holds the
        two equal); otherwise the event goes through the mapper.
        """
        if not self._direct:
            return self.mapper.to_stored_event(
                self._charge_event(charge, originator_id, recorded_at, cost)
            ).state
        facts = recorded_facts(charge, recorded_at, cost)
        for name in ("occurred_at", "recorded_at"):
            facts[name] = {"_type_": "datetime_iso", "_data_": facts[name].isoformat()}
        return orjson.dumps({"timestamp": facts["recorded_at"], **facts})

    @staticmethod
    def _charge_event(charge: Charge, originator_id: UUID, recorded_at: datetime, cost: Cost) -> Account.ChargeRecorded:
        return Account.ChargeRecorded(
            originator_id=originator_id,
            originator_version=0,  # a column, not state: the store numbers it
            timestamp=recorded_at,
            **recorded_facts(charge, recorded_at, cost),
        )

    def opened_state(self, account_id: str) -> bytes:
        """The stored state of an account's Opened event (used when it has no stream yet)."""
        state = self._opened_state_cache.get(account_id)
        if state is None:
            (opened,) = Account(account_id=account_id).collect_events()
            state = self.mapper.to_stored_event(opened).state
            if len(self._opened_state_cache) < _CACHE_LIMIT:
                self._opened_state_cache[account_id] = state
        return state

    # -- appending -----------------------------------------------------------

    def append(self, charges: Sequence[Charge], recorded_at: datetime) -> list[Appended]:
        """Append in one transaction; per charge, where it landed or what was known.

        Each charge is costed with the catalogue as the ledger last read it;
        in the append's transaction the store confirms that catalogue is still
        the latest (a price being set waits for, and holds off, that check),
        else the batch is re-costed with the new one and tried again, so a
        charge is never costed with a price set before it was stored but missed.
        """
        for _ in range(STALE_CATALOGUE_RETRIES):
            prices = self.prices()
            try:
                return self._append_costed(charges, prices, recorded_at)
            except StaleCatalogue:
                self.prices(refresh=True)
        raise BusyAccount("prices kept changing while the charges were costed; nothing was stored, retry")

    def _append_costed(
        self, charges: Sequence[Charge], prices: PriceTable, recorded_at: datetime
    ) -> list[Appended]:
        batch, costs = self.batch_of(charges, prices, recorded_at)
        return self.costed(self.store.append(batch), costs)

    @staticmethod
    def costed(results: Sequence[Appended], costs: Sequence[Cost]) -> list[Appended]:
        """The store's answers, each new charge with the cost it was stored with."""
        return [r if r.known else Appended(r.position, cost=k) for r, k in zip(results, costs)]

    def batch_of(
        self, charges: Sequence[Charge], prices: PriceTable, recorded_at: datetime
    ) -> tuple[ChargeBatch, list[Cost]]:
        """The store's batch for ``charges`` costed with ``prices``, and each one's cost."""
        originators = [self.originator(c.account_id) for c in charges]
        costs = [prices.cost(c) for c in charges]
        entries = [c.index_entry({"cost_micros": k[0], "price_version": k[1]}) for c, k in zip(charges, costs)]
        batch = ChargeBatch(
            charge_ids=[c.charge_id for c in charges],
            account_ids=[c.account_id for c in charges],
            originators=originators,
            hashes=[digest for _, digest in entries],
            payloads=[payload for payload, _ in entries],
            states=[self.charge_state(c, o, recorded_at, k) for c, o, k in zip(charges, originators, costs)],
            opened_states=self._opened_states(charges),
            recorded_at=recorded_at,
            catalogue_version=prices.version,
            user_ids=[c.user_id for c in charges],
            occurred_ats=[c.occurred_at.astimezone(UTC) for c in charges],
            costs=[k[0] for k in costs],
            tokens=[c.total_tokens for c in charges],
        )
        return batch, costs

    def _opened_states(self, charges: Sequence[Charge]) -> list[bytes]:
        """Each account's Opened state at its first charge of the batch, ``b""`` at the others."""
        opened: list[bytes] = []
        first: set[str] = set()
        for charge in charges:
            if charge.account_id in first:
                opened.append(b"")
            else:
                first.add(charge.account_id)
                opened.append(self.opened_state(charge.account_id))
        return opened

    def originator(self, account_id: str) -> UUID:
        """The account's stream id (cached: the same for every charge of the account)."""
        originator = self._originator_cache.get(account_id)
        if originator is None:
            originator = account_uuid(account_id)
            if len(self._originator_cache) < _CACHE_LIMIT:
                self._originator_cache[account_id] = originator
        return originator


def recorded_facts(charge: Charge, recorded_at: datetime, cost: Cost) -> dict[str, Any]:
    """A ChargeRecorded event's fields for ``charge``, in the order its state is written."""
    derived = {"recorded_at": recorded_at, "cost_micros": cost[0], "price_version": cost[1]}
    return {
        name: derived[name] if name in derived else getattr(charge, name) for name in RECORDED_EVENT_FIELDS
    }


__getattr__ = moved(__name__, {
    "INTAKE": "ledger.store.pg_calls:INTAKE",
    "LOCKED": "ledger.store.pg_calls:LOCKED",
    "Statements": "ledger.store.pg_calls:Statements",
})
