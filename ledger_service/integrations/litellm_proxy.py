"""A ready ``LedgerCallback`` for the LiteLLM proxy's config.yaml, set up from the environment.

```yaml
litellm_settings:
  callbacks: ledger_service.integrations.litellm_proxy.ledger_callback
```

The proxy imports this module and uses the instance it names. The
environment chooses the mode:

- ``LEDGER_URL`` and ``LEDGER_KEY`` (an ingest key): remote, to ``ledger serve``;
- otherwise ``LEDGER_DATABASE_URL`` (and any other ``LEDGER_`` setting): in process.

and ``LEDGER_LITELLM_*`` variables the callback's options (see
:class:`ProxyCallbackSettings`; docs/integrations/litellm.md).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ledger_service.integrations.litellm import LedgerCallback


class ProxyCallbackSettings(BaseSettings):
    """The callback's options from ``LEDGER_LITELLM_*`` variables (e.g. ``LEDGER_LITELLM_ACCOUNT_FROM=key,team``)."""

    model_config = SettingsConfigDict(env_prefix="LEDGER_LITELLM_", frozen=True, extra="ignore")

    #: Remote mode: ``ledger serve``'s URL and an ingest key (``LEDGER_URL``, ``LEDGER_KEY``).
    url: str | None = Field(default=None, validation_alias="LEDGER_URL")
    key: str | None = Field(default=None, validation_alias="LEDGER_KEY")
    #: Comma-separated sources among metadata, key, team, end_user, user, tried in order.
    account_from: str = "metadata,team,end_user"
    account_key: str = "ledger_account_id"
    spill_path: str | None = None
    charge_cache_hits: bool = False
    budgets: bool = True
    hold_seconds: int = Field(default=600, gt=0, le=86_400)
    default_max_tokens: int = Field(default=4096, gt=0)
    default_estimate_micros: int = Field(default=100_000, gt=0)
    refusal_status: Literal[402, 429] = 402
    budget_unavailable: Literal["allow", "refuse"] = "allow"
    batch_size: int = Field(default=100, ge=1, le=1000)
    buffer_size: int = Field(default=10_000, ge=1)
    block_seconds: float = Field(default=5.0, ge=0)
    timeout_seconds: float = Field(default=10.0, gt=0)
    max_backoff_seconds: float = Field(default=30.0, gt=0)
    deadline_seconds: float | None = Field(default=None, gt=0)


def callback_from_environment() -> LedgerCallback:
    """The callback the environment describes: remote when ``LEDGER_URL`` is set, else in process."""
    settings = ProxyCallbackSettings()
    options = {
        "account_from": [name.strip() for name in settings.account_from.split(",") if name.strip()],
        "account_key": settings.account_key, "spill_path": settings.spill_path,
        "charge_cache_hits": settings.charge_cache_hits, "budgets": settings.budgets,
        "hold_seconds": settings.hold_seconds, "default_max_tokens": settings.default_max_tokens,
        "default_estimate_micros": settings.default_estimate_micros,
        "refusal_status": settings.refusal_status, "budget_unavailable": settings.budget_unavailable,
    }
    if settings.url:
        return LedgerCallback(url=settings.url, key=settings.key, batch_size=settings.batch_size,
                              buffer_size=settings.buffer_size, block_seconds=settings.block_seconds,
                              timeout_seconds=settings.timeout_seconds,
                              max_backoff_seconds=settings.max_backoff_seconds, **options)
    from ledger import Ledger, Settings

    return LedgerCallback(ledger=Ledger(Settings()), deadline_seconds=settings.deadline_seconds, **options)


#: The instance config.yaml names.
ledger_callback = callback_from_environment()
