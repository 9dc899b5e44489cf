"""Headers every response carries, whatever answered it: an API handler, the dashboard,
an error handler, a 404, or the direct path of ``POST /v1/charges``.

- ``X-Content-Type-Options: nosniff``: a browser takes each body as its declared type;
- ``Referrer-Policy: no-referrer``: no URL of the ledger (account ids, periods) leaks onwards;
- ``Content-Security-Policy`` with ``frame-ancestors 'none'``: no page can be framed. A
  response without a policy of its own gets ``default-src 'none'`` as well (JSON and CSV
  load nothing); a response's own policy is kept (the dashboard's; the API docs', which
  allow this server's Swagger UI and ReDoc scripts: :mod:`ledger_service.http.docs`), and
  gets ``frame-ancestors 'none'`` beside it when it lacks one.

It wraps ``send`` (no request or response objects are built), so it costs the
busiest path a few list operations.
"""

from __future__ import annotations

from starlette.types import Message, Send

NOSNIFF = (b"x-content-type-options", b"nosniff")
REFERRER_POLICY = (b"referrer-policy", b"no-referrer")
CSP = b"content-security-policy"
#: For responses that load nothing: JSON, CSV, problems, the charges' fast path.
STRICT_CSP = b"default-src 'none'; frame-ancestors 'none'"
#: Added beside a response's own policy that does not forbid framing.
FRAMING_CSP = b"frame-ancestors 'none'"


def secure_send(send: Send, csp: bytes = STRICT_CSP) -> Send:
    """``send`` with the security headers added to the response's start, unless already there."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": with_security_headers(message.get("headers") or [], csp)}
        await send(message)

    return sending


def with_security_headers(headers: list[tuple[bytes, bytes]], csp: bytes = STRICT_CSP) -> list[tuple[bytes, bytes]]:
    """``headers`` plus each missing security header; a policy without ``frame-ancestors`` gets a second one."""
    added = list(headers)
    names = {name.lower() for name, _ in headers}
    for name, value in (NOSNIFF, REFERRER_POLICY):
        if name not in names:
            added.append((name, value))
    policies = [value for name, value in headers if name.lower() == CSP]
    if not policies:
        added.append((CSP, csp))
    elif not any(b"frame-ancestors" in policy for policy in policies):
        added.append((CSP, FRAMING_CSP))
    return added
