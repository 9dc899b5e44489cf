"""``python -m ledger_service.cli``: the same as the ``ledger`` script, under the same name."""

from ledger_service.cli import app

app(prog_name="ledger")
