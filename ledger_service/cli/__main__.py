"""``python -m ledger_service.cli``: the same as the ``ledger`` script."""

from ledger_service.cli import main

main()
