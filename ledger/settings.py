"""Configuration from the environment, in one place: one settings object per process.

A process reads its :class:`ProcessSettings` once, when it starts (the
command line's callback, ``ledger worker``, ``ledger serve``'s server
processes, a consumer's first task), never at import. Its sections:

* ``ledger`` (:class:`Settings`, ``LEDGER_*``): the store, validation,
  writes, projections and prices; ``Ledger(Settings(...))`` takes it alone;
* ``jobs`` (:class:`JobsSettings`, ``LEDGER_*``): the queue, retries,
  leases and the daily schedule;
* ``http`` (:class:`HttpSettings`, ``LEDGER_HTTP_*`` and the secret key's
  ``LEDGER_SECRET_KEY`` / ``LEDGER_SECRET_KEY_FILE``): the API's limits;
* ``dashboard`` (:class:`DashboardSettings`, ``LEDGER_DASHBOARD_*``).

Nothing reads a ``.env`` file, so what runs is what the process environment
says. docs/CONFIGURATION.md lists every setting with its default and variable.
"""

from __future__ import annotations

import warnings
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_DATABASE_FILE = "ledger.db"
DEFAULT_CHARGE_TYPES = ("completion", "plugin", "tool", "usage", "subscription")
#: A secret key shorter than this is refused (a generated one has 64 characters).
MIN_SECRET_KEY_LENGTH = 32


def default_database_url() -> str:
    """The embedded default: a SQLite file in the working directory."""
    return f"sqlite:///{Path.cwd() / DEFAULT_DATABASE_FILE}"


class Settings(BaseSettings):
    """The ``ledger`` section: what a :class:`~ledger.Ledger` is built from."""

    model_config = SettingsConfigDict(env_prefix="LEDGER_", frozen=True, extra="ignore")

    database_url: str = Field(default_factory=default_database_url)
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
    #: PostgreSQL: the connection pool of the ledger's engine: connections kept
    #: open, extra ones allowed under load, and the age at which one is replaced.
    pool_size: int = Field(default=10, ge=1)
    pool_max_overflow: int = Field(default=20, ge=0)
    pool_recycle_seconds: int = Field(default=1800, ge=-1)
    #: PostgreSQL failover: how long a recording call keeps retrying (same charge
    #: ids) through a lost primary before it raises LedgerUnavailable, and how
    #: long one connection attempt may take. See docs/HA.md.
    retry_deadline_seconds: float = Field(default=30.0, gt=0, le=3600)
    connect_timeout_seconds: int = Field(default=5, ge=1, le=300)
    #: PostgreSQL: an optional standby that serves reports, usage and the
    #: dashboard; writes and the projector stay on ``database_url``.
    read_database_url: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _jobs_fields_moved(cls, values: object) -> object:
        """Say so when a field of the jobs section is given here: it moved, and this section ignores it."""
        if isinstance(values, dict):
            moved = sorted(set(values) & set(JobsSettings.model_fields))
            if moved:
                warnings.warn(
                    f"Settings({', '.join(moved)}=...): these belong to the jobs section now "
                    "(ledger.settings.JobsSettings, same LEDGER_ variables); the ledger section ignores them",
                    DeprecationWarning,
                    stacklevel=2,
                )
        return values

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


#: The ledger section's other name, beside the other sections'.
LedgerSettings = Settings


class JobsSettings(BaseSettings):
    """The ``jobs`` section: the queue, retries, leases, the daily schedule and webhook delivery."""

    model_config = SettingsConfigDict(env_prefix="LEDGER_", frozen=True, extra="ignore")

    #: The queue: ``sqlite:///PATH``, ``redis://HOST:PORT/DB`` or ``memory://``;
    #: None is a SQLite file beside the ledger's (see ``jobs.queue``).
    huey_url: str | None = None
    #: Retries after a transient failure (the budget is fixed when a task is
    #: enqueued), the first retry's delay (doubling after each attempt, capped).
    task_retries: int = Field(default=10, ge=0)
    task_retry_base_seconds: float = Field(default=1.0, gt=0)
    task_retry_max_seconds: float = Field(default=300.0, gt=0)
    #: The daily job's crontab, read in the billing time zone.
    aggregate_schedule: str = "15 0 * * *"
    #: A consumer's tasks are re-run elsewhere once its heartbeat is this old;
    #: the aggregation lock expires after the same time without renewal.
    task_lease_seconds: float = Field(default=30.0, gt=0)
    #: Most tasks one worker thread takes from the queue at once; its
    #: create_charge tasks among them are recorded in one transaction.
    task_batch_size: int = Field(default=500, ge=1)
    #: Budget alerts: how often the worker checks every budget's thresholds
    #: and delivers the webhooks that are due (see ``jobs.webhooks``); 0 turns
    #: the periodic check off (``ledger webhooks deliver`` run from cron instead).
    budget_check_seconds: float = Field(default=10.0, ge=0, le=86_400)
    #: Webhook deliveries: the first retry's delay (doubling after each failed
    #: attempt, capped, with jitter), the attempts before one is given up as
    #: failed, and how long one POST may wait on each connect or read.
    webhook_retry_first_seconds: float = Field(default=2.0, gt=0)
    webhook_retry_max_seconds: float = Field(default=600.0, gt=0)
    webhook_max_attempts: int = Field(default=12, ge=1)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=300)

    @field_validator("budget_check_seconds")
    @classmethod
    def _off_or_a_second(cls, value: float) -> float:
        if 0 < value < 1:
            raise ValueError("must be 0 (off) or at least 1 second")
        return value

    @property
    def heartbeat_seconds(self) -> float:
        """Renew well inside the lease, so a busy process never lets it lapse."""
        return self.task_lease_seconds / 5

    @property
    def webhook_claim_seconds(self) -> float:
        """How long a claimed delivery is not due again: past it, an attempt whose outcome was
        never recorded (its process died) is made again. Twice the timeout, so a live attempt
        has always finished first."""
        return 2 * self.webhook_timeout_seconds + 5


class HttpSettings(BaseSettings):
    """The ``http`` section: what one request may carry, page sizes, the key cache and the secret key.

    The secret key signs the dashboard's form tokens. It is never kept in the
    ledger's database, so a copy of the database cannot forge a form token.
    """

    model_config = SettingsConfigDict(env_prefix="LEDGER_HTTP_", frozen=True, extra="ignore",
                                      populate_by_name=True)

    #: Largest request body accepted (413 beyond it).
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    #: Most charges in one ``/v1/charges/batch`` or events in one CloudEvents batch (413 beyond it).
    max_batch: int = Field(default=1_000, ge=1)
    #: Rows of ``/v1/usage`` per page: the default, and the most a client may ask for.
    page_size: int = Field(default=1_000, ge=1)
    max_page_size: int = Field(default=10_000, ge=1)
    #: Seconds a verified key is trusted without a lookup; a revocation takes effect within this
    #: time on a running server. 0 looks every key up on every request.
    key_cache_seconds: float = Field(default=1.0, ge=0, le=60)
    #: PostgreSQL: the pool of the key lookup's own engine (connections kept, extra under load).
    key_pool_size: int = Field(default=4, ge=1)
    key_pool_max_overflow: int = Field(default=8, ge=0)
    #: The secret key itself; every server process of one deployment needs the same one.
    secret_key: SecretStr | None = Field(default=None, validation_alias="LEDGER_SECRET_KEY")
    #: A file holding the secret key, made (mode 0600) when missing; default: see ``ledger_service.secret_key``.
    secret_key_file: Path | None = Field(default=None, validation_alias="LEDGER_SECRET_KEY_FILE")

    @field_validator("secret_key")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().strip()) < MIN_SECRET_KEY_LENGTH:
            raise ValueError(f"must be at least {MIN_SECRET_KEY_LENGTH} characters")
        return value


class DashboardSettings(BaseSettings):
    """The ``dashboard`` section."""

    model_config = SettingsConfigDict(env_prefix="LEDGER_DASHBOARD_", frozen=True, extra="ignore")

    #: How long a dashboard session lasts without signing in again.
    session_seconds: int = Field(default=12 * 3600, ge=60)


class ProcessSettings(BaseModel):
    """One process's settings, by section; made by :func:`load_settings` when the process starts."""

    model_config = ConfigDict(frozen=True)

    ledger: Settings
    jobs: JobsSettings
    http: HttpSettings
    dashboard: DashboardSettings


def load_settings(ledger: Settings | None = None) -> ProcessSettings:
    """Every section from the environment (the ``ledger`` section as given, if it is).

    A bad value raises pydantic's ``ValidationError`` of the section that holds it.
    """
    return ProcessSettings(
        ledger=ledger if ledger is not None else Settings(),
        jobs=JobsSettings(),
        http=HttpSettings(),
        dashboard=DashboardSettings(),
    )
