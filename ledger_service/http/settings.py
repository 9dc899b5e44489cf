"""The HTTP server's settings, from the environment like every other setting.

The API's limits are ``LEDGER_HTTP_*``. The server's secret key, which signs
the dashboard's form tokens, is ``LEDGER_SECRET_KEY`` (the key itself) or
``LEDGER_SECRET_KEY_FILE`` (a file holding it); it is never kept in the
ledger's database, so a copy of the database cannot forge a form token.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: A secret key shorter than this is refused (a generated one has 64 characters).
MIN_SECRET_KEY_LENGTH = 32


class HttpSettings(BaseSettings):
    """What one request may carry, how many rows a page holds, and where the secret key is."""

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
