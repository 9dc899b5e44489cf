"""The Account aggregate and its events: the ledger's only source of truth.

One event stream per account. The aggregate keeps just its running totals, so
loading, copying and snapshotting it costs the same on day one and day 1,000;
which charge ids exist is the charge-id index's business (see
:mod:`ledger.store.charge_index`).

Each event carries everything a projection needs (account, user, date, keys,
tokens) so read models can be rebuilt from the log alone, even after
compaction pruned the charges a rollup stands for.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from ledger.charge_fields import (
    RECORDED_EVENT_FIELDS,
    REVERSED_EVENT_FIELDS,
    event_annotations,
)
from ledger.measures import MEASURES, Figures, event_figures

#: Namespace of account ids; changing it would orphan every stream.
ACCOUNT_NAMESPACE = uuid5(NAMESPACE_URL, "urn:llm-usage-ledger:account")


@lru_cache(maxsize=65_536)
def account_uuid(account_id: str) -> UUID:
    """The stream id of an account key, the same in every process."""
    return uuid5(ACCOUNT_NAMESPACE, account_id)


@dataclass(frozen=True)
class Totals:
    """Counted charges, tokens and cost, net of reversals (fields in MEASURES order)."""

    charges: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost_micros: int = 0
    unpriced_charges: int = 0

    @classmethod
    def of_unpriced(cls, charges: int, prompt_tokens: int, completion_tokens: int, total_tokens: int) -> Totals:
        """Totals of charges no price covered: no cost, every charge unpriced."""
        return cls(charges, prompt_tokens, completion_tokens, total_tokens, 0, charges)

    def __add__(self, other: Totals) -> Totals:
        return Totals(*(a + b for a, b in zip(self.figures, other.figures)))

    def __neg__(self) -> Totals:
        return Totals(*(-a for a in self.figures))

    @property
    def figures(self) -> Figures:
        return tuple(getattr(self, name) for name in MEASURES)  # type: ignore[return-value]


class Account(Aggregate):
    """An account: who is billed. Its events are the charges made to it."""

    #: Defaults for accounts snapshotted before costs existed.
    cost_micros = 0
    unpriced_charges = 0

    @staticmethod
    def create_id(account_id: str) -> UUID:
        return account_uuid(account_id)

    @event("Opened")
    def __init__(self, account_id: str) -> None:
        self.account_id = account_id
        self.charges = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.total_tokens = 0
        self.cost_micros = 0
        self.unpriced_charges = 0

    @property
    def totals(self) -> Totals:
        return Totals(*(getattr(self, name) for name in MEASURES))

    def _add(self, sign: int, event: Account.ChargeRecorded | Account.ChargeReversed) -> None:
        """Count a charge's figures (``sign`` -1 takes a reversed one back)."""
        figures = event_figures(
            {"prompt_tokens": event.prompt_tokens, "completion_tokens": event.completion_tokens,
             "total_tokens": event.total_tokens, "cost_micros": event.cost_micros},
            sign,
        )
        for name, value in zip(MEASURES, figures):
            setattr(self, name, getattr(self, name) + value)

    class ChargeRecorded(Aggregate.Event):
        """An accepted charge: immutable once stored (invariant 5).

        Its fields are :data:`~ledger.charge_fields.RECORDED_EVENT_FIELDS`.
        ``cost_micros`` is its cost by the catalogue price of version
        ``price_version`` in effect at ``occurred_at``; both are None for an
        unpriced charge (and for charges recorded before prices existed).
        The append path writes these events without loading the account
        (see :mod:`ledger.appender`); replaying one adds it to the totals.
        """

        __annotations__ = event_annotations(RECORDED_EVENT_FIELDS)
        cost_micros = None
        price_version = None

        def apply(self, aggregate: Account) -> None:
            aggregate._add(1, self)

    class ChargeReversed(Aggregate.Event):
        """Cancels a recorded charge by a new event; the original stays in the log.

        Its fields are :data:`~ledger.charge_fields.REVERSED_EVENT_FIELDS`: the
        charge's own cost and price version among them, so it takes back
        exactly what the charge added.
        """

        __annotations__ = event_annotations(REVERSED_EVENT_FIELDS)
        cost_micros = None
        price_version = None

        def apply(self, aggregate: Account) -> None:
            aggregate._add(-1, self)

    def reverse_charge(self, **facts: Any) -> None:
        """Reverse a charge: ``facts`` are the ChargeReversed event's fields."""
        self.trigger_event(self.ChargeReversed, **facts)

    @event("DayRolledUp")
    def roll_up_day(
        self,
        account_id: str,
        billing_date: str,
        time_zone: str,
        groups: list[dict[str, Any]],
        charges: int,
        events: int,
        digest: str,
        first_position: int | None,
        last_position: int | None,
        recorded_at: datetime,
    ) -> None:
        """A closed day's totals, standing for the raw events compaction prunes.

        ``groups`` holds one dict per (user_id, charge_type, provider, model) with
        ``charges``, ``prompt_tokens``, ``completion_tokens``, ``total_tokens``,
        ``cost_micros`` and ``unpriced_charges`` (the last two absent in rollups
        written before costs existed: see :func:`ledger.measures.group_figures`):
        projections *set* the day to these values. It changes no running total:
        the events it summarises were counted when they were recorded.
        """


#: Topics of the events projections must understand: the log's contract.
CHARGE_RECORDED_TOPIC = "ledger.domain:Account.ChargeRecorded"
CHARGE_REVERSED_TOPIC = "ledger.domain:Account.ChargeReversed"
DAY_ROLLED_UP_TOPIC = "ledger.domain:Account.DayRolledUp"
ACCOUNT_OPENED_TOPIC = "ledger.domain:Account.Opened"
