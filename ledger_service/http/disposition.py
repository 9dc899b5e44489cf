"""``Content-Disposition`` for downloads, per RFC 6266: an ASCII fallback and the UTF-8 name.

File names carry account ids, which are any printable text. Put raw in a
header, a non-Latin-1 id cannot be sent at all and a quote ends the
``filename`` early and starts a second one. So the header always has exactly
two names: ``filename="..."`` in plain ASCII for old clients, without quotes,
backslashes, percent signs, slashes or control characters, and
``filename*=UTF-8''...`` with the whole name percent-encoded (RFC 8187).
"""

from __future__ import annotations

import re
from urllib.parse import quote

#: What the ASCII fallback may keep: printable ASCII but ``"``, ``\``, ``%``, ``/`` (and controls).
_UNSAFE_ASCII = re.compile(r'[^\x20-\x7e]|["\\%/]')
#: Characters a client must not take from the name itself: controls and path separators.
_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f/\\]")
#: RFC 8187 attr-char beyond letters, digits and ``-._~`` (which ``quote`` always keeps).
_ATTR_CHARS = "!#$&+^`|"


def ascii_fallback(name: str) -> str:
    """``name`` with each character outside the safe ASCII set replaced by ``_``."""
    return _UNSAFE_ASCII.sub("_", name) or "download"


def attachment(name: str) -> str:
    """The header value for a download named ``name``."""
    cleaned = _UNSAFE_NAME.sub("_", name) or "download"
    return f"attachment; filename=\"{ascii_fallback(cleaned)}\"; filename*=UTF-8''{quote(cleaned, safe=_ATTR_CHARS)}"
