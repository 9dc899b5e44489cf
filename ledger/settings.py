"""Configuration from the environment, in one place.

Every knob is an environment variable prefixed ``LEDGER_``; nothing reads a
``.env`` file, so what runs is what the process environment says.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from typing_extensions import Annotated

DEFAULT_DATABASE_FILE = "ledger.db"
DEFAULT_CHARGE_TYPES = ("completion", "plugin", "tool", "usage", "subscription")


def default_database_url() -> str:
    """The embedded default: a SQLite file in the working directory."""
    return f"sqlite:///{Path.cwd() / DEFAULT_DATABASE_FILE}"


class Settings(BaseSettings):
    """The ledger's configuration; see docs/CONFIGURATION.md."""

    model_config = SettingsConfigDict(env_prefix="LEDGER_", frozen=True, extra="ignore")

    database_url: str = Field(default_factory=default_database_url)
    huey_url: str | None = None
    billing_tz: str = "UTC"
    charge_types: Annotated[tuple[str, ...], NoDecode] = DEFAULT_CHARGE_TYPES
    max_tokens: int = Field(default=10**12, gt=0)
    max_string_length: int = Field(default=256, gt=0)
    max_reference_length: int = Field(default=1024, gt=0)
    profile_resolver: str = "ledger.charges:default_profile_resolver"
    retry_attempts: int = Field(default=50, ge=1)
    aggregate_cache_size: int = Field(default=10_000, ge=0)
    snapshot_interval: int = Field(default=1_000, ge=10)
    compaction_grace_days: int = Field(default=2, ge=1)
    group_commit_max: int = Field(default=5_000, ge=1)
    group_commit_window_ms: float = Field(default=2.0, ge=0, le=100)
    projector_batch_size: int = Field(default=50_000, ge=1)
    #: PostgreSQL: how long a writer process lets acknowledged charges gather
    #: in the intake before it sequences them into the log, and how many one
    #: sequencing transaction moves at most (see ledger/sequencer.py).
    sequence_interval_ms: float = Field(default=200.0, ge=0, le=10_000)
    sequence_batch_size: int = Field(default=20_000, ge=1)
    #: PostgreSQL: a batch of at least this many charges is appended straight
    #: into the log under its lock instead of through the intake.
    direct_batch_min: int = Field(default=200, ge=1)
    #: Prices: the catalogue's currency (its costs are in micro-units of it),
    #: and what to do with a charge no price covers: "record" it with cost
    #: unknown (counted as unpriced in records and reports) or "reject" it.
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    unpriced: Literal["record", "reject"] = "record"
    #: Background jobs: retries after a transient failure (the budget is fixed
    #: when a task is enqueued), the first retry's delay (doubling after each
    #: attempt, capped), and the daily job's crontab in the billing time zone.
    task_retries: int = Field(default=10, ge=0)
    task_retry_base_seconds: float = Field(default=1.0, gt=0)
    task_retry_max_seconds: float = Field(default=300.0, gt=0)
    aggregate_schedule: str = "15 0 * * *"

    @field_validator("charge_types", mode="before")
    @classmethod
    def _split_charge_types(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(t.strip() for t in value.split(",") if t.strip())
        return value

    @field_validator("billing_tz")
    @classmethod
    def _known_time_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError("must be an IANA time zone name such as UTC or Europe/Paris") from exc
        return value

    @cached_property
    def zone(self) -> ZoneInfo:
        """The billing time zone: it decides billing dates, nothing else."""
        return ZoneInfo(self.billing_tz)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def sqlite_path(self) -> Path | None:
        """The SQLite database file, when the store is one."""
        if not self.is_sqlite:
            return None
        path = self.database_url.split(":///", 1)[-1].split("?", 1)[0]
        return Path(path) if path and path != ":memory:" else None
