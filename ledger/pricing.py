"""Prices: a versioned catalogue, the rule that costs a charge, and lookups.

The catalogue is an event-sourced aggregate in the ledger's own log: every
price ever set is a ``PriceSet`` event, so the catalogue as it stood at any
version can be replayed, and a charge pins the version of the price that
costed it.

Prices are integers: micro-units of the catalogue's currency (e.g. micro-USD)
per million tokens, for prompt and completion tokens, plus an optional fixed
fee per call. A price applies to charges whose ``occurred_at`` is at or after
its ``effective_from``; of several, the latest effective one wins, and of two
with the same effective time, the later set.

Rounding rule: a charge's cost is computed exactly in integers and rounded
once, half up, to a whole micro-unit::

    cost_micros = (prompt_tokens * prompt_rate
                   + completion_tokens * completion_rate
                   + unsplit_tokens * prompt_rate
                   + 500_000) // 1_000_000 + per_call_micros

(``unsplit_tokens`` are those of a charge that gives only a total, costed at
the prompt rate). Every total is a sum of these integers, so a day, a month
or an account always equals the sum of its charges, to the micro-unit.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from ledger.errors import InvalidPrice
from ledger.text import field_name

if TYPE_CHECKING:
    from ledger.charges import Charge

#: The one catalogue's stream id.
CATALOGUE_ID = uuid5(NAMESPACE_URL, "urn:llm-usage-ledger:price-catalogue")
MICROS_PER_MILLION = 1_000_000
#: A rate above this (a million currency units per million tokens) is a typo.
MAX_RATE = 10**12
MAX_PER_CALL = 10**12
PRICE_FIELDS = (
    "provider",
    "model",
    "charge_type",
    "prompt_micros_per_million",
    "completion_micros_per_million",
    "per_call_micros",
    "effective_from",
    "note",
)


class PriceCatalogue(Aggregate):
    """Every price ever set, in order; nothing is edited or removed."""

    @staticmethod
    def create_id(currency: str) -> UUID:
        return CATALOGUE_ID

    @event("Created")
    def __init__(self, currency: str) -> None:
        self.currency = currency
        self.prices: list[dict[str, Any]] = []

    @event("PriceSet")
    def set_price(
        self,
        provider: str | None,
        model: str | None,
        charge_type: str | None,
        prompt_micros_per_million: int,
        completion_micros_per_million: int,
        per_call_micros: int,
        effective_from: datetime,
        note: str | None,
    ) -> None:
        """A price from ``effective_from`` on; its version is this event's."""
        self.prices.append(
            {
                "version": self.version + 1,  # the library numbers the event after this body
                "provider": provider,
                "model": model,
                "charge_type": charge_type,
                "prompt_micros_per_million": prompt_micros_per_million,
                "completion_micros_per_million": completion_micros_per_million,
                "per_call_micros": per_call_micros,
                "effective_from": effective_from,
                "note": note,
            }
        )


@dataclass(frozen=True, slots=True)
class Price:
    """One price as set: the rates, when it starts, and its catalogue version."""

    version: int
    provider: str | None
    model: str | None
    charge_type: str | None
    prompt_micros_per_million: int
    completion_micros_per_million: int
    per_call_micros: int
    effective_from: datetime
    note: str | None = None

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any]) -> Price:
        return cls(**{name: entry.get(name) for name in ("version",) + PRICE_FIELDS})

    def cost_micros(self, prompt_tokens: int, completion_tokens: int, total_tokens: int) -> int:
        """The charge's cost, rounded once, half up (see the module doc)."""
        return self._token_micros(prompt_tokens, completion_tokens, total_tokens) + self.per_call_micros

    def group_cost_micros(self, charges: int, prompt_tokens: int, completion_tokens: int, total_tokens: int) -> int:
        """The cost of a group's token sums, rounded once, plus the per-call fee per charge."""
        return self._token_micros(prompt_tokens, completion_tokens, total_tokens) + self.per_call_micros * charges

    def _token_micros(self, prompt_tokens: int, completion_tokens: int, total_tokens: int) -> int:
        unsplit = total_tokens - prompt_tokens - completion_tokens
        exact = (
            prompt_tokens * self.prompt_micros_per_million
            + completion_tokens * self.completion_micros_per_million
            + unsplit * self.prompt_micros_per_million
        )
        sign = -1 if exact < 0 else 1  # a reversed group's sums: round its magnitude the same way
        return sign * ((abs(exact) + MICROS_PER_MILLION // 2) // MICROS_PER_MILLION)

    def same_terms(self, other: Price) -> bool:
        """Equal but for the version: setting it again would change nothing."""
        return all(getattr(self, n) == getattr(other, n) for n in PRICE_FIELDS if n != "note")

    def as_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in ("version",) + PRICE_FIELDS}
        data["effective_from"] = self.effective_from.isoformat()
        return data


PriceKey = tuple["str | None", "str | None", "str | None"]


class PriceTable:
    """A catalogue state, indexed for lookups by key and time."""

    def __init__(self, prices: Iterable[Price], version: int = 0, currency: str | None = None) -> None:
        self.version = version
        self.currency = currency
        self.prices = sorted(prices, key=lambda p: p.version)
        self._by_key: dict[PriceKey, tuple[list[tuple[datetime, int]], list[Price]]] = {}
        grouped: dict[PriceKey, list[Price]] = {}
        for price in self.prices:
            grouped.setdefault((price.provider, price.model, price.charge_type), []).append(price)
        for key, entries in grouped.items():
            entries.sort(key=lambda p: (p.effective_from, p.version))
            self._by_key[key] = ([(p.effective_from, p.version) for p in entries], entries)

    @classmethod
    def of(cls, catalogue: PriceCatalogue | None) -> PriceTable:
        if catalogue is None:
            return cls([], 0, None)
        return cls((Price.from_entry(e) for e in catalogue.prices), catalogue.version, catalogue.currency)

    def price_for(
        self, provider: str | None, model: str | None, charge_type: str | None, at: datetime
    ) -> Price | None:
        """The price in effect at ``at``: for the charge type, else for any charge type."""
        for key in ((provider, model, charge_type), (provider, model, None)):
            found = self._by_key.get(key)
            if found is None:
                continue
            times, entries = found
            i = bisect.bisect_right(times, (at, 2**62)) - 1
            if i >= 0:
                return entries[i]
        return None

    def price_of(self, charge: Charge) -> Price | None:
        """The price that costs ``charge``, or None when it is unpriced."""
        return self.price_for(charge.provider, charge.model, charge.charge_type, charge.occurred_at)

    def cost(self, charge: Charge) -> tuple[int | None, int | None]:
        """``(cost_micros, price_version)`` of a charge; ``(None, None)`` when no price covers it."""
        price = self.price_of(charge)
        if price is None:
            return None, None
        return (
            price.cost_micros(charge.prompt_tokens, charge.completion_tokens, charge.total_tokens),
            price.version,
        )

    def current(self, now: datetime | None = None) -> list[Price]:
        """The prices in effect at ``now`` (default: the present), one per key."""
        now = now or datetime.now(UTC)
        result = []
        for key, (_, entries) in sorted(self._by_key.items(), key=lambda kv: tuple((v is None, v or "") for v in kv[0])):
            price = self.price_for(*key, now)
            if price is not None and (price.provider, price.model, price.charge_type) == key:
                result.append(price)
        return result


# -- validation --------------------------------------------------------------


def validate_price(
    raw: Mapping[str, Any], charge_types: Iterable[str], *, now: datetime | None = None
) -> dict[str, Any]:
    """A caller's price as ``PriceCatalogue.set_price`` arguments, or :class:`InvalidPrice`.

    Rates are integers (no floats: a price must be exact); ``effective_from``
    must carry a time zone and defaults to now.
    """
    from ledger.charges import (  # the charges' own field rules
        instant_field,
        optional_int,
        optional_str,
    )

    if not isinstance(raw, Mapping):
        raise InvalidPrice({"price": f"expected an object of fields, got {type(raw).__name__}"})
    errors: dict[str, str] = {}
    for name in sorted(field_name(k) for k in raw if k not in PRICE_FIELDS):
        errors[name] = "unknown field"
    values: dict[str, Any] = {}
    for name in ("provider", "model", "charge_type"):
        values[name] = optional_str(raw, name, errors, 256)
    values["note"] = optional_str(raw, "note", errors, 1024)
    known = sorted(charge_types)
    if values["charge_type"] is not None and values["charge_type"] not in known:
        errors["charge_type"] = f"unknown charge type {values['charge_type']!r}; expected one of {', '.join(known)}"
    for name, bound, required in (
        ("prompt_micros_per_million", MAX_RATE, True),
        ("completion_micros_per_million", MAX_RATE, True),
        ("per_call_micros", MAX_PER_CALL, False),
    ):
        value = raw.get(name)
        if value is None:
            if required:
                errors[name] = "required: an integer number of micro-units per million tokens"
            values[name] = 0
            continue
        if isinstance(value, float):
            errors[name] = f"expected an integer number of micro-units, got the float {value!r}"
            continue
        values[name] = optional_int(raw, name, errors, minimum=0, maximum=bound)
    effective, _ = instant_field(raw, "effective_from", errors, now)
    values["effective_from"] = effective
    if errors:
        raise InvalidPrice(errors)
    return values


def load_catalogue_file(
    path: str, charge_types: Iterable[str], currency: str
) -> list[dict[str, Any]]:
    """A catalogue file's prices, each validated (errors name ``price[N].field``).

    The file's ``currency``, when given, must be the ledger's: a price in
    another currency would be summed with the wrong unit.
    """
    file_currency, entries = read_catalogue_file(path)
    if file_currency is not None and file_currency != currency:
        raise InvalidPrice({"currency": f"{path} is in {file_currency}; this ledger bills in {currency}"})
    errors: dict[str, str] = {}
    prices = []
    for index, entry in enumerate(entries):
        try:
            prices.append(validate_price(entry, charge_types))
        except InvalidPrice as exc:
            errors.update({f"price[{index}].{name}": message for name, message in exc.errors.items()})
    if errors:
        raise InvalidPrice(errors)
    return prices


def table_of(prices: Iterable[Mapping[str, Any]], currency: str | None = None) -> PriceTable:
    """A catalogue made of validated prices, numbered in order (a scratch catalogue)."""
    return PriceTable(
        (Price(version=n, **values) for n, values in enumerate(prices, start=1)), 0, currency
    )


def read_catalogue_file(path: str) -> tuple[str | None, list[dict[str, Any]]]:
    """A catalogue file's currency and price entries (TOML or JSON).

    TOML: top-level ``currency = "USD"`` and ``[[price]]`` tables; JSON: an
    object with ``currency`` and a ``prices`` list (or just the list).
    """
    import json
    import tomllib

    with open(path, "rb") as handle:
        data = handle.read()
    if path.endswith(".toml"):
        try:
            document: Any = tomllib.loads(data.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise InvalidPrice({"file": f"{path}: not valid TOML: {exc}"}) from None
    else:
        try:
            document = json.loads(data)
        except ValueError as exc:
            raise InvalidPrice({"file": f"{path}: not valid JSON (use .toml for TOML): {exc}"}) from None
    if isinstance(document, list):
        return None, document
    if not isinstance(document, dict):
        raise InvalidPrice({"file": f"{path}: expected a table of prices"})
    entries = document.get("price", document.get("prices", []))
    if not isinstance(entries, list):
        raise InvalidPrice({"prices": f"{path}: expected a list of price tables"})
    currency = document.get("currency")
    if currency is not None and not isinstance(currency, str):
        raise InvalidPrice({"currency": f"{path}: expected a currency code such as \"USD\""})
    return currency, entries
