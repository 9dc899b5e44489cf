"""The events stay library events: the stock eventsourcing stack reads the ledger's store.

An ``Application`` of the stock ``eventsourcing`` library with the stock
``eventsourcing_sqlalchemy`` persistence module (none of the ledger's
persistence code) loads every account, compacted ones included, and gets the
totals the ledger reports.
"""

from __future__ import annotations

from datetime import date, timedelta

from eventsourcing.application import Application

from ledger import Ledger, Settings
from ledger.compaction import compact
from ledger.domain import account_uuid
from projections import Projector


class StockLedger(Application):
    """Named like the ledger, so it reads the same ``ledger_events`` and ``ledger_snapshots``."""

    name = "Ledger"


def test_the_stock_library_loads_every_account_with_the_same_totals(store_url):
    ledger = Ledger(Settings(database_url=store_url))
    accounts = [f"acct-{i}" for i in range(5)]
    try:
        items = [
            dict(charge_id=f"c-{n}", account_id=accounts[n % 5], user_id="u", charge_type="completion",
                 prompt_tokens=n, completion_tokens=n % 7, occurred_at=f"2026-01-0{1 + n % 3}T08:00:00Z")
            for n in range(150)
        ]
        assert all(o.ok for o in ledger.record_charges(items[:100]))
        for item in items[100:]:
            ledger.record_charge(**item)
        ledger.reverse_charge("c-3", "refund")
        projector = Projector(ledger)
        projector.run()
        result = compact(ledger, before=date(2026, 1, 3), projected_position=projector.position(),
                         grace=timedelta(0))
        assert result.events_pruned > 0
        ledger.record_charge(**{**items[0], "charge_id": "late", "occurred_at": "2026-01-01T09:00:00Z"})
        ledger.sequence()  # on PostgreSQL the late charge reaches the log now
        stock = StockLedger(env={
            "PERSISTENCE_MODULE": "eventsourcing_sqlalchemy",
            "SQLALCHEMY_URL": store_url,
            "IS_SNAPSHOTTING_ENABLED": "y",
        })
        try:
            for account in accounts:
                loaded = stock.repository.get(account_uuid(account))
                assert loaded.totals == ledger.account_totals(account), account
            assert sum(stock.repository.get(account_uuid(a)).totals.charges for a in accounts) == 150
        finally:
            stock.close()
    finally:
        ledger.close()
