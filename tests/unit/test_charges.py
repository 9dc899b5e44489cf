"""Validation: every rule names its field, and nothing invalid gets through."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from ledger import InvalidCharge, Settings
from ledger.charges import ChargeValidator, default_profile_resolver

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def validate() -> ChargeValidator:
    return ChargeValidator(Settings(database_url="sqlite:///unused.db"))


def good(**overrides):
    fields = dict(account_id="acme", user_id="u1", charge_type="completion",
                  prompt_tokens=10, completion_tokens=5)
    fields.update(overrides)
    return fields


def errors_of(validate, **fields) -> dict[str, str]:
    with pytest.raises(InvalidCharge) as caught:
        validate(fields, now=NOW)
    assert str(caught.value).startswith("invalid charge: ")
    for name in caught.value.errors:
        assert name in str(caught.value)
    return caught.value.errors


def test_seed_example_resolves_account_from_profile(validate):
    charge = validate(dict(user_profile_id=123, charge_type="usage",
                           prompt_tokens=100, completion_tokens=50), now=NOW)
    assert (charge.account_id, charge.user_id) == default_profile_resolver(123) == ("profile-123", "123")
    assert charge.total_tokens == 150
    assert charge.occurred_at == NOW and not charge.occurred_at_given
    assert charge.provider is None and charge.model is None
    assert charge.charge_id  # a fresh id when none is given


def test_custom_resolver_is_used():
    validate = ChargeValidator(Settings(database_url="sqlite:///x.db"),
                               resolver=lambda pid: (f"org-{pid // 10}", f"member-{pid}"))
    charge = validate(dict(user_profile_id=42, charge_type="tool", prompt_tokens=1), now=NOW)
    assert (charge.account_id, charge.user_id) == ("org-4", "member-42")


def test_resolver_failure_names_user_profile_id():
    def resolver(pid):
        raise KeyError(pid)
    validate = ChargeValidator(Settings(database_url="sqlite:///x.db"), resolver=resolver)
    errors = errors_of(validate, user_profile_id=7, charge_type="tool")
    assert "user_profile_id" in errors and "7" in errors["user_profile_id"]


def test_account_is_required(validate):
    assert "account_id" in errors_of(validate, charge_type="usage", prompt_tokens=1)


@pytest.mark.parametrize("name", ["prompt_tokens", "completion_tokens", "total_tokens"])
@pytest.mark.parametrize("value", [-1, 1.5, "ten", True, [], float("nan"), "1e3", 10**13])
def test_tokens_must_be_bounded_non_negative_integers(validate, name, value):
    assert name in errors_of(validate, **good(**{name: value}))


def test_integer_strings_and_integral_floats_are_accepted(validate):
    charge = validate(good(prompt_tokens="12", completion_tokens=3.0), now=NOW)
    assert (charge.prompt_tokens, charge.completion_tokens, charge.total_tokens) == (12, 3, 15)


def test_total_is_derived_and_must_match(validate):
    assert validate(good(), now=NOW).total_tokens == 15
    assert validate(good(total_tokens=15), now=NOW).total_tokens == 15
    message = errors_of(validate, **good(total_tokens=16))["total_tokens"]
    assert "10 + 5 = 15" in message and "16" in message


def test_two_of_three_tokens_derive_the_third(validate):
    charge = validate(dict(account_id="a", charge_type="tool", prompt_tokens=4, total_tokens=10), now=NOW)
    assert (charge.prompt_tokens, charge.completion_tokens) == (4, 6)
    assert "total_tokens" in errors_of(validate, account_id="a", charge_type="tool",
                                       completion_tokens=11, total_tokens=10)


def test_only_a_total_is_kept(validate):
    charge = validate(dict(account_id="a", charge_type="subscription", total_tokens=1000), now=NOW)
    assert (charge.prompt_tokens, charge.completion_tokens, charge.total_tokens) == (0, 0, 1000)


def test_charge_type_must_be_configured(validate):
    assert "unknown charge type" in errors_of(validate, **good(charge_type="gift"))["charge_type"]
    assert "required" in errors_of(validate, account_id="a", prompt_tokens=1)["charge_type"]


def test_charge_types_are_configurable():
    settings = Settings(database_url="sqlite:///x.db", charge_types="completion,embedding")
    validate = ChargeValidator(settings)
    assert validate(good(charge_type="embedding"), now=NOW).charge_type == "embedding"
    with pytest.raises(InvalidCharge):
        validate(good(charge_type="usage"), now=NOW)


@pytest.mark.parametrize("name", ["account_id", "user_id", "provider", "model", "session_key", "charge_id"])
def test_strings_are_bounded_and_printable(validate, name):
    assert "longer than" in errors_of(validate, **good(**{name: "x" * 257}))[name]
    assert "control" in errors_of(validate, **good(**{name: "a\x00b"}))[name]
    assert "U+0000" in errors_of(validate, **good(**{name: "a\x00b"}))[name]
    assert "expected a string" in errors_of(validate, **good(**{name: {"a": 1}}))[name]


TEXT_FIELDS = ["account_id", "user_id", "charge_id", "provider", "model", "session_key", "reference"]
ID_FIELDS = ["account_id", "user_id", "charge_id"]
FREE_TEXT_FIELDS = [name for name in TEXT_FIELDS if name not in ID_FIELDS]
CHECKED_FIELDS = TEXT_FIELDS + ["charge_type"]  # a charge type is text before it is looked up
CONTROLS = {"\x00": "U+0000", "\x07": "U+0007", "\x1b": "U+001B", "\t": "U+0009", "\n": "U+000A",
            "\r": "U+000D", "\x7f": "U+007F", "\x85": "U+0085", "\x9f": "U+009F"}
SURROGATES = {"\ud800": "U+D800", "\udbff": "U+DBFF", "\udc00": "U+DC00", "\udfff": "U+DFFF"}
INVISIBLE = {chr(code): f"U+{code:04X}" for code in [*range(0x200B, 0x2010), *range(0x202A, 0x202F),
                                                      *range(0x2066, 0x206A), 0xFEFF]}
VALID_TEXT = ["Zoë", "Ærøskøbing", "日本語のモデル", "用户-42", "🙂", "👩💻", "🇫🇷", "mañana café", "Ελληνικά",
              "a b", "x\u2028y", "e\u0301", "'; DROP TABLE x; --"]


def refusal(validate, name: str, value: str) -> str:
    """The message for ``name``, which must be the only field refused."""
    errors = errors_of(validate, **good(**{name: value}))
    assert set(errors) == {name}, errors
    return errors[name]


@pytest.mark.parametrize("name", CHECKED_FIELDS)
@pytest.mark.parametrize("char", list(CONTROLS))
def test_control_characters_are_refused_in_every_text_field(validate, name, char):
    message = refusal(validate, name, f"ab{char}cd")
    assert "control character" in message and CONTROLS[char] in message and "offset 2" in message


@pytest.mark.parametrize("name", CHECKED_FIELDS)
@pytest.mark.parametrize("char", list(SURROGATES))
def test_lone_surrogates_are_refused_in_every_text_field(validate, name, char):
    import json

    value = json.loads(json.dumps(f"x{char}"))  # as Python's json decodes "x\ud800"
    message = refusal(validate, name, value)
    assert "lone surrogate" in message and SURROGATES[char] in message
    message.encode("utf-8")  # the message itself never carries the bad character


@pytest.mark.parametrize("name", ID_FIELDS)
@pytest.mark.parametrize("char", list(INVISIBLE))
def test_ids_refuse_invisible_and_direction_controls(validate, name, char):
    message = refusal(validate, name, f"acme{char}")
    assert "invisible or direction-control" in message and INVISIBLE[char] in message
    assert char not in message


@pytest.mark.parametrize("name", FREE_TEXT_FIELDS)
def test_free_text_keeps_invisible_and_direction_characters(validate, name):
    value = "\u202eevil \u200b\u2066x\u2069 \ufeff"
    assert getattr(validate(good(**{name: value}), now=NOW), name) == value


def test_unassigned_code_points_are_refused(validate):
    for value in ("\u0378", "x\ufffe", "\U000e0fff"):
        assert "unassigned" in refusal(validate, "model", value)


@pytest.mark.parametrize("name", TEXT_FIELDS)
@pytest.mark.parametrize("value", VALID_TEXT)
def test_letters_of_every_script_and_emoji_are_kept(validate, name, value):
    assert getattr(validate(good(**{name: value}), now=NOW), name) == value


def test_text_around_a_value_is_trimmed_not_refused(validate):
    assert validate(good(account_id=" acme\n", reference="\tr "), now=NOW).account_id == "acme"


def test_a_profile_resolved_to_an_unusable_id_is_named():
    validate = ChargeValidator(Settings(database_url="sqlite:///x.db"), resolver=lambda pid: ("ac\u200bme", "u"))
    message = errors_of(validate, user_profile_id=1, charge_type="tool")["user_profile_id"]
    assert "U+200B" in message and "account_id" in message


@pytest.mark.parametrize("key", ["\ud800", "a\x00b", "\u202e", "new\nline", "x" * 100])
def test_unknown_field_names_are_shown_escaped(validate, key):
    errors = errors_of(validate, **{**good(), key: 1})
    (name,) = errors
    assert errors[name] == "unknown field"
    assert name.isprintable() and len(name) <= 64 * 10
    name.encode("utf-8")
    assert name == "".join(c if c.isprintable() else ascii(c)[1:-1] for c in key[:64])


def test_printable_text_takes_the_fast_path():
    """The check is one isprintable() scan for text with nothing to refuse (nearly all of it)."""
    import timeit

    from ledger.text import text_problem

    ids = [f"acct-{n}-Zoë-日本" for n in range(1000)]
    assert all(text_problem(value, identifier=True) is None for value in ids)
    assert timeit.timeit(lambda: [text_problem(v, identifier=True) for v in ids], number=20) < 1.0


def test_reference_has_its_own_bound(validate):
    assert validate(good(reference="r" * 1000), now=NOW).reference == "r" * 1000
    assert "reference" in errors_of(validate, **good(reference="r" * 1025))


def test_unicode_is_kept(validate):
    assert validate(good(user_id="ユーザー🙂"), now=NOW).user_id == "ユーザー🙂"


def test_occurred_at_must_be_aware(validate):
    assert "time zone" in errors_of(validate, **good(occurred_at="2026-01-01T10:00:00"))["occurred_at"]
    assert "time zone" in errors_of(validate, **good(occurred_at=datetime(2026, 1, 1)))["occurred_at"]
    assert "ISO 8601" in errors_of(validate, **good(occurred_at="yesterday"))["occurred_at"]
    assert "ISO 8601" in errors_of(validate, **good(occurred_at=12345))["occurred_at"]


def test_occurred_at_is_kept_in_utc_and_may_be_in_the_past(validate):
    charge = validate(good(occurred_at="2025-12-31T23:30:00-05:00"), now=NOW)
    assert charge.occurred_at == datetime(2026, 1, 1, 4, 30, tzinfo=timezone.utc)
    assert charge.occurred_at.tzinfo == timezone.utc and charge.occurred_at_given
    assert validate(good(occurred_at="2026-01-01T00:00:00Z"), now=NOW).occurred_at.hour == 0
    late = validate(good(occurred_at=NOW - timedelta(days=40)), now=NOW)
    assert late.occurred_at == NOW - timedelta(days=40)


def test_unknown_fields_are_named(validate):
    assert errors_of(validate, **good(promt_tokens=3)) == {"promt_tokens": "unknown field"}


def test_all_errors_are_reported_at_once(validate):
    errors = errors_of(validate, charge_type="nope", prompt_tokens=-1, occurred_at="x")
    assert {"account_id", "charge_type", "prompt_tokens", "occurred_at"} <= set(errors)


def test_not_a_mapping(validate):
    with pytest.raises(InvalidCharge) as caught:
        validate(["not", "a", "dict"])  # type: ignore[arg-type]
    assert "charge" in caught.value.errors


def test_differences_ignore_a_defaulted_time(validate):
    first = validate(good(charge_id="c"), now=NOW)
    retry = validate(good(charge_id="c"), now=NOW + timedelta(seconds=5))
    assert retry.differences(first.payload()) == {}
    assert first.payload_hash() == retry.payload_hash()
    changed = validate(good(charge_id="c", prompt_tokens=11), now=NOW)
    assert set(changed.differences(first.payload())) == {"prompt_tokens", "total_tokens"}
    moved = validate(good(charge_id="c", occurred_at=NOW - timedelta(days=1)), now=NOW)
    assert set(moved.differences(first.payload())) == {"occurred_at"}


def test_canonical_json_is_the_standard_librarys_spelling(validate):
    """The fast encoder writes byte for byte what json.dumps(sort_keys, compact, unicode kept) writes."""
    import json

    from ledger.charges import canonical_json
    from tests.reliability.hostile_corpus import corpus

    def standard(data):
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    checked = 0
    for case in corpus():
        try:
            payload = validate(case.fields, now=NOW).payload()
        except InvalidCharge:
            continue
        assert canonical_json(payload) == standard(payload), case.name
        checked += 1
    assert checked > 100
    odd = {"s": "\x00\x1f\x7f\u2028 \"\\ é 中 😀", "n": None, "big": 2**70, "i": -(2**63)}
    assert canonical_json(odd) == standard(odd)


@pytest.mark.parametrize("given", [True, False])
def test_index_entry_is_the_payload_and_its_hash(validate, given):
    from ledger.charges import canonical_json

    fields = good(charge_id="c-1", occurred_at=NOW.isoformat()) if given else good(charge_id="c-1")
    charge = validate(fields, now=NOW)
    assert charge.occurred_at_given is given
    assert charge.index_entry() == (canonical_json(charge.payload()), charge.payload_hash())
