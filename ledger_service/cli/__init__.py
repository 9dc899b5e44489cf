"""The ``ledger`` command line: ``ledger --help`` lists every command.

Commands live in small modules by side (write, read, operations); each
imports its capability (projections, compaction, jobs, bench) when it runs,
so a missing one is a clear error for that command and never breaks the rest.
"""

# ruff: noqa: I001 - ``ledger --help`` lists the commands in the order these modules register them
from ledger_service.cli.app import EXIT, CliError, app
from ledger_service.cli import write as _write  # noqa: F401 - registers commands
from ledger_service.cli import read as _read  # noqa: F401
from ledger_service.cli import prices as _prices  # noqa: F401
from ledger_service.cli import ops as _ops  # noqa: F401
from ledger_service.cli import keys as _keys  # noqa: F401
from ledger_service.cli import budgets as _budgets  # noqa: F401
from ledger_service.cli import webhooks as _webhooks  # noqa: F401
from ledger_service.cli import serve as _serve  # noqa: F401
from ledger_service.cli import health as _health  # noqa: F401


def main() -> None:
    """Console script entry point."""
    app()


__all__ = ["EXIT", "CliError", "app", "main"]
