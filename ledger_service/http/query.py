"""Unknown query parameters are refused, not ignored.

``GET /v1/usage?acount=globex`` once answered every account's rows: a
misspelt filter read as no filter. Each GET endpoint of the API depends on
:func:`known_query` (after its key dependency), which answers 422 naming
every parameter the endpoint does not declare, once the key is known good:
a missing, unknown or revoked key is 401 and a key of the wrong role 403
first, as for any refusal. The names come from the route's own declaration, so a
parameter added to an endpoint is known at once.
"""

from __future__ import annotations

import difflib
from typing import Any

from fastapi import Request

from ledger.text import printable
from ledger_service.http.auth import check_caller
from ledger_service.http.problems import Problem

DETAIL = "unknown query parameter"
_names: dict[int, frozenset[str]] = {}


def declared_query(dependant: Any) -> frozenset[str]:
    """The query parameter names (aliases) a route's dependant and its sub-dependencies declare."""
    names = {field.alias for field in dependant.query_params}
    for sub in dependant.dependencies:
        names |= declared_query(sub)
    return frozenset(names)


def _known(request: Request) -> frozenset[str]:
    route = request.scope.get("route")
    if route is None or not hasattr(route, "dependant"):
        return frozenset()
    key = id(route)
    if key not in _names:
        _names[key] = declared_query(route.dependant)
    return _names[key]


async def known_query(request: Request) -> None:
    """Refuse (422) a request carrying query parameters its endpoint does not take, naming each."""
    known = _known(request)
    unknown = sorted({name for name in request.query_params if name not in known})
    if not unknown:
        return
    await check_caller(request)
    errors = [{"field": printable(name), "detail": DETAIL} for name in unknown]
    takes = ", ".join(sorted(known)) or "none"
    detail = "; ".join(_explain(name, known) for name in unknown) + f"; this endpoint takes: {takes}"
    raise Problem(422, detail, errors=errors)


def _explain(name: str, known: frozenset[str]) -> str:
    """``acount: unknown query parameter (did you mean account?)``."""
    close = difflib.get_close_matches(name, sorted(known), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"{printable(name)}: {DETAIL}{hint}"
