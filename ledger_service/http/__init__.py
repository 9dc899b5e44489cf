"""The HTTP API: ``create_app(ledger)`` for a ledger in hand, ``app_from_environment`` for an ASGI server's factory.

``ledger serve`` builds its processes' apps in :mod:`ledger_service.server`.
"""

from ledger_service.http.app import app_from_environment, create_app

__all__ = ["app_from_environment", "create_app"]
