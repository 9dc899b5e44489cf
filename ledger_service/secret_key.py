"""The server's secret key: it signs the dashboard's form tokens, and lives outside the database.

A copy of the ledger's database must not let anyone act as a signed-in user,
so the key is never stored there. It comes from, in order:

1. ``LEDGER_SECRET_KEY``, the key itself;
2. ``LEDGER_SECRET_KEY_FILE``, a file holding it (made when missing);
3. the default file ``$XDG_CONFIG_HOME/llm-usage-ledger/secret-key``
   (``~/.config/llm-usage-ledger/secret-key`` without ``XDG_CONFIG_HOME``),
   made on first use.

A file made here holds 48 random bytes (URL-safe base64) and has mode 0600
in a directory of mode 0700. It is written under a temporary name and linked
into place, so processes starting together agree on one key and none reads a
half-written file. Every server process of a deployment must use the same
key: on several machines, give each the same ``LEDGER_SECRET_KEY``.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ledger.settings import MIN_SECRET_KEY_LENGTH, HttpSettings

APP_DIRECTORY = "llm-usage-ledger"
FILE_NAME = "secret-key"


class SecretKeyError(Exception):
    """The secret key cannot be read or made where the settings say."""


@dataclass(frozen=True)
class SecretKey:
    """The key, and where it came from (for the operator; never the key itself)."""

    value: bytes
    source: str
    path: Path | None = None
    created: bool = False

    @property
    def readable_by_others(self) -> bool:
        """True when the key's file may be read by other users (group or world bits set)."""
        return self.path is not None and bool(self.path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO))


def default_path(environ: Mapping[str, str] = os.environ) -> Path:
    """Where the key file goes when no setting names one: the user's configuration directory."""
    base = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / APP_DIRECTORY / FILE_NAME


def load_secret_key(settings: HttpSettings) -> SecretKey:
    """The key the settings give, making its file on first use."""
    if settings.secret_key is not None:
        return SecretKey(settings.secret_key.get_secret_value().strip().encode(), "LEDGER_SECRET_KEY")
    path = (settings.secret_key_file or default_path()).expanduser().absolute()
    text, created = read_or_create(path)
    return SecretKey(text.encode(), str(path), path, created)


def read_or_create(path: Path) -> tuple[str, bool]:
    """The key in ``path``, made first if there is none; and whether this call made it."""
    try:
        created = _create(path)
    except OSError as exc:
        raise SecretKeyError(f"cannot write the secret key file {path}: {exc.strerror}; set LEDGER_SECRET_KEY "
                             "or LEDGER_SECRET_KEY_FILE") from None
    return _read(path), created


def _create(path: Path) -> bool:
    """Write a new key to ``path`` unless a file is there; True when this call wrote it."""
    if path.exists():
        return False
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as file:
            os.fchmod(file.fileno(), 0o600)
            file.write(secrets.token_urlsafe(48) + "\n")
            file.flush()
            os.fsync(file.fileno())
        os.link(temporary, path)  # fails if another process linked its key first: theirs stands
        return True
    except FileExistsError:
        return False
    finally:
        temporary.unlink(missing_ok=True)


def _read(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise SecretKeyError(f"cannot read the secret key file {path}: {exc.strerror}") from None
    if len(text) < MIN_SECRET_KEY_LENGTH:
        raise SecretKeyError(f"the secret key file {path} holds fewer than {MIN_SECRET_KEY_LENGTH} characters")
    return text
