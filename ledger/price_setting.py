"""Setting prices: new PriceSet events on the catalogue, saved while appends' catalogue checks wait.

Each price is validated first, so a set is stored whole or not at all. A
price equal to one already in the catalogue (same key, same effective time,
same rates) adds nothing and answers with that one, so importing a
catalogue file twice is harmless. The save holds the store's price lock,
so an append that costed its charges with the previous catalogue sees the
new version and re-costs (see :meth:`ledger.appender.Appender.append`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from ledger.backoff import backoff
from ledger.errors import BusyAccount, InvalidPrice
from ledger.pricing import CATALOGUE_ID, Price, PriceCatalogue, PriceTable

if TYPE_CHECKING:
    from ledger.application import Ledger


def set_prices(ledger: Ledger, entries: Sequence[Mapping[str, Any]]) -> tuple[list[Price], PriceTable]:
    """Store validated price entries; the prices as stored, and the catalogue's table after them."""
    for attempt in range(ledger.settings.retry_attempts):
        try:
            return _set_prices(ledger, entries)
        except IntegrityError:  # another process set a price at the same version
            ledger.price_table(refresh=True)
            backoff(attempt)
    raise BusyAccount("could not set prices: concurrent price changes kept conflicting")


def _set_prices(ledger: Ledger, entries: Sequence[Mapping[str, Any]]) -> tuple[list[Price], PriceTable]:
    currency = ledger.settings.currency
    try:
        catalogue: PriceCatalogue = ledger.repository.get(CATALOGUE_ID)
    except AggregateNotFoundError:
        catalogue = PriceCatalogue(currency)
    if catalogue.currency != currency:
        raise InvalidPrice({"currency": (
            f"the catalogue is in {catalogue.currency}; this ledger is set to {currency} (LEDGER_CURRENCY)"
        )})
    known = [Price.from_entry(entry) for entry in catalogue.prices]
    result: list[Price] = []
    for values in entries:
        wanted = Price(version=0, **values)
        same = next((p for p in known if p.same_terms(wanted)), None)
        if same is None:
            catalogue.set_price(**values)
            same = Price.from_entry(catalogue.prices[-1])
            known.append(same)
        result.append(same)
    if catalogue.pending_events:
        with ledger.store.transaction(commit=True) as session:
            ledger.store.lock_prices(session)
            ledger.save(catalogue)
    return result, PriceTable.of(catalogue)
