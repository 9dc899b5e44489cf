"""This process's settings for the jobs, installed when the process starts.

``ledger worker`` and ``ledger serve`` install the settings their command
line and environment give (:func:`install`) before anything runs. A process
that installs none, such as a consumer started as ``huey_consumer jobs.huey``
or a script that enqueues tasks, reads them from the environment on first
use. Nothing here is read at import.
"""

from __future__ import annotations

import threading

from ledger.settings import ProcessSettings, Settings, load_settings

_installed: ProcessSettings | None = None
_read: ProcessSettings | None = None
_guard = threading.Lock()


def install(settings: ProcessSettings | None) -> None:
    """Run this process's jobs with ``settings`` (None: read the environment on first use again)."""
    global _installed, _read
    with _guard:
        _installed, _read = settings, None


def settings() -> ProcessSettings:
    """The installed settings, else the environment's, read once on first use."""
    global _read
    with _guard:
        if _installed is not None:
            return _installed
        if _read is None:
            _read = load_settings()
        return _read


def ledger_settings() -> Settings:
    """The ledger section a new ledger of this process is built from.

    Without installed settings it is read from the environment each time a
    ledger is built, so a ledger closed and built again follows the
    environment as it is then.
    """
    with _guard:
        installed = _installed
    return installed.ledger if installed is not None else Settings()
