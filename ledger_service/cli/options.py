"""The global options: where they are defined, and their copies every command accepts.

``--database-url`` and ``--billing-tz`` belong before the command, as the
group's options, and are accepted after it too (``ledger report --billing-tz
Europe/Paris``): each command gets copies whose callbacks set the same
:class:`~ledger_service.cli.app.State`. Given in both places, the one after
the command wins.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

#: The global options by the settings field they set.
GLOBAL_OPTIONS = {"database_url": "--database-url", "billing_tz": "--billing-tz"}
DATABASE_URL_HELP = ("Event store and read models: sqlite:///PATH or postgresql+psycopg2://USER@HOST/DATABASE "
                     "[default: $LEDGER_DATABASE_URL, else sqlite ledger.db in the working directory]")
BILLING_TZ_HELP = ("IANA time zone deciding billing dates; keep it the same for every run on one ledger "
                   "[default: $LEDGER_BILLING_TZ, else UTC]")


def package_version() -> str:
    """The installed distribution's version."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llm-usage-ledger")
    except PackageNotFoundError:
        return "unknown (not installed)"


def print_version(value: bool) -> None:
    if value:
        typer.echo(f"ledger (llm-usage-ledger) {package_version()}")
        raise typer.Exit(0)


def _set_after_command(field_name: str) -> Callable[[typer.Context, str | None], str | None]:
    """A callback that lets a global option given after the command override the one before it."""

    def remember(ctx: typer.Context, value: str | None) -> str | None:
        from ledger_service.cli.app import State

        state = ctx.find_object(State)
        if value is not None and state is not None:
            setattr(state, field_name, value)
            if field_name == "billing_tz":
                state.settings()  # a bad zone fails here, named, before any work
        return value

    return remember


def _global_options_after_command(
    database_url: str | None = typer.Option(
        None, "--database-url", metavar="URL", expose_value=False, callback=_set_after_command("database_url"),
        help=DATABASE_URL_HELP, rich_help_panel="Global options"),
    billing_tz: str | None = typer.Option(
        None, "--billing-tz", metavar="ZONE", expose_value=False, callback=_set_after_command("billing_tz"),
        help=BILLING_TZ_HELP, rich_help_panel="Global options"),
) -> None:
    """The global options, as every command also accepts them."""


def shared_options() -> list[Any]:
    """Fresh parameters for the global options, for one command (parameters are not shared)."""
    holder = typer.Typer(add_completion=False)
    holder.command()(_global_options_after_command)
    return list(typer.main.get_command(holder).params)
