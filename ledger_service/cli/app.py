"""The ``ledger`` Typer app: global options, error handling, output helpers.

Every command reaches the store through :meth:`State.ledger`, so the global
``--database-url`` and ``--billing-tz`` apply everywhere, given before the
command or after it (:mod:`ledger_service.cli.options`). Errors a user can fix
become one ``error: ...`` line on stderr and an exit code (see :data:`EXIT`),
configuration errors in plain words (:mod:`ledger_service.cli.config`); only a
bug shows a traceback. The built command tree is brought under one set of
help rules as it is made (:mod:`ledger_service.cli.tree`).
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from ledger_service.cli.options import (
    BILLING_TZ_HELP,
    DATABASE_URL_HELP,
    GLOBAL_OPTIONS,
    print_version,
    shared_options,
)

if TYPE_CHECKING:
    from ledger.application import Ledger
    from ledger.settings import ProcessSettings, Settings

#: Exit codes scripts can rely on.
EXIT = {"ok": 0, "failed": 1, "usage": 2, "partial": 3, "interrupted": 130}

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)


class CliError(Exception):
    """A user-facing failure: printed as one line, exits with ``code``."""

    def __init__(self, message: str, code: int = EXIT["usage"]) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def error_line(exc: BaseException) -> tuple[str, int] | None:
    """The one line and exit code for an error a user can act on; None for a bug."""
    from ledger.errors import BusyAccount, LedgerError
    from ledger.importer import ImportInterrupted

    if isinstance(exc, CliError):
        return exc.message, exc.code
    if _is_usage_error(exc):
        return exc.format_message(), int(getattr(exc, "exit_code", EXIT["usage"]))  # type: ignore[attr-defined]
    if isinstance(exc, LedgerError):
        # What the store could not do now is operational (1); a request that
        # cannot be done as asked (invalid, unknown, conflicting) is the user's (2).
        operational = isinstance(exc, (BusyAccount, ImportInterrupted)) or type(exc).__name__ == "CompactionError"
        return str(exc), EXIT["failed"] if operational else EXIT["usage"]
    projection_error = _projection_error(exc)
    if projection_error is not None:
        return projection_error
    if isinstance(exc, FileNotFoundError):
        return f"no such file: {exc.filename or exc}", EXIT["usage"]
    if isinstance(exc, (IsADirectoryError, PermissionError)):
        return f"cannot open {exc.filename}: {exc.strerror}", EXIT["usage"]
    try:
        import pydantic
        import sqlalchemy.exc as sa_exc
    except ImportError:  # pragma: no cover - both are dependencies
        return None
    if isinstance(exc, pydantic.ValidationError):
        from ledger_service.cli.config import settings_problems

        return f"bad configuration: {settings_problems(exc)}", EXIT["usage"]
    if isinstance(exc, sa_exc.ArgumentError):
        return f"bad database URL: {exc}", EXIT["usage"]
    if isinstance(exc, sa_exc.NoSuchModuleError):
        return f"bad database URL: {exc}", EXIT["usage"]
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)):
        first = str(exc.orig if getattr(exc, "orig", None) else exc).strip().splitlines()[0]
        return f"database unavailable: {first}", EXIT["failed"]
    return None


def _projection_error(exc: BaseException) -> tuple[str, int] | None:
    """A projection refusing to run as configured (2), or losing a race it reports (1)."""
    try:
        from projections.errors import ProjectionError, ZoneMismatch
    except ImportError:  # projections not installed: nothing of theirs can be raised
        return None
    if not isinstance(exc, ProjectionError):
        return None
    return str(exc), EXIT["usage"] if isinstance(exc, ZoneMismatch) else EXIT["failed"]


def _is_usage_error(exc: BaseException) -> bool:
    """Typer's (or click's) command-line usage errors: bad option, bad value, missing argument."""
    return any(cls.__name__ == "UsageError" for cls in type(exc).__mro__) and hasattr(exc, "format_message")


def _is_help_request(exc: BaseException) -> bool:
    """A group run without a subcommand: its help is the answer, as for ``ledger`` alone."""
    return type(exc).__name__ == "NoArgsIsHelpError"


def fail(message: str) -> None:
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()


class LedgerGroup(typer.core.TyperGroup):
    """Runs the command, turning user-facing errors into one line and an exit code."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Typer builds the whole tree before the root group: polish it here, once per build."""
        super().__init__(*args, **kwargs)
        from ledger_service.cli.tree import polish

        polish(self, shared_options)

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)  # in the order they were declared, not sorted

    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
        except typer.Abort:
            fail("aborted")
            code = EXIT["failed"]
        except KeyboardInterrupt:
            fail("interrupted")
            code = EXIT["interrupted"]
        except Exception as exc:  # noqa: BLE001 - mapped below, bugs re-raised
            if _is_help_request(exc):
                _show_help(exc)
                code = EXIT["ok"]
            else:
                shown = error_line(exc)
                if shown is None:
                    raise
                fail(shown[0])
                code = shown[1]
        if not standalone_mode:
            return code
        sys.exit(code)


def _show_help(exc: Any) -> None:
    """Rich help is printed while it is formatted; plain help comes back as the message."""
    text = exc.format_message()
    if text:
        typer.echo(text)


app = typer.Typer(
    cls=LedgerGroup,
    name="ledger",
    help="An event-sourced usage ledger for LLM platforms: record charges, project daily "
    "billing records, compact and audit.",
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@dataclass
class State:
    """What the global options chose; the ledger is opened on first use and closed at exit."""

    database_url: str | None = None
    billing_tz: str | None = None
    _ledger: Ledger | None = field(default=None, repr=False)
    _process: ProcessSettings | None = field(default=None, repr=False)

    def settings(self, **overrides: Any) -> Settings:
        """The ledger section these options and the environment give, or one plain line saying what is wrong."""
        from pydantic import ValidationError

        from ledger.settings import Settings
        from ledger_service.cli.config import database_url_problem, settings_problems, url_source

        values = {k: v for k, v in (("database_url", self.database_url),
                                     ("billing_tz", self.billing_tz)) if v}
        values.update(overrides)
        options = {name: GLOBAL_OPTIONS[name] for name in values if name in GLOBAL_OPTIONS}
        try:
            settings = Settings(**values)
        except ValidationError as exc:
            raise CliError(f"bad configuration: {settings_problems(exc, options, 'LEDGER_')}") from None
        problem = database_url_problem(settings.database_url)
        if problem:
            from_option = bool(self.database_url) and settings.database_url == self.database_url
            raise CliError(f"bad database URL ({url_source(from_option)}): {problem}")
        return settings

    def process_settings(self) -> ProcessSettings:
        """This process's settings, every section, read once: what ``ledger worker`` and ``ledger serve`` run with.

        The ledger section is :meth:`settings`; the others come from the environment.
        """
        if self._process is None:
            from pydantic import ValidationError

            from ledger.settings import load_settings
            from ledger_service.cli.config import settings_problems

            ledger = self.settings()
            try:
                self._process = load_settings(ledger)
            except ValidationError as exc:
                raise CliError(f"bad configuration: {settings_problems(exc)}") from None
        return self._process

    def ledger(self) -> Ledger:
        if self._ledger is None:
            import sqlalchemy.exc as sa_exc

            from ledger.application import Ledger
            from ledger_service.cli.config import redacted

            settings = self.settings()
            try:
                self._ledger = Ledger(settings)
            except (sa_exc.OperationalError, sa_exc.InterfaceError) as exc:
                first = str(exc.orig if getattr(exc, "orig", None) else exc).strip().splitlines()[0]
                raise CliError(f"database unavailable: {first} ({redacted(settings.database_url)})",
                               EXIT["failed"]) from None
        return self._ledger

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None


@app.callback(invoke_without_command=True)
def _global(
    ctx: typer.Context,
    database_url: Optional[str] = typer.Option(None, "--database-url", metavar="URL", help=DATABASE_URL_HELP),
    billing_tz: Optional[str] = typer.Option(None, "--billing-tz", metavar="ZONE", help=BILLING_TZ_HELP),
    version: bool = typer.Option(False, "--version", is_eager=True, callback=print_version,
                                 help="Print the version and exit."),
) -> None:
    state = State(database_url=database_url, billing_tz=billing_tz)
    if billing_tz:
        state.settings()  # a bad zone fails here, named, before any work
    ctx.obj = state
    ctx.call_on_close(state.close)
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)


def state_of(ctx: typer.Context) -> State:
    state = ctx.find_object(State)
    assert state is not None
    return state


# -- output helpers ------------------------------------------------------------


def emit_json(value: Any) -> None:
    """JSON on stdout for scripts: dates as YYYY-MM-DD, datetimes as ISO 8601."""
    typer.echo(json.dumps(value, default=_json_default, ensure_ascii=False))


def _json_default(value: Any) -> Any:
    if isinstance(value, date):  # datetime too
        return value.isoformat()
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return str(value)


def print_table(table: Any) -> None:
    """A rich table; not cut to 80 columns when the output is a file or a pipe."""
    if out.is_terminal:
        out.print(table)
    else:
        Console(width=240, highlight=False).print(table)


#: Table headings of the figures (cost is shown in currency units, exact).
HEADINGS = {"prompt_tokens": "prompt", "completion_tokens": "completion", "total_tokens": "total",
            "cost_micros": "cost", "unpriced_charges": "unpriced"}


def show_figure(name: str, value: int) -> str:
    """A figure for a person: cost as a decimal of the currency, counts with separators."""
    from ledger.money import format_micros

    return format_micros(value) if name == "cost_micros" else f"{value:,}"


def note(message: str) -> None:
    """A remark for humans on stderr (stdout stays clean for data), never wrapped."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def interactive() -> bool:
    return sys.stdout.isatty()


@contextmanager
def progress_bar(description: str, total: int | None = None) -> Iterator[Callable[..., None]]:
    """A rich progress bar on stderr, silent when stdout is not a terminal.

    Yields ``update(completed, total=None, description=None)``.
    """
    columns = [SpinnerColumn(), TextColumn("{task.description}")]
    if total is not None:
        columns += [BarColumn(), MofNCompleteColumn()]
    columns.append(TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True, disable=not interactive()) as bar:
        task = bar.add_task(description, total=total)

        def update(completed: int, total: int | None = None, description: str | None = None) -> None:
            kwargs: dict[str, Any] = {"completed": completed}
            if total is not None:
                kwargs["total"] = total
            if description is not None:
                kwargs["description"] = description
            bar.update(task, **kwargs)

        yield update


def parse_day(value: str | None, option: str) -> date | None:
    """A billing date given as YYYY-MM-DD, or a usage error naming the option."""
    from ledger_service.days import parse_day as parse

    if value is None:
        return None
    try:
        return parse(value)
    except ValueError:
        raise CliError(f"{option}: not a date in YYYY-MM-DD form: {value!r}") from None


@contextmanager
def needed(module: str, what: str) -> Iterator[None]:
    """Around the import of a capability's ``module`` at use: if it (or a package of it) is missing, one clear line."""
    try:
        yield
    except ModuleNotFoundError as exc:
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            raise CliError(f"{what} is not available: module {exc.name!r} is not installed",
                           EXIT["failed"]) from None
        raise
