"""One pass over the built command tree, so every command's help and options follow the same rules.

* Help texts are literal: ``[default: ...]`` in a help string is shown, not
  taken for rich markup (which swallowed it, leaving "Reject file .").
* Flags show no value type: the rich help of this typer labels every flag,
  ``--help`` included, ``<bool>``.
* Every ``--json`` option says what it does, in the command's words or these.
* The global options (``--database-url``, ``--billing-tz``) are accepted after
  the command too, so ``ledger report --billing-tz Europe/Paris`` works.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import typer
from rich.markup import escape
from typer.core import TyperGroup, TyperOption

Command = Any  # typer's own click: a command or group of typer.core

#: What a ``--json`` option without help of its own says.
JSON_HELP = "Print JSON for scripts instead of text."
#: Commands that parse their own arguments (``bench`` has its own --database-url).
OWN_ARGUMENTS = frozenset({"bench"})


def walk(command: Command, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Command]]:
    """Every command of the tree with its path of names, groups before their commands."""
    yield path, command
    if isinstance(command, TyperGroup):
        for name, sub in command.commands.items():
            yield from walk(sub, (*path, name))


def polish(root: Command, shared_options: Callable[[], list[Any]] | None = None) -> None:
    """Apply the module's rules to every command under ``root`` (once per built tree).

    ``shared_options()`` makes the parameters every command (not group) also
    accepts; ``bench``, which parses its own arguments, gets none.
    """
    if getattr(root, "_ledger_polished", False):
        return
    root._ledger_polished = True  # type: ignore[attr-defined]
    rich_markup = getattr(root, "rich_markup_mode", None) == "rich"
    help_names = list((root.context_settings or {}).get("help_option_names") or ["--help"])
    for path, command in walk(root):
        if shared_options and path and not isinstance(command, TyperGroup) and path[-1] not in OWN_ARGUMENTS:
            known = {opt for param in command.params for opt in param.opts}
            command.params.extend(p for p in shared_options() if not known & set(p.opts))
        for param in command.params:
            _describe_json(param)
            _hide_flag_type(param)
        _hide_flag_type(_help_option(command, help_names))
        if rich_markup:
            _literal_help(command)


def _describe_json(param: Any) -> None:
    if isinstance(param, TyperOption) and "--json" in param.opts and not param.help:
        param.help = JSON_HELP


def _hide_flag_type(param: Any | None) -> None:
    """A flag takes no value, so its help shows no value type."""
    if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
        param.metavar = ""


def _help_option(command: Command, help_names: list[str]) -> Any | None:
    """The command's help option, as it will be used when the command runs (click caches it)."""
    if not command.add_help_option:
        return None
    context = typer.Context(command, info_name=command.name, help_option_names=help_names)
    return command.get_help_option(context)


def _literal_help(command: Command) -> None:
    """Escape what rich would read as markup in the command's and its parameters' help."""
    for owner, attribute in ((command, "help"), (command, "short_help"), (command, "epilog")):
        text = getattr(owner, attribute, None)
        if text:
            setattr(owner, attribute, escape(text))
    for param in command.params:
        text: Any = getattr(param, "help", None)
        if text:
            param.help = escape(text)  # type: ignore[attr-defined]
