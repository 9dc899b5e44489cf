"""The background side: the Huey queue and the ledger's tasks.

As the seed's ``…account.tasks`` did::

    from jobs import create_charge, aggregate_charges, aggregate_daily_billing_records
    create_charge.delay(user_profile_id=123, charge_type="usage", prompt_tokens=100, completion_tokens=50)

Run a consumer with ``huey_consumer jobs.huey`` or ``ledger worker``.
"""

from jobs.queue import describe, huey, queue_url, use_queue
from jobs.rejected import RejectedCharge, dismiss, list_rejected, resubmit
from jobs.tasks import (
    aggregate,
    aggregate_charges,
    aggregate_daily_billing_records,
    close_ledger,
    create_charge,
    get_ledger,
)

__all__ = [
    "RejectedCharge",
    "aggregate",
    "aggregate_charges",
    "aggregate_daily_billing_records",
    "close_ledger",
    "create_charge",
    "describe",
    "dismiss",
    "get_ledger",
    "huey",
    "list_rejected",
    "queue_url",
    "resubmit",
    "use_queue",
]
