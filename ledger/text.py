"""What stored text may contain, and how a bad value is shown back safely.

Stored text is compared, grouped and printed: in reports, CSV files, log
lines and JSON answers. So every text field refuses

- control characters (Unicode category Cc: NUL, escape, C1 controls, and
  tab and newline too, even in free text such as ``reference``: a line break
  in a value forges a line of a log, a CSV row or a one-line CLI error, and
  no reference or reason needs one);
- lone surrogates (U+D800-U+DFFF, which Python's ``json`` accepts from a
  ``"\\ud800"`` escape): no UTF-8 encoder can write them, so a stored one
  would break every later answer that carries it;
- unassigned code points (category Cn), whose meaning may change.

Ids (account, user, charge) also refuse the invisible and direction-control
characters (zero-width spaces and joiners, bidirectional embeddings,
overrides and isolates, the byte-order mark): with them, two ids that look
the same are different accounts. Everything else (accented letters, CJK,
emoji, symbols) is kept as given.

Every check starts with ``str.isprintable``, which is false for all of these
characters: printable text, nearly every value, costs one C-level scan.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

#: Refused in every text field: C0 and C1 controls and lone surrogates.
_REFUSED = "\x00-\x1f\x7f-\x9f\ud800-\udfff"
#: Also refused in ids: zero-width and direction controls, the byte-order mark.
_INVISIBLE = "\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff"
_IN_TEXT = re.compile(f"[{_REFUSED}]")
_IN_ID = re.compile(f"[{_REFUSED}{_INVISIBLE}]")
_INVISIBLE_ONLY = re.compile(f"[{_INVISIBLE}]")


def text_problem(text: str, *, identifier: bool = False) -> str | None:
    """Why ``text`` may not be stored, naming its first bad character; None when it may."""
    if text.isprintable():
        return None
    found = (_IN_ID if identifier else _IN_TEXT).search(text)
    if found is not None:
        return f"contains {_kind(found.group())} {codepoint(found.group())} at offset {found.start()}"
    for offset, char in enumerate(text):
        if unicodedata.category(char) == "Cn":
            return f"contains an unassigned code point {codepoint(char)} at offset {offset}"
    return None


def codepoint(char: str) -> str:
    """A character by its code point, e.g. ``U+200B``."""
    return f"U+{ord(char):04X}"


def printable(text: str) -> str:
    """``text`` with every unprintable character written as its escape (``\\x00``, ``\\ud800``).

    For echoing a caller's text (an unknown field's name, an event id) in
    an error: the result can always be encoded, and shows what was sent.
    """
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else ascii(char)[1:-1] for char in text)


def field_name(key: Any, limit: int = 64) -> str:
    """A caller's field name for an error: printable and short, whatever it was."""
    try:
        text = key if isinstance(key, str) else repr(key)
    except Exception:  # noqa: BLE001 - a hostile key's own repr failed (e.g. an integer of 5,000 digits)
        text = f"<{type(key).__name__}>"
    return printable(text[:limit])


def _kind(char: str) -> str:
    if _INVISIBLE_ONLY.match(char):
        return "an invisible or direction-control character"
    if "\ud800" <= char <= "\udfff":
        return "a lone surrogate"
    return "a control character"
