"""The charge as a value: its fields, their defaults and their validation.

Validation happens here and only here, before anything is stored, so that bad
input never enters the log (invariant 7). Every bad field is reported at once.
The rule for each kind of value is in :mod:`ledger.fields` (shared with prices
and reversals), and what text may contain in :mod:`ledger.text`.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from eventsourcing.utils import resolve_topic

from ledger.charge_fields import INPUT_FIELDS, SEED_FIELDS  # noqa: F401 - both stay importable from here
from ledger.errors import InvalidCharge
from ledger.fields import MAX_PROFILE_ID, instant_field, optional_int, optional_str
from ledger.settings import Settings
from ledger.text import field_name

TOKEN_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens")
#: Fields that name something (stricter text: no invisible or direction controls).
ID_FIELDS = ("account_id", "user_id", "charge_id")

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
        unknown = sorted(field_name(k) for k in raw if k not in INPUT_FIELDS)
        for name in unknown:
            errors[name] = "unknown field"
        values: dict[str, Any] = {}

        profile = optional_int(raw, "user_profile_id", errors, minimum=0, maximum=MAX_PROFILE_ID)
        limit = self.settings.max_string_length
        for name in ("session_key", "provider", "model"):
            values[name] = optional_str(raw, name, errors, limit)
        for name in ID_FIELDS:
            values[name] = optional_str(raw, name, errors, limit, identifier=True)
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
            except Exception as exc:  # noqa: BLE001 - a resolver's own lookup error names the cause
                errors["user_profile_id"] = f"no account for user profile {profile}: {exc}"
                return
            resolved = {"account_id": account_id, "user_id": user_id}
            limit = self.settings.max_string_length
            for name in ("account_id", "user_id"):
                problem: dict[str, str] = {}
                optional_str(resolved, name, problem, limit, identifier=True)
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
