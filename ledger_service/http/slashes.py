"""Trailing-slash redirects that never echo the ``Host`` header.

Starlette's own ``redirect_slashes`` answers ``/v1/usage/`` with an absolute
URL built from the request's ``Host``, so a forged ``Host`` makes the server
redirect to another site (and poisons any cache in front of it). This
replaces it: when only the other form of the path (with or without its
trailing slash) has a route, the answer is a redirect to that path,
relative, with the query kept; otherwise the router's usual 404.
"""

from __future__ import annotations

from starlette.responses import RedirectResponse
from starlette.routing import Match, Router
from starlette.types import Receive, Scope, Send


class RelativeSlashRedirect:
    """A router's ``default`` (what runs when no route matches): redirect or 404."""

    def __init__(self, router: Router) -> None:
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        location = self.location(scope) if scope["type"] == "http" else None
        if location is None:
            await self.router.not_found(scope, receive, send)
            return
        await RedirectResponse(location, status_code=307)(scope, receive, send)

    def location(self, scope: Scope) -> str | None:
        """The relative URL of the path's other form when a route has it, else None."""
        path = scope["path"]
        if path in ("", "/"):
            return None
        other = path.rstrip("/") if path.endswith("/") else path + "/"
        if not other.startswith("/") or other.startswith(("//", "/\\")):
            return None  # a scheme-relative URL would lead to another host
        other_scope = {**scope, "path": other}
        if not any(route.matches(other_scope)[0] is not Match.NONE for route in self.router.routes):
            return None
        query = scope.get("query_string", b"").decode("latin-1")
        return f"{other}?{query}" if query else other
