"""Configuration problems in plain words: the database URL and settings validation.

A URL the ledger cannot use is refused before any driver is imported (a
MySQL URL would otherwise end in ``ModuleNotFoundError: MySQLdb``), and
pydantic's messages ("Input should be a valid integer, ...") are rewritten
naming the field and where its value came from: an option or a ``LEDGER_``
environment variable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

SUPPORTED_URLS = "sqlite:///PATH or postgresql+psycopg2://USER@HOST/DATABASE"
#: SQLAlchemy back ends and drivers the ledger runs on ("" is the back end's default driver).
DRIVERS = {"sqlite": ("", "pysqlite"), "postgresql": ("", "psycopg2")}
#: Plain words for a field whose value must match a pattern.
PATTERN_HINTS = {"currency": "a three-letter currency code in capitals, such as USD"}


def database_url_problem(url: str) -> str | None:
    """Why the ledger cannot use ``url``, or None when it can (reachability is not checked)."""
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError:
        return f"not a database URL; use {SUPPORTED_URLS}"
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "postgres":
        return "postgres:// is not a scheme SQLAlchemy knows; write postgresql+psycopg2:// instead"
    if backend not in DRIVERS or driver not in DRIVERS[backend]:
        return f"{parsed.drivername} is not supported; the ledger runs on {SUPPORTED_URLS}"
    if backend == "sqlite":
        return _sqlite_problem(parsed.database)
    return None


def _sqlite_problem(database: str | None) -> str | None:
    """A SQLite file that cannot be created or opened, named."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    path = Path(database).expanduser()
    where = path if path.is_absolute() else Path.cwd() / path
    if where.is_dir():
        return f"the SQLite database {where} is a directory, not a file"
    parent = where.parent
    if not parent.exists():
        return f"cannot create the SQLite database {where}: the directory {parent} does not exist"
    if not parent.is_dir():
        return f"cannot create the SQLite database {where}: {parent} is not a directory"
    return None


def redacted(url: str) -> str:
    """The URL with any password hidden, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL: nothing to hide in a message built from it
        return url


def url_source(option_given: bool) -> str:
    """Where the database URL in use came from."""
    if option_given:
        return "--database-url"
    return "LEDGER_DATABASE_URL" if os.environ.get("LEDGER_DATABASE_URL") else "the default"


# -- settings validation -------------------------------------------------------


def settings_problems(exc: Any, options: Mapping[str, str] | None = None,
                      env_prefix: str | None = None) -> str:
    """A pydantic ``ValidationError`` of a settings class as one line of plain problems.

    ``options`` maps a field to the command-line option that gave its value;
    any other field came from the environment variable ``env_prefix + FIELD``.
    """
    prefix = env_prefix if env_prefix is not None else _env_prefix(getattr(exc, "title", ""))
    given = options or {}
    problems = []
    for error in exc.errors():
        name = ".".join(str(part) for part in error["loc"]) or "settings"
        if name.isupper():  # read from the environment variable of that name (an alias)
            problems.append(f"{name} {plain_message(name, error)}")
            continue
        source = given.get(name) or f"{prefix}{name.upper()}"
        problems.append(f"{name} ({source}) {plain_message(name, error)}")
    return "; ".join(problems)


def plain_message(name: str, error: Mapping[str, Any]) -> str:
    """What a value must be, and what it was, for one pydantic error."""
    kind, ctx = error.get("type", ""), error.get("ctx") or {}
    rules = {
        "int_parsing": "must be a whole number",
        "int_type": "must be a whole number",
        "int_from_float": "must be a whole number",
        "float_parsing": "must be a number",
        "float_type": "must be a number",
        "bool_parsing": "must be true or false",
        "missing": "must be set",
    }
    if kind in rules:
        rule = rules[kind]
    elif kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        words = {"greater_than_equal": ("at least", "ge"), "greater_than": ("more than", "gt"),
                 "less_than_equal": ("at most", "le"), "less_than": ("less than", "lt")}[kind]
        rule = f"must be {words[0]} {ctx.get(words[1])}"
    elif kind == "string_pattern_mismatch":
        rule = f"must be {PATTERN_HINTS.get(name, 'of the form ' + str(ctx.get('pattern')))}"
    elif kind == "literal_error":
        rule = f"must be {ctx.get('expected')}"
    elif kind == "value_error" and ctx.get("error") is not None:
        rule = str(ctx["error"])
    else:
        rule = _lowered(str(error.get("msg", "is not valid")))
    if "input" in error and kind != "missing" and "secret" not in name.lower():  # never echo a secret
        rule += f", got {_shown_input(error['input'])}"
    return rule


def _lowered(message: str) -> str:
    message = message.removeprefix("Value error, ")
    return message[:1].lower() + message[1:]


def _shown_input(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _env_prefix(model_name: str) -> str:
    """The environment prefix of the settings class named ``model_name`` (LEDGER_ if unknown)."""
    from pydantic_settings import BaseSettings

    pending = list(BaseSettings.__subclasses__())
    while pending:
        cls = pending.pop()
        if cls.__name__ == model_name:
            return str(cls.model_config.get("env_prefix") or "")
        pending.extend(cls.__subclasses__())
    return "LEDGER_"
