"""CloudEvents to charges: the documented mapping, field by field."""

from __future__ import annotations

from ledger_service.http.cloudevents import charge_id, event_field, to_charge

TYPES = ("completion", "plugin", "tool", "usage", "subscription")
BASE = {"specversion": "1.0", "id": "1", "source": "gw", "type": "prompt", "subject": "acme"}


def test_names_map_and_the_pair_makes_the_charge_id():
    fields, errors = to_charge({**BASE, "time": "2026-01-01T00:00:00Z", "data": {
        "prompt_tokens": 3, "completion_tokens": 4, "model": "m", "provider": "p", "user_id": "u",
        "colour": "ignored"}}, TYPES)
    assert errors == {}
    assert fields == {"prompt_tokens": 3, "completion_tokens": 4, "model": "m", "provider": "p", "user_id": "u",
                      "charge_type": "completion", "account_id": "acme", "charge_id": "gw:1",
                      "occurred_at": "2026-01-01T00:00:00Z"}


def test_openmeter_llm_shape():
    assert to_charge({**BASE, "data": {"tokens": 9, "type": "input"}}, TYPES)[0]["prompt_tokens"] == 9
    assert to_charge({**BASE, "data": {"tokens": 9, "type": "output"}}, TYPES)[0]["completion_tokens"] == 9
    assert to_charge({**BASE, "data": {"tokens": 9, "type": "system"}}, TYPES)[1] == {
        "data.type": "with data.tokens, must be one of input, output"}


def test_charge_type_from_data_then_event_type_then_default():
    assert to_charge({**BASE, "data": {"charge_type": "tool"}}, TYPES)[0]["charge_type"] == "tool"
    assert to_charge({**BASE, "type": "usage"}, TYPES)[0]["charge_type"] == "usage"
    assert to_charge(BASE, TYPES)[0]["charge_type"] == "completion"


def test_long_pairs_hash_to_a_bounded_distinct_id():
    long = charge_id("s" * 200, "i" * 100)
    assert long.startswith("ce-sha256:") and len(long) <= 256
    assert long != charge_id("s" * 201, "i" * 99)
    assert charge_id("a", "b") == "a:b"


def test_envelope_errors_name_event_fields():
    fields, errors = to_charge({"specversion": "0.3", "id": "", "data": [1]}, TYPES)
    assert set(errors) == {"specversion", "id", "source", "type", "subject", "data"}
    assert event_field("account_id") == "subject" and event_field("prompt_tokens") == "data.prompt_tokens"


def test_source_and_id_are_checked_as_ids_naming_the_event_field():
    """They make the charge id (or its digest, which would hide a bad character), so each is named."""
    for name, value, code in (("id", "a\u200bb", "U+200B"), ("source", "s\x00", "U+0000"),
                              ("source", "s" * 300 + "\ud800", "U+D800"), ("id", "\u202e1", "U+202E"),
                              ("type", "prompt\n", "U+000A"), ("type", "pr\x1bompt", "U+001B")):
        fields, errors = to_charge({**BASE, name: value}, TYPES)
        assert set(errors) == {name} and code in errors[name], (name, value, errors)
        assert fields == {}


def test_free_text_in_data_is_left_to_the_ledger():
    fields, errors = to_charge({**BASE, "data": {"model": "m\u200b", "reference": "r\x00"}}, TYPES)
    assert errors == {} and fields["model"] == "m\u200b" and fields["reference"] == "r\x00"
