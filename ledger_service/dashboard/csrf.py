"""Cross-site request forgery: every form post of the dashboard proves it came from its own pages.

A post is accepted only when both hold:

- **the browser says it is same-origin**: ``Sec-Fetch-Site``, when sent, is
  ``same-origin`` (or ``none``, a user's own action); ``Origin``, when sent,
  is the request's own scheme, host and port. A sibling site (``same-site``)
  is refused too. Clients that send neither header (scripts) are judged by
  the token alone.
- **it carries the form's token** (field ``csrf_token``): for the signed-in
  forms, an HMAC of the session id under the server's secret key; for the
  sign-in form, which has no session yet, an HMAC of a random nonce that the
  sign-in page sets as a cookie (signed double submit). Another site can
  neither read the token nor set the cookie.

The secret key lives outside the database (:mod:`ledger_service.secret_key`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from fastapi import Request, Response

from ledger_service.dashboard.session import session_id_of

FIELD = "csrf_token"
SIGN_IN_COOKIE = "ledger_sign_in"
#: ``Sec-Fetch-Site`` values of a post the dashboard's own pages made.
OWN_SITES = ("same-origin", "none")
_NONCE_LENGTH = 43
_DEFAULT_PORTS = {"http": ":80", "https": ":443"}


def _mac(secret: bytes, purpose: str, value: str) -> str:
    return hmac.new(secret, f"{purpose}\0{value}".encode(), hashlib.sha256).hexdigest()


def _matches(expected: str, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(expected.encode(), (presented or "").encode())


def own_origin(request: Request) -> str:
    """The origin the request was sent to (scheme, host, port), as a browser writes it."""
    scheme = request.url.scheme
    host = request.headers.get("host", "").lower()
    return f"{scheme}://{host.removesuffix(_DEFAULT_PORTS.get(scheme, ''))}"


def same_origin(request: Request) -> bool:
    """False when the browser says the post came from another site or origin."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site.strip().lower() not in OWN_SITES:
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    scheme, _, host = origin.strip().lower().partition("://")
    return f"{scheme}://{host.removesuffix(_DEFAULT_PORTS.get(scheme, ''))}" == own_origin(request)


def session_token(secret: bytes, request: Request) -> str:
    """The token of the request's session ('' without one), for the signed-in pages' forms."""
    session_id = session_id_of(request)
    return _mac(secret, "session", session_id) if session_id else ""


def session_post_allowed(request: Request, secret: bytes, presented: str | None) -> bool:
    """A signed-in form's post: same origin, and the token of the session the cookie names."""
    expected = session_token(secret, request)
    return same_origin(request) and bool(expected) and _matches(expected, presented)


def sign_in_nonce(request: Request) -> str | None:
    """The sign-in form's nonce from its cookie, if it looks like one."""
    value = request.cookies.get(SIGN_IN_COOKIE, "")
    return value if len(value) == _NONCE_LENGTH and value.isascii() else None


def sign_in_token(secret: bytes, request: Request) -> tuple[str, str | None]:
    """The sign-in form's token, and a new nonce to set as its cookie (None: the request's stands)."""
    nonce = sign_in_nonce(request)
    fresh = None if nonce else secrets.token_urlsafe(32)
    return _mac(secret, "sign-in", nonce or fresh or ""), fresh


def set_sign_in_cookie(response: Response, request: Request, nonce: str) -> None:
    """The sign-in form's nonce: HttpOnly, SameSite=Strict, for the browser's session only."""
    response.set_cookie(SIGN_IN_COOKIE, nonce, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/dashboard")


def clear_sign_in_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(SIGN_IN_COOKIE, path="/dashboard", httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")


def sign_in_post_allowed(request: Request, secret: bytes, presented: str | None) -> bool:
    """The sign-in form's post: same origin, and the token of the nonce in the request's cookie."""
    nonce = sign_in_nonce(request)
    return same_origin(request) and nonce is not None and _matches(_mac(secret, "sign-in", nonce), presented)
