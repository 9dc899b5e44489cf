"""The delivery knobs of the background jobs, from the environment.

They live beside :class:`ledger.settings.Settings` (same ``LEDGER_`` prefix,
no ``.env``) because only the queue reads them.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class DeliverySettings(BaseSettings):
    """How long a taken task is reserved for its consumer, and how many a worker takes."""

    model_config = SettingsConfigDict(env_prefix="LEDGER_", frozen=True, extra="ignore")

    #: A consumer's tasks are re-run elsewhere once its heartbeat is this old;
    #: the aggregation lock expires after the same time without renewal.
    task_lease_seconds: float = Field(default=30.0, gt=0)
    #: Most tasks one worker thread takes from the queue at once; its
    #: create_charge tasks among them are recorded in one transaction.
    task_batch_size: int = Field(default=500, ge=1)

    @property
    def heartbeat_seconds(self) -> float:
        """Renew well inside the lease, so a busy process never lets it lapse."""
        return self.task_lease_seconds / 5
