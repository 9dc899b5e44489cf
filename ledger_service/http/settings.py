"""The HTTP API's limits, from the environment like every other setting (``LEDGER_HTTP_*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class HttpSettings(BaseSettings):
    """What one request may carry, and how many rows a page holds."""

    model_config = SettingsConfigDict(env_prefix="LEDGER_HTTP_", frozen=True, extra="ignore")

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
