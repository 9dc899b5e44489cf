"""The usage dashboard served by ``ledger serve``: pages under ``/dashboard``, signed in with a key."""

from pathlib import Path

from ledger_service.dashboard.pages import router

STATIC = Path(__file__).parent / "static"

__all__ = ["STATIC", "router"]
