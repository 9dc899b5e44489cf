"""The charge as a value: its fields, their defaults and their validation.

Validation happens here and only here, before anything is stored, so that bad
input never enters the log (invariant 7). Every bad field is reported at once.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

import orjson
from eventsourcing.utils import resolve_topic

from ledger.errors import InvalidCharge
from ledger.settings import Settings

#: Fields a caller may give, in the seed's order, then what billing adds.
SEED_FIELDS = (
    "user_profile_id",
    "session_key",
    "provider",
    "charge_type",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "model",
    "reference",
)
INPUT_FIELDS = SEED_FIELDS + ("account_id", "user_id", "charge_id", "occurred_at")
TOKEN_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens")

#: (account_id, user_id) for a user profile id.
ProfileResolver = Callable[[int], tuple[str, str]]


def default_profile_resolver(user_profile_id: int) -> tuple[str, str]:
    """Profile N belongs to account ``profile-N`` as user ``N``."""
    return f"profile-{user_profile_id}", str(user_profile_id)


@dataclass(frozen=True, slots=True)
class Charge:
    """One metered model call, validated and normalised."""

    charge_id: str
    account_id: str
    user_id: str
    charge_type: str
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    occurred_at: datetime
    provider: str | None = None
    model: str | None = None
    user_profile_id: int | None = None
    session_key: str | None = None
    reference: str | None = None
    #: False when ``occurred_at`` defaulted to "now": a retry may differ in it.
    occurred_at_given: bool = field(default=True, compare=False)

    def payload(self) -> dict[str, Any]:
        """The charge's facts as JSON-ready values, for the index and diffs."""
        return {
            "charge_id": self.charge_id,
            "account_id": self.account_id,
            "user_id": self.user_id,
            "charge_type": self.charge_type,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "occurred_at": self.occurred_at.isoformat(),
            "provider": self.provider,
            "model": self.model,
            "user_profile_id": self.user_profile_id,
            "session_key": self.session_key,
            "reference": self.reference,
        }

    def payload_hash(self, payload: dict[str, Any] | None = None) -> str:
        """SHA-256 over what identifies the call (not its defaulted time)."""
        data = dict(payload or self.payload())
        if not self.occurred_at_given:
            data.pop("occurred_at")
        return payload_hash(data)

    def index_entry(self, extra: Mapping[str, Any] | None = None) -> tuple[str, str]:
        """The index row's payload text and :meth:`payload_hash`, serialising once.

        When ``occurred_at`` was given the hash is over exactly that text;
        otherwise (the time defaulted) it leaves the time out, as above.
        ``extra`` (what recording derived, e.g. the cost) is stored in the
        payload but never hashed: the hash identifies the caller's facts.
        """
        data = self.payload()
        text = canonical_json(data)
        stored = text if not extra else canonical_json({**data, **extra})
        if self.occurred_at_given:
            return stored, hashlib.sha256(text.encode()).hexdigest()
        del data["occurred_at"]
        return stored, payload_hash(data)

    def differences(self, stored: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
        """Fields whose stored value differs from this charge's: name -> (stored, new)."""
        mine = self.payload()
        diffs = {}
        for name, value in mine.items():
            if name == "occurred_at":
                if not self.occurred_at_given:
                    continue
                if _parse_iso(stored.get(name)) == self.occurred_at:
                    continue
            if stored.get(name) != value:
                diffs[name] = (stored.get(name), value)
        return diffs


def canonical_json(data: Mapping[str, Any]) -> str:
    """One spelling per value: sorted keys, no spaces, unicode kept.

    orjson writes exactly what ``json.dumps(sort_keys=True, separators=(",",
    ":"), ensure_ascii=False)`` writes for these values (a test holds them
    equal), only faster; anything it cannot encode (an integer beyond 64
    bits) goes through ``json``.
    """
    try:
        return orjson.dumps(data, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def payload_hash(data: Mapping[str, Any]) -> str:
    """A stable digest of a JSON-ready mapping."""
    return hashlib.sha256(canonical_json(data).encode()).hexdigest()


def _parse_iso(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None


class ChargeValidator:
    """Turns a caller's mapping into a :class:`Charge` or raises :class:`InvalidCharge`."""

    def __init__(self, settings: Settings, resolver: ProfileResolver | None = None) -> None:
        self.settings = settings
        self.charge_types = frozenset(settings.charge_types)
        self.resolver: ProfileResolver = resolver or resolve_topic(settings.profile_resolver)

    def __call__(self, raw: Mapping[str, Any], *, now: datetime | None = None) -> Charge:
        if not isinstance(raw, Mapping):
            raise InvalidCharge({"charge": f"expected an object of fields, got {type(raw).__name__}"})
        errors: dict[str, str] = {}
        unknown = sorted(_field_name(k) for k in raw if k not in INPUT_FIELDS)
        for name in unknown:
            errors[name] = "unknown field"
        values: dict[str, Any] = {}

        profile = optional_int(raw, "user_profile_id", errors, minimum=0, maximum=MAX_PROFILE_ID)
        for name in ("session_key", "provider", "model", "user_id", "account_id", "charge_id"):
            values[name] = optional_str(raw, name, errors, self.settings.max_string_length)
        values["reference"] = optional_str(
            raw, "reference", errors, self.settings.max_reference_length
        )
        values["user_profile_id"] = profile
        self._resolve_account(values, profile, errors)
        self._charge_type(raw, values, errors)
        self._tokens(raw, values, errors)
        occurred_at, given = instant_field(raw, "occurred_at", errors, now)

        if errors:
            raise InvalidCharge(errors)
        return Charge(
            charge_id=values["charge_id"] or str(uuid.uuid4()),
            account_id=values["account_id"],
            user_id=values["user_id"],
            charge_type=values["charge_type"],
            prompt_tokens=values["prompt_tokens"],
            completion_tokens=values["completion_tokens"],
            total_tokens=values["total_tokens"],
            occurred_at=occurred_at,  # type: ignore[arg-type]
            provider=values["provider"],
            model=values["model"],
            user_profile_id=profile,
            session_key=values["session_key"],
            reference=values["reference"],
            occurred_at_given=given,
        )

    # -- one rule each -------------------------------------------------------

    def _resolve_account(
        self, values: dict[str, Any], profile: int | None, errors: dict[str, str]
    ) -> None:
        """An account is required: given, or resolved from the user profile."""
        if values["account_id"] is None and "account_id" not in errors:
            if profile is None:
                if "user_profile_id" not in errors:
                    errors["account_id"] = "required (or give user_profile_id to resolve it)"
                return
            try:
                account_id, user_id = self.resolver(profile)
            except Exception as exc:  # a resolver's own lookup error names the cause
                errors["user_profile_id"] = f"no account for user profile {profile}: {exc}"
                return
            resolved = {"account_id": account_id, "user_id": user_id}
            limit = self.settings.max_string_length
            for name in ("account_id", "user_id"):
                problem: dict[str, str] = {}
                optional_str(resolved, name, problem, limit)
                if problem:
                    errors["user_profile_id"] = f"resolved to an unusable {name}: {problem[name]}"
                    return
            values["account_id"] = account_id
            if values["user_id"] is None:
                values["user_id"] = user_id
        if values["user_id"] is None and "user_id" not in errors:
            values["user_id"] = str(profile) if profile is not None else ""

    def _charge_type(self, raw: Mapping[str, Any], values: dict[str, Any], errors: dict[str, str]) -> None:
        charge_type = optional_str(raw, "charge_type", errors, self.settings.max_string_length)
        if "charge_type" in errors:
            return
        if charge_type is None:
            errors["charge_type"] = f"required; one of {', '.join(sorted(self.charge_types))}"
        elif charge_type not in self.charge_types:
            errors["charge_type"] = (
                f"unknown charge type {charge_type!r}; expected one of "
                f"{', '.join(sorted(self.charge_types))}"
            )
        values["charge_type"] = charge_type

    def _tokens(self, raw: Mapping[str, Any], values: dict[str, Any], errors: dict[str, str]) -> None:
        """Tokens are bounded non-negative integers; total = prompt + completion."""
        bound = self.settings.max_tokens
        prompt = optional_int(raw, "prompt_tokens", errors, minimum=0, maximum=bound)
        completion = optional_int(raw, "completion_tokens", errors, minimum=0, maximum=bound)
        total = optional_int(raw, "total_tokens", errors, minimum=0, maximum=2 * bound)
        if any(name in errors for name in TOKEN_FIELDS):
            return
        if total is not None and (prompt is None) != (completion is None):
            # Two of three given: the third follows, and must not be negative.
            known = prompt if prompt is not None else completion
            missing = "completion_tokens" if prompt is not None else "prompt_tokens"
            if known > total:  # type: ignore[operator]
                errors["total_tokens"] = (
                    f"smaller than the {'prompt' if prompt is not None else 'completion'}"
                    f"_tokens given ({total} < {known}), so {missing} would be negative"
                )
                return
            if prompt is None:
                prompt = total - known  # type: ignore[operator]
            else:
                completion = total - known  # type: ignore[operator]
        if prompt is None and completion is None and total is not None:
            # Only a total (e.g. a subscription): kept as given.
            values.update(prompt_tokens=0, completion_tokens=0, total_tokens=total)
            return
        prompt = prompt or 0
        completion = completion or 0
        if total is None:
            total = prompt + completion
        elif total != prompt + completion:
            errors["total_tokens"] = (
                f"must equal prompt_tokens + completion_tokens ({prompt} + {completion} = "
                f"{prompt + completion}), got {total}"
            )
            return
        values.update(prompt_tokens=prompt, completion_tokens=completion, total_tokens=total)


# -- field rules, shared with prices and reversals ------------------------------
# Each reads ``raw[name]``; a problem is written to ``errors[name]`` (the
# caller's field name) and the value returned is then None.


def instant_field(
    raw: Mapping[str, Any], name: str, errors: dict[str, str], now: datetime | None
) -> tuple[datetime | None, bool]:
    """A timezone-aware instant, kept in UTC; absent means now. Also: whether it was given."""
    value = raw.get(name)
    if value is None:
        return (now or datetime.now(timezone.utc)).astimezone(timezone.utc), False
    if isinstance(value, str):
        text = value.strip()
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
        except ValueError:
            errors[name] = f"not an ISO 8601 date-time: {_shown(text)}"
            return None, True
    if not isinstance(value, datetime):
        errors[name] = f"expected an ISO 8601 date-time, got {type(value).__name__}"
        return None, True
    if value.tzinfo is None or value.utcoffset() is None:
        errors[name] = "must carry a time zone (e.g. 2026-01-31T12:00:00Z)"
        return None, True
    try:
        in_utc = value.astimezone(timezone.utc)
    except (OverflowError, ValueError):  # e.g. 9999-12-31T23:00-05:00
        in_utc = None
    if in_utc is None or not 2000 <= in_utc.year <= 9998:
        errors[name] = f"out of range: {value.isoformat()}"
        return None, True
    return value.astimezone(timezone.utc), True


def optional_int(
    raw: Mapping[str, Any],
    name: str,
    errors: dict[str, str],
    *,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int | None:
    """An integer field (an int, an integral float, or integer text) within bounds, or None."""
    value = raw.get(name)
    if value is None:
        return None
    if isinstance(value, bool):
        errors[name] = "expected an integer, got a boolean"
        return None
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            errors[name] = f"expected an integer, got {value!r}"
            return None
        value = int(value)
    elif isinstance(value, str):
        text = value.strip()
        if not _INTEGER_TEXT.fullmatch(text):
            errors[name] = f"expected an integer, got {_shown(value)}"
            return None
        value = int(text)
    elif not isinstance(value, int):
        errors[name] = f"expected an integer, got {type(value).__name__}"
        return None
    if minimum is not None and value < minimum:
        errors[name] = f"must be >= {minimum}, got {_shown_int(value)}"
        return None
    if maximum is not None and value > maximum:
        errors[name] = f"must be <= {maximum}, got {_shown_int(value)}"
        return None
    return value


def optional_str(
    raw: Mapping[str, Any], name: str, errors: dict[str, str], max_length: int
) -> str | None:
    """A printable text field (an int is taken as text) of at most ``max_length``, or None if blank."""
    value = raw.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        errors[name] = f"expected a string, got {type(value).__name__}"
        return None
    if isinstance(value, int) and not -(10**max_length) < value < 10**max_length:
        errors[name] = f"longer than {max_length} characters (an integer of {value.bit_length()} bits)"
        return None
    text = str(value).strip()
    if not text:
        return None
    if len(text) > max_length:
        errors[name] = f"longer than {max_length} characters ({len(text)})"
        return None
    if not text.isprintable() and any(
        unicodedata.category(ch) in ("Cc", "Cs", "Cn") for ch in text
    ):
        errors[name] = "contains control or invalid characters"
        return None
    return text


#: The seed's user profile ids are database bigints.
MAX_PROFILE_ID = 2**63 - 1
#: An integer written as text: optional minus, ASCII digits, at most 40 of them.
_INTEGER_TEXT = re.compile(r"-?[0-9]{1,40}")


def _shown_int(value: int) -> str:
    """An integer for an error message; a huge one by its size (str() refuses > 4300 digits)."""
    if -(10**40) < value < 10**40:
        return str(value)
    return f"{'a negative' if value < 0 else 'an'} integer of {value.bit_length()} bits"


def _field_name(key: Any) -> str:
    """A caller's field name for an error, printable and short whatever it was."""
    try:
        text = key if isinstance(key, str) else repr(key)
    except Exception:  # a hostile key's own repr failed
        text = f"<{type(key).__name__}>"
    return text[:64]


def _shown(value: str, limit: int = 40) -> str:
    """A bad value, shortened and made printable, for an error message."""
    text = value if len(value) <= limit else value[:limit] + "…"
    return repr(text)
