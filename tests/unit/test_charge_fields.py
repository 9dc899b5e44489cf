"""Every surface that takes a charge agrees with ledger.charge_fields, the one definition."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from datetime import datetime

import pytest
import typer

from ledger.charge_fields import (
    BILLING_FIELDS,
    CHARGE_FIELDS,
    INPUT_FIELDS,
    RECORDED_EVENT_FIELDS,
    REVERSED_EVENT_FIELDS,
    SEED_FIELDS,
    SPECS,
)


def test_the_definition_is_consistent():
    assert set(INPUT_FIELDS) == set(CHARGE_FIELDS) and len(INPUT_FIELDS) == len(CHARGE_FIELDS)
    assert INPUT_FIELDS == SEED_FIELDS + BILLING_FIELDS
    assert list(SPECS) == list(CHARGE_FIELDS)
    assert all(spec.description and spec.type in (str, int, datetime) for spec in SPECS.values())
    assert [name for name, spec in SPECS.items() if spec.required] == ["charge_type"]


def test_seed_order_is_the_seed_task_documentation_order():
    assert SEED_FIELDS == ("user_profile_id", "session_key", "provider", "charge_type", "prompt_tokens",
                           "completion_tokens", "total_tokens", "model", "reference")


def test_charges_module_exports_the_same_lists():
    from ledger import charges

    assert charges.INPUT_FIELDS == INPUT_FIELDS and charges.SEED_FIELDS == SEED_FIELDS


def test_validated_charge_holds_every_field():
    from ledger.charges import Charge

    names = {f.name for f in dataclasses.fields(Charge)}
    assert set(CHARGE_FIELDS) <= names
    for name in CHARGE_FIELDS:
        assert Charge.__annotations__[name] == SPECS[name].annotation, name


def test_events_carry_every_field_the_projections_read():
    from ledger.domain import Account

    recorded = [f.name for f in dataclasses.fields(Account.ChargeRecorded)]
    reversed_ = [f.name for f in dataclasses.fields(Account.ChargeReversed)]
    assert recorded[-len(RECORDED_EVENT_FIELDS):] == list(RECORDED_EVENT_FIELDS)
    assert reversed_[-len(REVERSED_EVENT_FIELDS):] == list(REVERSED_EVENT_FIELDS)
    assert set(CHARGE_FIELDS) <= set(RECORDED_EVENT_FIELDS)


def _optional_of(annotation: object) -> object:
    """``T`` for ``Optional[T]`` (and ``T`` itself)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if typing.get_origin(annotation) is typing.Union and len(args) == 1 else annotation


def test_http_charge_schema():
    from ledger_service.http.schemas import ChargeIn

    model = ChargeIn.model_fields
    assert list(model) == list(CHARGE_FIELDS)
    for name, info in model.items():
        spec = SPECS[name]
        assert _optional_of(info.annotation) is spec.type, name
        assert info.is_required() == spec.required, name
    assert ChargeIn.model_config.get("extra") == "forbid"


def test_cli_record_options(tmp_path):
    from typer.testing import CliRunner

    from ledger_service.cli import app

    record = typer.main.get_command(app).commands["record"]  # type: ignore[attr-defined]
    options = [p for p in record.params if p.name in SPECS]
    assert [p.name for p in options] == list(CHARGE_FIELDS)
    # Each option is spelled as its field; the account and the user also as every other command spells them.
    other_spelling = {"account_id": ["--account"], "user_id": ["--user"]}
    assert all(p.opts == ["--" + p.name.replace("_", "-"), *other_spelling.get(p.name, [])] for p in options)
    # Integers are parsed as such (times and text are given as text: the ledger reads them).
    url = f"sqlite:///{tmp_path / 'never.db'}"
    for name in (name for name, spec in SPECS.items() if spec.type is int):
        option = "--" + name.replace("_", "-")
        result = CliRunner().invoke(app, ["--database-url", url, "record", option, "x"])
        assert result.exit_code == 2 and option in result.output, (name, result.output)


def test_create_charge_task_signature():
    from jobs import tasks

    function = getattr(tasks.create_charge, "func", tasks.create_charge)
    parameters = inspect.signature(function).parameters.values()
    positional = [p.name for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD]
    keyword = {p.name for p in parameters if p.kind is p.KEYWORD_ONLY} - {"task"}
    assert tuple(positional) == SEED_FIELDS
    assert keyword == set(BILLING_FIELDS)
    assert tuple(getattr(tasks, "POSITIONAL", SEED_FIELDS)) == SEED_FIELDS


def test_import_columns():
    from ledger.import_formats import ImportFileError, check_columns

    check_columns(list(CHARGE_FIELDS), seed_export=False)
    with pytest.raises(ImportFileError, match="unknown CSV column"):
        check_columns([*CHARGE_FIELDS, "tokens"], seed_export=False)
    with pytest.raises(ImportFileError) as refused:
        check_columns(["nothing"], seed_export=False)
    assert ", ".join(INPUT_FIELDS) in str(refused.value)
