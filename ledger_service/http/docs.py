"""The interactive API docs, working without internet: Swagger UI at ``/docs``, ReDoc at ``/redoc``.

FastAPI's default pages load Swagger UI and ReDoc from a CDN, so on a
machine without internet ``/docs`` is a blank page. These pages load the
same scripts from the installed package ``fastapi-offline`` (Swagger UI 5,
which reads OpenAPI 3.1, and ReDoc 2), served under ``/docs/assets``.

Each page carries its own Content-Security-Policy: scripts only from this
server plus the page's own inline start-up script (by its hash), styles and
images from this server (Swagger UI and ReDoc set inline styles and draw
icons from ``data:`` URLs), requests only to this server, and no framing.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import resources
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse

#: Where the assets are served.
ASSETS = "/docs/assets"
#: The packaged Swagger UI and ReDoc files (swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js, favicon.png).
STATIC = Path(str(resources.files("fastapi_offline") / "static"))
DOCS, REDOC, OAUTH2_REDIRECT = "/docs", "/redoc", "/docs/oauth2-redirect"

router = APIRouter(include_in_schema=False)
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


def policy(html: bytes) -> str:
    """The page's Content-Security-Policy: its own inline scripts allowed by hash, everything else local."""
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
                      for script in _INLINE_SCRIPT.findall(html))
    return ("default-src 'none'; "
            f"script-src 'self' {hashes}; "
            "style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; "
            "connect-src 'self'; worker-src 'self' blob:; "
            "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def _with_policy(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = policy(bytes(page.body))
    return page


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


@router.get(DOCS)
async def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI on the app's OpenAPI document, its assets from this server."""
    root, app = _root(request), request.app
    return _with_policy(get_swagger_ui_html(
        openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - Swagger UI",
        swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js", swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSETS}/favicon.png", oauth2_redirect_url=f"{root}{OAUTH2_REDIRECT}",
        swagger_ui_parameters=app.swagger_ui_parameters))


@router.get(OAUTH2_REDIRECT)
async def swagger_ui_redirect() -> HTMLResponse:
    return _with_policy(get_swagger_ui_oauth2_redirect_html())


@router.get(REDOC)
async def redoc(request: Request) -> HTMLResponse:
    """ReDoc on the app's OpenAPI document, without Google Fonts."""
    root, app = _root(request), request.app
    return _with_policy(get_redoc_html(
        openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - ReDoc",
        redoc_js_url=f"{root}{ASSETS}/redoc.standalone.js", redoc_favicon_url=f"{root}{ASSETS}/favicon.png",
        with_google_fonts=False))
