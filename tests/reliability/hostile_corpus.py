"""A corpus of hostile charges: each with the field its rejection must name, or none.

Built deterministically (a fixed seed for the fuzzed part), so a failure names
a case that replays. ``expect`` is None for input that is nasty but valid (SQL
look-alikes, exotic Unicode, DST gaps): it must be stored verbatim.
"""

from __future__ import annotations

import json
import math
import random
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

UTC = timezone.utc
MAX_TOKENS = 10**12
CHARGE_TYPES = ("completion", "plugin", "tool", "usage", "subscription")
STRING_FIELDS = ("account_id", "user_id", "provider", "model", "session_key", "reference", "charge_id")
#: Fields that name something: they also refuse invisible and direction-control characters.
ID_FIELDS = ("account_id", "user_id", "charge_id")
INVISIBLE_CODES = frozenset([*range(0x200B, 0x2010), *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0xFEFF])
TOKEN_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens")
LIMITS = {name: 1024 if name == "reference" else 256 for name in STRING_FIELDS}


@dataclass(frozen=True)
class Case:
    """One hostile charge: ``fields`` and the field its error must name (None: valid)."""

    name: str
    fields: dict[str, Any]
    expect: str | None

    @property
    def json_safe(self) -> bool:
        """Expressible as a JSON object (what a JSONL import can carry)."""
        if not (all(isinstance(k, str) for k in self.fields) and _json_value(self.fields)):
            return False
        text = json.dumps(self.fields, ensure_ascii=False)
        back = json.loads(json.dumps(self.fields))  # a file holds escapes
        return json.dumps(back, ensure_ascii=False) == text  # e.g. a surrogate pair decodes to one character

    @property
    def kwargs_safe(self) -> bool:
        return all(isinstance(k, str) and k != "task" for k in self.fields)


def _json_value(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_value(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_json_value(v) for v in value)
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value) < 10**4000  # json.dumps refuses what str() refuses
    return value is None or isinstance(value, (str, bool, float))


#: Text for doors that take JSON (the HTTP API): each class the rules refuse, alone and inside
#: ordinary text, and a few that are nasty but valid in free text.
HOSTILE_TEXT = ["\ud800", "x\udfff", "\udbff\udc00", "\x00", "a\x00b", "\x1b[31m", "\x7f", "\x85", "line\nbreak",
                "tab\tin", "\u200b", "a\u200bb", "\u200d", "\u200e", "\u200f", "\u202a", "\u202eevil",
                "\u2066x\u2069", "\ufeff", "\ufffe", "\u0378", "\U0001f469\u200d\U0001f4bb", "Zo\u00eb \u65e5\u672c"]
#: Field names no door knows, as hostile as the values.
HOSTILE_NAMES = ["\ud800", "x\udfff", "\x00", "\u202eaccount_id", "a\u200bb", "new\nline", "\ufeffcharge_id",
                 "model\x00"]


def url_safe(texts: list[str]) -> list[str]:
    """The texts a URL can carry (UTF-8 cannot encode a lone surrogate)."""
    return [t for t in texts if not any("\ud800" <= ch <= "\udfff" for ch in t)]


WRONG_TYPES: list[Any] = [[], [1], {}, {"a": 1}, b"bytes", 1.5, True, False, object(), Decimal("1.5"),
                          3 + 4j, date(2026, 1, 1), {1, 2}, float("nan"), float("inf")]
NEGATIVE = [-1, -(10**12), -(2**63), -(10**5000)]
HUGE = [MAX_TOKENS + 1, 2**63, 2**64, 10**100, 10**5000]
NAN_LIKE = ["NaN", "nan", "inf", "-inf", "Infinity", "1e3", "0x10", "1_000", "+5", "--5", "5-", "\u0661\u0662",
            "\uff15", "12abc", "", "   ", "1.0", "- 5", "99999999999999999999999999999999999999999"]
FLOATS = [float("nan"), float("inf"), float("-inf"), 1.5, 1e300, -0.5, -1.0]
CONTROL = ["\x00", "a\x00b", "\x1b[31mred", "bell\x07", "\ud800", "x\udfff", "x\ufffe", "\x7f", "tab\tin",
           "new\nline", "cr\rhere", "nul-at-end\x00", "\u0085mid\u0085dle"]
INVISIBLE = ["\u200b", "a\u200bb", "zero\u200cwidth", "\u200dzwj", "ltr\u200e", "rtl\u200f", "\u202aembed",
             "\u202eevil", "\u2066isolate\u2069", "\u2067x", "\u2068y", "\ufeffbom", "mid\ufeffdle",
             "\U0001f469\u200d\U0001f4bb"]
OVERSIZE = ["x" * 257, "\u00e9" * 257, "\U0001d518" * 300, "a" * 1025, "b" * 10_000, "c" * 100_000]
SQLISH = ["'; DROP TABLE ledger_events; --", "1 OR 1=1", '" OR ""="', "%s%s%s", "?", "$1", "\\", "/* */",
          "Robert'); DROP TABLE Students;--", "${jndi:ldap://x}", "<script>alert(1)</script>", "NULL",
          "null", "0; SELECT pg_sleep(10)", "%(name)s", ":name", "' UNION SELECT * FROM ledger_charge_ids --"]
UNICODE_OK = ["Zo\u00eb", "\u65e5\u672c\u8a9e", "\U0001f642", "e\u0301", "\u00df", "\u0130", "\U0001f1eb\U0001f1f7",
              "\u00a0nbsp", "line\u2028sep", "\u00adsoft", "\U0001f469\U0001f4bb"]
BAD_ZONES = ["2026-01-01T00:00:00+25:00", "2026-01-01T00:00:00 Mars/Olympus",
             "2026-01-01T00:00:00+00:00[Europe/Paris]", "2026-01-01T00:00:00ZZ", "2026-01-01T00:00:00-24:00",
             "2026-01-01T00:00:00+5", "2026-01-01T00:00:00 UTC", "2026-01-01T00:00:00 EST",
             "2026-01-01T00:00:00+05:00:00:00", "2026-01-01T00:00:00+0x:00"]
NAIVE = ["2026-01-01T00:00:00", "2026-01-01 10:00", "2026-01-01", datetime(2026, 1, 1), "20260101T000000",
         "2026-02-01T10:00:00.123456"]
OUT_OF_RANGE = ["9999-12-31T23:00:00-05:00", "0001-01-01T00:00:00+05:00", "1999-12-31T23:59:59Z",
                "9999-12-31T23:59:59Z", datetime.max.replace(tzinfo=UTC),
                datetime.min.replace(tzinfo=timezone(timedelta(hours=1))), "1970-01-01T00:00:00Z"]
TIMES_OK = ["2026-02-01T10:00:00+05:45", "2026-02-01T10:00:00.123456Z", " 2026-02-01T10:00:00Z ",
            datetime(2026, 3, 29, 2, 30, tzinfo=ZoneInfo("Europe/Paris")),  # a DST gap: still an instant
            datetime(2026, 11, 1, 1, 30, fold=1, tzinfo=ZoneInfo("America/New_York")),
            "2026-02-01T10:00:00-12:00", "2026-02-01T10:00:00+14:00"]
UNKNOWN_KEYS = ["colour", "'; DROP TABLE x;--", "\x00", "k" * 1000, "Prompt_Tokens", "prompt_tokens ", "",
                "__class__", "\ud800", "x\udfff", "\u202eaccount_id", "new\nline", "\u200b"]
STRANGE_KEYS: list[Any] = [1, None, 10**5000, ("tuple", "key")]


def base(n: int) -> dict[str, Any]:
    """A valid charge with a unique id: every case spoils one thing of it."""
    return {"charge_id": f"h-{n}", "account_id": f"acct-{n % 7}", "user_id": f"u{n % 3}",
            "charge_type": CHARGE_TYPES[n % len(CHARGE_TYPES)], "prompt_tokens": 3 + n % 5,
            "completion_tokens": n % 4, "occurred_at": "2026-02-01T10:00:00Z"}


def string_expectation(field: str, value: Any) -> str | None:
    """The contract for text fields: a string (or integer) of bounded length, no control,
    surrogate or unassigned characters, and in ids no invisible or direction-control ones;
    blank means absent (an account is then missing)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return field
    if isinstance(value, int):
        if abs(value) >= 10 ** LIMITS[field]:
            return field
        value = str(value)
    text = value.strip()
    if not text:
        return "account_id" if field == "account_id" else None
    if len(text) > LIMITS[field]:
        return field
    if any(unicodedata.category(ch) in ("Cc", "Cs", "Cn") for ch in text):
        return field
    if field in ID_FIELDS and any(ord(ch) in INVISIBLE_CODES for ch in text):
        return field
    return None


def shown_name(key: str) -> str:
    """How an error names an unknown field: its first 64 characters, unprintable ones escaped."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in key[:64])


def time_expectation(value: Any) -> str | None:
    """The contract for ``occurred_at``: an ISO 8601 instant with a zone, years 2000-9998 in UTC."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
        except ValueError:
            return "occurred_at"
    if not isinstance(value, datetime) or value.utcoffset() is None:
        return "occurred_at"
    try:
        year = value.astimezone(UTC).year
    except OverflowError:
        return "occurred_at"
    return None if 2000 <= year <= 9998 else "occurred_at"


def corpus(fuzzed: int = 700, seed: int = 20260101) -> list[Case]:
    cases: list[Case] = []

    def add(name: str, fields: dict[str, Any], expect: str | None) -> None:
        cases.append(Case(name, fields, expect))

    def spoiled(field: str, value: Any) -> dict[str, Any]:
        fields = base(len(cases))
        if field == "charge_id" and isinstance(value, str) and string_expectation(field, value) is None:
            value = f"{value}#{len(cases)}"  # keeps ids unique; still as nasty
        fields[field] = value
        return fields

    for field in STRING_FIELDS:
        for value in WRONG_TYPES + NEGATIVE + HUGE + CONTROL + INVISIBLE + OVERSIZE + SQLISH + UNICODE_OK:
            fields = spoiled(field, value)
            add(f"{field}={_shown(value)}", fields, string_expectation(field, fields[field]))
    for value in WRONG_TYPES + NAN_LIKE + SQLISH + CONTROL + UNICODE_OK + OVERSIZE[:2] + [-1, 10**5000]:
        add(f"charge_type={_shown(value)}", spoiled("charge_type", value), "charge_type")
    for field in TOKEN_FIELDS:
        for value in NEGATIVE + HUGE + NAN_LIKE + FLOATS + SQLISH[:6] + CONTROL[:4] + WRONG_TYPES:
            if isinstance(value, float) and value.is_integer() and 0 <= value <= MAX_TOKENS:
                continue  # 2.0 is an integer
            add(f"{field}={_shown(value)}", spoiled(field, value), field)
    for value in BAD_ZONES + NAIVE + OUT_OF_RANGE + TIMES_OK + WRONG_TYPES + SQLISH[:4] + CONTROL[:3]:
        add(f"occurred_at={_shown(value)}", spoiled("occurred_at", value), time_expectation(value))
    for value in NEGATIVE + HUGE[2:] + NAN_LIKE[:8] + WRONG_TYPES[:6] + SQLISH[:4]:
        fields = spoiled("user_profile_id", value)
        del fields["account_id"]
        add(f"user_profile_id={_shown(value)}", fields, "user_profile_id")
    for how in ("absent", "none", "blank", "spaces"):
        fields = base(len(cases))
        if how == "absent":
            del fields["account_id"]
        else:
            fields["account_id"] = {"none": None, "blank": "", "spaces": " \t "}[how]
        add(f"account_id {how}", fields, "account_id")
    for key in UNKNOWN_KEYS + STRANGE_KEYS:
        fields = base(len(cases))
        fields[key] = 1
        named = shown_name(key) if isinstance(key, str) else None
        add(f"unknown key {_shown(key)}", fields, named if named is not None else "<unknown>")
    fields = base(len(cases))
    fields.update(prompt_tokens=5, completion_tokens=5, total_tokens=11)
    add("total != prompt + completion", fields, "total_tokens")
    fields = base(len(cases))
    fields.update(prompt_tokens=None, completion_tokens=9, total_tokens=4)
    add("total < completion", fields, "total_tokens")

    rng = random.Random(seed)
    pools = ["abcXYZ019 -_.", "\x00\x01\x1f\x7f\x85", "\ud800\udbff\udc00", "\ufffe\uffff\U0010ffff",
             "\U0001f642\u200d\u2764", "\u0301\u0308", "\u202e\u2066\u200f\u200b\ufeff", " \t\u3000\u00a0",
             "'\";%?$\\/*-", "\u00e9\u65e5\u0416"]
    for _ in range(fuzzed):
        kind = rng.random()
        if kind < 0.6:
            field = rng.choice(STRING_FIELDS)
            length = rng.choice([0, 1, 2, 5, rng.randint(250, 260), rng.randint(1020, 1030)])
            chosen = rng.sample(pools, rng.randint(1, 3))
            value = "".join(rng.choice(rng.choice(chosen)) for _ in range(length))
            fields = spoiled(field, value)
            add(f"fuzz {field}={_shown(value)}", fields, string_expectation(field, fields[field]))
        elif kind < 0.85:
            year = rng.choice([1, 1999, 2000, 2026, 9998, 9999])
            offset = rng.choice(["Z", "", f"+{rng.randint(0, 30):02d}:{rng.choice([0, 30, 59, 60]):02d}",
                                 f"-{rng.randint(0, 30):02d}:00"])
            month, day = rng.choice([(1, 1), (12, 31), (2, 29), (13, 1), (6, 31)])
            value = f"{year:04d}-{month:02d}-{day:02d}T{rng.randint(0, 24):02d}:{rng.randint(0, 59):02d}:00{offset}"
            add(f"fuzz occurred_at {value}", spoiled("occurred_at", value), time_expectation(value))
        else:
            field = rng.choice(TOKEN_FIELDS)
            value = rng.choice([-rng.randint(1, 10**15), rng.randint(MAX_TOKENS * 2 + 1, 10**30),
                                str(-rng.randint(1, 99)), f"{rng.random()}", rng.random() + 0.001,
                                -math.ldexp(rng.random(), 60)])
            add(f"fuzz {field}={_shown(value)}", spoiled(field, value), field)
    return cases


def stored_value(field: str, value: Any) -> Any:
    """What the ledger stores for a valid free-text value (trimmed text)."""
    return str(value).strip() or None


def _shown(value: Any) -> str:
    """A short printable name for a value (repr of a huge integer would fail)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**40:
        return f"<int of {value.bit_length()} bits>"
    return repr(value)[:40]
